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

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
import torch

# a resume point at every measurement, so the resume tests exercise it (the default waits 60 s of training)
os.environ["TEACHERSTUDENT_RESUME_EVERY_S"] = "0"

from teacherstudent.config import ExperimentConfig, build_config, parse_value

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


__all__ = ["TINY", "assert_user_error", "cli_sets", "file_bytes", "invoke", "pre_activations", "tiny", "tiny_overrides",
           "tiny_via_load_config", "toml_literal"]


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
