"""Shared helpers for the test suite: shrunk configs and scratch run folders.

``tiny(...)`` returns the real default config shrunk to something that trains in well under
a second on one CPU core (two teacher layers [4, 6], 10 outputs, multiplier 3, two student
seeds, 512 training / 256 evaluation samples, 2 epochs of batch 64 = 16 steps). Extra
overrides use the CLI's ``--set`` syntax (``"section.key=<TOML literal>"``) or keyword
arguments with ``__`` for the dot (``training__dtype="float64"``); later ones win.

    cfg = tiny()                                      # the shrunk default
    cfg = tiny("student.multiplier=5", training__dtype="float64")
    args = [a for s in tiny_overrides("training.epochs=1") for a in ("--set", s)]  # for the CLI

CLI helpers: ``invoke(*args)`` runs the CLI in-process, ``cli_sets(...)`` is ``tiny`` as
``--set`` arguments, ``assert_user_error(result)`` checks exit 2 with one ``error:`` line.

Fixtures: ``tiny_config`` (the ``tiny`` factory itself), ``tmp_runs`` (an empty runs root
under ``tmp_path``) and ``finished_run`` (one finished tiny run per session, read-only by
convention: copy it with ``shutil.copytree`` before damaging it).
"""

from __future__ import annotations

import gzip
import json
import math
import os
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

# a resume point at every measurement, so the resume tests exercise it (the default waits 60 s of training)
os.environ["TEACHERSTUDENT_RESUME_EVERY_S"] = "0"

from teacherstudent.config import ExperimentConfig, build_config, parse_value
from teacherstudent.datasets import CIFAR_FILES, IDX_FILES

# Dotted field -> value: the shrunk default every fast test starts from.
TINY: dict[str, Any] = {
    "teacher.widths": [4, 6],
    "teacher.outputs": 10,
    "teacher.reference_samples": 2000,
    "student.multiplier": 3,
    "student.seeds": [0, 1],
    "inputs.train_samples": 512,
    "inputs.eval_samples": 256,
    "training.epochs": 2,
}


def toml_literal(value: Any) -> str:
    """A Python value as the TOML literal ``--set`` expects (ints, floats, bools, strings, lists, dicts)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return ("-" if value < 0 else "") + ("nan" if math.isnan(value) else "inf")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML literal for {value!r}")


def _merged(overrides: tuple[str, ...], fields: dict[str, Any]) -> dict[str, Any]:
    merged = dict(TINY)
    for item in overrides:
        key, sep, value = item.partition("=")
        assert sep, f"override {item!r} is not section.key=value"
        merged[key.strip()] = parse_value(value.strip())
    for key, value in fields.items():
        merged[key.replace("__", ".")] = value
    return merged


def tiny_overrides(*overrides: str, **fields: Any) -> list[str]:
    """The shrunk default plus ``overrides`` as ``section.key=value`` strings (for ``--set``/``load_config``)."""
    return [f"{k}={toml_literal(v)}" for k, v in _merged(overrides, fields).items()]


def tiny(*overrides: str, **fields: Any) -> ExperimentConfig:
    """The shrunk default config plus ``overrides`` (``"a.b=1"`` strings, or ``a__b=1`` keywords)."""
    data: dict[str, Any] = {}
    for key, value in _merged(overrides, fields).items():
        node = data
        *sections, last = key.split(".")
        for s in sections:
            node = node.setdefault(s, {})
        node[last] = value
    return build_config(data)


def tiny_via_load_config(*overrides: str, **fields: Any) -> ExperimentConfig:
    """Same as ``tiny`` but through ``load_config``'s override parser (as the CLI does)."""
    from teacherstudent.config import load_config

    return load_config(None, tiny_overrides(*overrides, **fields))


@pytest.fixture
def tiny_config():
    """The ``tiny`` factory: ``tiny_config()`` is the shrunk default, ``tiny_config("student.multiplier=5")`` a variant."""
    return tiny


@pytest.fixture
def tmp_runs(tmp_path: Path) -> Path:
    """An empty, not yet existing runs root (``simulate.run`` creates it)."""
    return tmp_path / "runs"


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> Path:
    """One finished run of ``tiny()`` on CPU, shared by the session: do not modify it."""
    from teacherstudent.simulate import RunOptions, run

    root = tmp_path_factory.mktemp("shared_runs")
    return run(tiny(), RunOptions(root, "cpu", command=["pytest"]))


def cli_sets(*overrides: str, **fields: Any) -> list[str]:
    """``tiny`` plus ``overrides`` as CLI arguments: ``["--set", "a.b=1", "--set", ...]``."""
    return [a for s in tiny_overrides(*overrides, **fields) for a in ("--set", s)]


def invoke(*args: Any):
    """Run the CLI in-process with ``args`` (turned into strings); returns typer's ``Result``."""
    from typer.testing import CliRunner

    from teacherstudent_cli.main import app

    return CliRunner().invoke(app, [str(a) for a in args])


def assert_user_error(result) -> None:
    """Exit 2, one 'error:' line on stderr, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr


def pre_activations(teacher, x):
    """``z_l = h_{l-1} W_l^T + b_l`` of every hidden layer, recomputed by hand from the teacher's weights."""
    zs, h = [], x
    for w, b in zip(teacher.weights[:-1], teacher.biases[:-1]):
        z = h @ w.T + b
        zs.append(z)
        h = teacher.act(z)
    return zs


def file_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> bytes): compare before/after to prove nothing changed."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def reference_optimizer(params, t) -> torch.optim.Optimizer:
    """``torch.optim``'s own optimiser for one ``nn.Module`` student under ``TrainingConfig`` ``t``:
    the reference the stacked ensemble's optimiser (train.OPTIMIZERS) must match member by member."""
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, nesterov=t.nesterov, weight_decay=t.weight_decay)
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, betas=t.betas, weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.lr, betas=t.betas, weight_decay=t.weight_decay)
    if t.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=t.lr, alpha=t.alpha, momentum=t.momentum, centered=t.centered,
                                   weight_decay=t.weight_decay)
    assert t.optimizer == "adagrad", f"no reference for optimizer {t.optimizer!r}: add it here"
    return torch.optim.Adagrad(params, lr=t.lr, lr_decay=t.lr_decay, weight_decay=t.weight_decay)


# ---- local image data sets in their distributed formats (tests/test_datasets.py) --------------

def idx_bytes(a: np.ndarray) -> bytes:
    """IDX by hand: 0, 0, type 0x08, ndim, big-endian dims, then the bytes."""
    return struct.pack(">BBBB", 0, 0, 8, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.astype(np.uint8).tobytes()


def make_idx_set(folder: Path, n_train: int = 40, n_test: int = 20, gz: bool = True, seed: int = 0) -> dict:
    """MNIST-format files (28x28) in ``folder``; returns the arrays written (file name -> array)."""
    rng = np.random.default_rng(seed)
    x_train, x_test = (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) for n in (n_train, n_test))
    y_train, y_test = (rng.integers(0, 10, n).astype(np.uint8) for n in (n_train, n_test))
    arrays = dict(zip(IDX_FILES, (x_train, y_train, x_test, y_test)))
    folder.mkdir(parents=True, exist_ok=True)
    for name, a in arrays.items():
        data = idx_bytes(a)
        (folder / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return arrays


def make_cifar(folder: Path, per_batch: int = 8, n_test: int = 12, seed: int = 0) -> dict:
    """CIFAR-10 python batches (dicts of ``data`` uint8 [n, 3072] and a list of ``labels``) in ``folder``;
    returns file name -> (data, labels)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in CIFAR_FILES:
        n = n_test if name == "test_batch" else per_batch
        data, labels = rng.integers(0, 256, (n, 3072), dtype=np.uint8), [int(v) for v in rng.integers(0, 10, n)]
        batch = {"batch_label": name, "labels": labels, "data": data, "filenames": [f"img{i}.png" for i in range(n)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        out[name] = (data, labels)
    return out


__all__ = ["TINY", "assert_user_error", "cli_sets", "file_bytes", "idx_bytes", "invoke", "make_cifar", "make_idx_set",
           "pre_activations", "tiny", "tiny_overrides", "tiny_via_load_config", "toml_literal"]
