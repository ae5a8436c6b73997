"""The run store: one folder per run, atomic writes, and ``load_runs`` into pandas.

``runs/<name>-<hash>/`` holds ``config.json``, ``meta.json`` (package version, command
line, device), ``status.json``, the tables ``metrics.parquet``, ``teacher_nodes.parquet``
and ``student_nodes.parquet``, the correlation matrices ``corr.npz`` and
``checkpoints/`` (``latest.pt`` for resuming, ``init.pt``, ``final.pt``, ``step_<k>.pt``).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .errors import UserError

TABLES = ("metrics", "teacher_nodes", "student_nodes")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0o600 files; results should read like any other file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def write_parquet(path: Path, df: pd.DataFrame) -> None:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False, engine="pyarrow")
    atomic_write_bytes(path, buf.getvalue())


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def save_torch(path: Path, obj: Any) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def read_json(path: Path) -> dict[str, Any]:
    """A run folder's JSON file; every one of them (config, meta, status, probe) holds one JSON object."""
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} is missing: the run folder is incomplete; delete it and run again") from None
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as err:
        raise UserError(f"{path} is corrupted ({err}); delete the run folder and run again") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path} is corrupted (it holds a JSON {type(obj).__name__}, not an object); "
                        "delete the run folder and run again")
    return obj


def read_config(folder: Path) -> dict[str, Any]:
    """``config.json`` of a run folder, checked to be a complete, valid experiment config."""
    from .config import ExperimentConfig, build_config

    path = folder / "config.json"
    data = read_json(path)
    missing = [k for k in ExperimentConfig.model_fields if k != "probe" and k not in data]  # run_experiment writes them all
    if missing:
        raise UserError(f"{path} is corrupted (no {', '.join(missing)}); delete the run folder and run again")
    try:
        return build_config(data).model_dump(mode="json")  # as run_experiment wrote it (every field)
    except UserError as err:
        raise UserError(f"{path} is corrupted ({err}); delete the run folder and run again") from None


def load_torch(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise UserError(f"checkpoint {path} is missing; run the experiment again to recreate it") from None
    except Exception as err:  # torch raises many types for a damaged file
        raise UserError(f"checkpoint {path} is corrupted ({type(err).__name__}); delete it and run again") from None


def resolve_run(run: str | Path, root: str | Path = "runs") -> Path:
    """A run folder from a path, a run id, or a unique prefix of a run id under ``root``."""
    p = Path(run)
    if p.is_dir():
        folder = p
    else:
        root = Path(root)
        matches = sorted(q for q in root.glob(f"{run}*") if q.is_dir()) if root.is_dir() else []
        if len(matches) != 1:
            known = ", ".join(q.name for q in list_runs(root)) or "none"
            what = "matches several runs" if matches else "is not a run folder"
            raise UserError(f"{run!r} {what} under {root}/ (runs: {known}); pass a run folder or a unique run id")
        folder = matches[0]
    if not (folder / "config.json").exists():
        raise UserError(f"{folder} has no config.json: it is not a run folder (or it is damaged); delete it and run again")
    return folder


def list_runs(root: str | Path = "runs") -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / "config.json").exists())


def run_status(folder: Path) -> dict[str, Any]:
    path = folder / "status.json"
    return read_json(path) if path.exists() else {"state": "created"}


def _flatten(prefix: str, obj: Any, out: dict[str, Any]) -> None:
    if isinstance(obj, dict) and not (prefix.endswith("milestones")):
        for k, v in obj.items():
            _flatten(f"{prefix}.{k}" if prefix else k, v, out)
    else:
        out[prefix] = json.dumps(obj, sort_keys=True) if isinstance(obj, (list, dict)) else obj


def flat_config(folder: Path) -> dict[str, Any]:
    """The run's full config as ``{"student.multiplier": 10, ...}`` (lists and dicts as JSON text)."""
    out: dict[str, Any] = {}
    _flatten("", read_config(folder), out)
    return out


def load_runs(root: str | Path = "runs", table: str = "metrics", config: bool = True) -> pd.DataFrame:
    """One DataFrame of ``table`` across every finished run under ``root``.

    ``table`` is one of ``metrics``, ``teacher_nodes``, ``student_nodes``; with ``config``
    every row also carries the run's config flattened into columns (``student.multiplier``, ...).
    """
    if table not in TABLES:
        raise UserError(f"unknown table {table!r}; known: {', '.join(TABLES)}")
    frames = []
    for folder in list_runs(root):
        path = folder / f"{table}.parquet"
        if not path.exists():
            continue
        try:
            df = pd.read_parquet(path)
        except Exception as err:
            raise UserError(f"{path} is corrupted ({type(err).__name__}); delete the run folder and run again") from None
        if config:
            for k, v in flat_config(folder).items():
                if k not in df.columns:
                    df[k] = v
        frames.append(df)
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)
