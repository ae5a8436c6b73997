"""Reading run folders: checked readers of each file (one-line errors naming the file and
what to do), finding runs (``resolve_run``, ``list_runs``), which tables a folder holds, and
``load_runs``: one DataFrame of a table across every finished run. Writing is in ``folder.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .config import ExperimentConfig, build_config
from .errors import UserError
from .folder import read_json, run_status
from .results import TABLE_RECORDERS
from .tables import ON_DEMAND_TABLES, TABLE_COLUMNS, TABLES, TEXT_COLUMNS

REPAIR_HINT = "run `teacherstudent verify {root} --repair` to recompute it (or delete the run folder and run again)"


class DamagedRunWarning(UserError, UserWarning):
    """``load_runs`` skipped a damaged run. Also a ``UserError``: where warnings are turned into
    errors (``-W error``) it reads like the ``strict=True`` error."""


def read_config(folder: Path) -> dict[str, Any]:
    """``config.json`` of a run folder, checked to be a complete, valid experiment config."""
    path = folder / "config.json"
    data = read_json(path)
    missing = [k for k in ExperimentConfig.model_fields if k != "probe" and k not in data]  # simulate.run writes them all
    if missing:
        raise UserError(f"{path} is corrupted (no {', '.join(missing)}); delete the run folder and run again")
    try:
        return build_config(data).model_dump(mode="json")  # as simulate.run wrote it (every field)
    except UserError as err:
        raise UserError(f"{path} is corrupted ({err}); delete the run folder and run again") from None


def read_table_file(path: Path, table: str | None = None, hint: str | None = None) -> pd.DataFrame:
    """A parquet table of a run folder, checked: present, readable, holding ``table``'s columns
    (``TABLE_COLUMNS``). Anything else is a one-line ``UserError`` naming the file and what to do."""
    table = table or path.stem
    hint = REPAIR_HINT.format(root=path.parent.parent) if hint is None else hint
    if not path.exists():
        raise UserError(f"{path} is missing; {hint}")
    try:
        df = pd.read_parquet(path)
    except Exception as err:  # pyarrow raises many types for a damaged file
        raise UserError(f"{path} is corrupted (not a readable parquet file: {type(err).__name__}); {hint}") from None
    missing = [c for c in TABLE_COLUMNS.get(table, ()) if c not in df.columns]
    if missing:
        raise UserError(f"{path} is corrupted (wrong schema: no column {', '.join(missing)}); {hint}")
    text = [c for c in TABLE_COLUMNS.get(table, ()) if c in TEXT_COLUMNS]
    wrong = [c for c in TABLE_COLUMNS.get(table, ()) if c not in text and not pd.api.types.is_numeric_dtype(df[c])]
    if wrong:
        raise UserError(f"{path} is corrupted (wrong schema: column {', '.join(wrong)} is not numeric); {hint}")
    if table in TABLE_COLUMNS and df.empty:
        raise UserError(f"{path} is corrupted (no rows); {hint}")
    return df


def read_corr(path: Path, hint: str | None = None) -> dict[str, np.ndarray]:
    """``corr.npz`` of a finished run, checked: readable, ``members`` plus ``step_<s>_layer_<l>`` arrays
    of shape ``[K, m, n]``."""
    hint = REPAIR_HINT.format(root=path.parent.parent) if hint is None else hint
    if not path.exists():
        raise UserError(f"{path} is missing; {hint}")
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:  # our handle: closed even when np.load fails
            arrays = {k: z[k] for k in z.files}  # reading every array checks every CRC
    except Exception as err:
        raise UserError(f"{path} is corrupted (not a readable .npz file: {type(err).__name__}); {hint}") from None
    steps = [k for k in arrays if k.startswith("step_")]
    bad = [k for k in steps if len(k.split("_")) != 4 or not k.split("_")[1].isdigit() or arrays[k].ndim != 3]
    if "members" not in arrays or not steps or bad:
        raise UserError(f"{path} is corrupted (wrong schema: expected members and step_<s>_layer_<l> arrays [K, m, n]); {hint}")
    K = len(arrays["members"])
    if any(arrays[k].shape[0] != K for k in steps):
        raise UserError(f"{path} is corrupted (wrong schema: arrays for another number of members than {K}); {hint}")
    return arrays


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


def folder_tables(folder: Path) -> tuple[str, ...]:
    """The tables a finished run folder holds: a non-training probe's own (``flatness``), or ``TABLES``
    and the optional tables of every extension its config turns on (``results.TABLE_RECORDERS``)."""
    return config_tables(build_config(read_config(folder)))


def config_tables(cfg) -> tuple[str, ...]:
    """The tables a finished run of ``cfg`` holds (see ``folder_tables``)."""
    if cfg.probe is not None and cfg.probe.TABLES:
        return cfg.probe.TABLES
    return TABLES + tuple(t for rec in TABLE_RECORDERS.values() if rec.wanted(cfg) for t in rec.tables)


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


def load_runs(root: str | Path = "runs", table: str = "metrics", config: bool = True,
              strict: bool = False) -> pd.DataFrame:
    """One DataFrame of ``table`` across every finished run under ``root``.

    ``table`` is one of ``metrics``, ``teacher_nodes``, ``student_nodes``, an optional table
    (``theory``, ``theory_nodes``: only runs whose config turned it on are read), a table a command
    added (``theory_ode``: the runs that hold it) or a probe's
    own table (``flatness``: only the folders that hold it are read); with ``config``
    every row also carries the run's config flattened into columns (``student.multiplier``, ...).
    A damaged run (its table truncated, garbage, of the wrong schema, or its config.json or
    status.json damaged) is skipped with a ``DamagedRunWarning`` (a ``UserWarning``) naming the file; with ``strict``
    it is a ``UserError`` instead. Unfinished runs are left out.
    """
    import warnings

    if table not in TABLE_COLUMNS:
        raise UserError(f"unknown table {table!r}; known: {', '.join(TABLE_COLUMNS)}")
    frames = []
    for folder in list_runs(root):
        path = folder / f"{table}.parquet"
        try:
            if run_status(folder).get("state") != "finished":
                continue
            if table in ON_DEMAND_TABLES and not path.exists():  # a command's table (theory_ode): where written
                continue
            if table not in ON_DEMAND_TABLES and table not in folder_tables(folder):
                continue
            df = read_table_file(path, table, REPAIR_HINT.format(root=Path(root)))
            if config:
                for k, v in flat_config(folder).items():
                    if k not in df.columns:
                        df[k] = v
        except UserError as err:
            if strict:
                raise
            warnings.warn(DamagedRunWarning(f"load_runs skips {folder.name}: {err}"), stacklevel=2)
            continue
        frames.append(df)
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)
