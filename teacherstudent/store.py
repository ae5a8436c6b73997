"""The run store: one folder per run, atomic writes, and ``load_runs`` into pandas.

``runs/<name>-<hash>/`` holds ``config.json``, ``meta.json`` (package version, command
line, device, provenance), ``status.json``, the tables ``metrics.parquet``,
``teacher_nodes.parquet`` and ``student_nodes.parquet``, the correlation matrices
``corr.npz`` and ``checkpoints/`` (``latest.pt`` for resuming, ``init.pt``, ``final.pt``,
``step_<k>.pt``). While a run trains, ``parts/`` holds one file per measurement; the
finished run compacts them into the tables. ``RunFolder`` is the folder's lifecycle:
skip when finished, refuse another config or version, resume, status, parts.
"""

from __future__ import annotations

import contextlib
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
# The columns every reader relies on (results.py writes more: step_corr_<t>, probe columns).
TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "metrics": ("run", "member", "step", "epoch", "split", "layer", "metric", "value"),
    "teacher_nodes": ("run", "member", "layer", "teacher_node", "winner", "init_rank_pct", "init_corr", "final_corr",
                      "match_count", "teacher_fanout_norm"),
    "student_nodes": ("run", "member", "layer", "student_node", "step", "best_corr", "best_teacher", "fanout_norm"),
    "theory": ("run", "member", "step", "layer", "pair", "statistic", "value"),
    "theory_nodes": ("run", "member", "step", "layer", "student_node", "beta_self", "beta_strength", "beta_aligned",
                     "best_corr", "best_teacher", "fanout_norm"),
    # probes that train nothing hold their own table instead of the three above (config ``_Probe.TABLES``)
    "flatness": ("run", "parent", "member", "step", "statistic", "index", "value"),
}
TEXT_COLUMNS = ("run", "split", "metric", "pair", "statistic", "parent")
REPAIR_HINT = "run `teacherstudent verify {root} --repair` to recompute it (or delete the run folder and run again)"
TEMP_GLOB = ".*.tmp"  # atomic_write_bytes' temporary files
CRASH_ENV = "TEACHERSTUDENT_CRASH_AT_WRITE"  # tests/test_crash.py: SIGKILL inside the N-th atomic write
_writes = 0


class DamagedRunWarning(UserError, UserWarning):
    """``load_runs`` skipped a damaged run. Also a ``UserError``: where warnings are turned into
    errors (``-W error``) it reads like the ``strict=True`` error."""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _human(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _crash_point(data: bytes, f) -> None:
    """Test hook (``TEACHERSTUDENT_CRASH_AT_WRITE=N``): at the N-th atomic write of this process,
    write half of the data to the temporary file and SIGKILL the process, as a power cut would."""
    global _writes
    at = os.environ.get(CRASH_ENV)
    if not at:
        return
    _writes += 1
    if _writes == int(at):
        import signal

        f.write(data[: len(data) // 2])
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename over ``path``.

    An ``OSError`` (disk full, read-only folder, ...) comes out as an ``OSError`` whose message
    names the file and how many bytes it needed; the temporary file is gone.
    """
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0o600 files; results should read like any other file
        with os.fdopen(fd, "wb") as f:
            _crash_point(data, f)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            with contextlib.suppress(OSError):
                Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and not getattr(err, "_teacherstudent", False):
            new = OSError(err.errno, f"cannot write {path} ({_human(len(data))}): {err.strerror or err}")
            new._teacherstudent = True  # type: ignore[attr-defined]
            raise new from None
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def write_parquet(path: Path, df: pd.DataFrame) -> None:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False, engine="pyarrow")
    atomic_write_bytes(path, buf.getvalue())


def write_npz(path: Path, arrays: dict[str, np.ndarray], compressed: bool = True) -> None:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
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


def folder_tables(folder: Path) -> tuple[str, ...]:
    """The tables a finished run folder holds: a non-training probe's own (``flatness``), or ``TABLES``
    and the optional tables of every extension its config turns on (``results.TABLE_RECORDERS``)."""
    from .config import build_config

    return config_tables(build_config(read_config(folder)))


def config_tables(cfg) -> tuple[str, ...]:
    """The tables a finished run of ``cfg`` holds (see ``folder_tables``)."""
    from .results import TABLE_RECORDERS

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
    (``theory``, ``theory_nodes``: only runs whose config turned it on are read) or a probe's
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
            if run_status(folder).get("state") != "finished" or table not in folder_tables(folder):
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


# ---- the lifecycle of one run folder ------------------------------------------

def remove_temp_files(folder: Path) -> list[Path]:
    """Remove the temporary files (``.<name>.XXXX.tmp``) that writers which died left under ``folder``."""
    gone = []
    if folder.is_dir():
        for p in folder.rglob(TEMP_GLOB):
            if p.is_file():
                p.unlink(missing_ok=True)
                gone.append(p)
    return gone


PART_SUFFIX = {"corr": ".npz"}  # every other kind of part (metrics, an extension's table) is tidy rows: .parquet


def part_suffix(kind: str) -> str:
    return PART_SUFFIX.get(kind, ".parquet")


class RunFolder:
    """One run's folder: ``root/<run id>``. Nothing is written until ``begin``."""

    def __init__(self, root: str | Path, cfg):
        self.cfg = cfg
        self.path = Path(root) / cfg.run_id
        self.latest = self.path / "checkpoints" / "latest.pt"
        self.parts = self.path / "parts"

    # ---- state ------------------------------------------------------------
    @property
    def status(self) -> dict[str, Any]:
        return run_status(self.path) if self.path.exists() else {"state": "new"}

    @property
    def finished(self) -> bool:
        return self.status.get("state") == "finished"

    def lock(self, when_locked: str = "wait"):
        """Context manager: this process alone trains the folder (``lock.locked``: wait or skip)."""
        from .lock import locked

        return locked(self.path, when_locked)

    def check_config(self) -> None:
        """A folder of this run id must hold this config, compared by canonical form (so a field
        added later with a no-op default never orphans older folders)."""
        path = self.path / "config.json"
        if not path.exists():
            return
        from .config import build_config

        stored = read_json(path)
        try:
            same = build_config(stored).canonical() == self.cfg.canonical() and stored.get("name") == self.cfg.name
        except UserError:
            same = False
        if not same:
            raise UserError(f"{self.path} holds a different config; remove the folder or change name")

    def resume_point(self, version: str) -> dict | None:
        """The resume checkpoint's content, if there is one (another version's: an error)."""
        if not self.latest.exists():
            return None
        meta = self.path / "meta.json"
        started_by = read_json(meta).get("version") if meta.exists() else None
        if started_by != version:
            by = f"teacherstudent {started_by}" if started_by else "an unknown version (no meta.json)"
            raise UserError(f"{self.path} was started by {by}, this is {version}: resuming would mix two versions' "
                            "training numerics; finish it with that version or start again with --force")
        st = load_torch(self.latest)
        if not isinstance(st, dict) or "trainer" not in st:
            raise UserError(f"checkpoint {self.latest} does not hold this version's resume state; delete it to start "
                            "the run again")
        return st

    # ---- writing ----------------------------------------------------------
    def begin(self, meta: dict[str, Any], step: int, total_steps: int, force: bool) -> None:
        """Create the folder, write config/meta/status and drop parts past ``step`` (a crash
        between a measurement and its checkpoint leaves one)."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"cannot create the run folder {self.path} ({err.strerror}); pass a writable folder with --out") from None
        if force:  # starting again: the old run's resume point goes before meta.json names this version
            self.latest.unlink(missing_ok=True)
        self.remove_temp_files()
        self.drop_parts(after=step if step > 0 else -1)
        write_json(self.path / "config.json", self.cfg.model_dump(mode="json"))
        write_json(self.path / "meta.json", meta)
        self.mark("running", step, total_steps)

    def remove_temp_files(self) -> list[Path]:
        return remove_temp_files(self.path)

    def mark(self, state: str, step: int, total_steps: int, **extra: Any) -> None:
        write_json(self.path / "status.json", {"state": state, "step": step, "total_steps": total_steps, **extra})

    def save_weights(self, name: str, step: int, weights: list) -> None:
        save_torch(self.path / "checkpoints" / f"{name}.pt", {"step": step, "weights": weights,
                                                               "seeds": list(self.cfg.student.seeds)})

    def save_resume(self, state: dict) -> None:
        save_torch(self.latest, state)

    # ---- measurement parts -------------------------------------------------
    def _part(self, kind: str, step: int) -> Path:
        return self.parts / f"{kind}-{step:012d}{part_suffix(kind)}"

    def write_part(self, kind: str, step: int, obj) -> None:
        if part_suffix(kind) == ".parquet":
            write_parquet(self._part(kind, step), obj)
        else:
            write_npz(self._part(kind, step), obj, compressed=False)  # parts are read back once: speed over size

    def part_steps(self, kind: str) -> list[int]:
        if not self.parts.is_dir():
            return []
        suffix = part_suffix(kind)
        return sorted(int(p.name[len(kind) + 1:-len(suffix)]) for p in self.parts.glob(f"{kind}-*{suffix}"))

    def part_kinds(self) -> list[str]:
        """The kinds of measurement part in ``parts/`` (``metrics``, ``corr``, an extension's tables)."""
        if not self.parts.is_dir():
            return []
        return sorted({p.name.rsplit("-", 1)[0] for p in self.parts.iterdir() if "-" in p.name and not p.name.startswith(".")})

    def read_parts(self, kind: str) -> dict[int, Any]:
        out = {}
        for step in self.part_steps(kind):
            path = self._part(kind, step)
            try:
                if part_suffix(kind) == ".parquet":
                    out[step] = pd.read_parquet(path)
                else:
                    with open(path, "rb") as fh, np.load(fh) as z:
                        out[step] = {k: z[k] for k in z.files}
            except Exception as err:
                raise UserError(f"{path} is corrupted ({type(err).__name__}); delete {self.latest} and run again "
                                "to redo the run") from None
        return out

    def compact_parts(self, kind: str) -> None:
        """The tidy parts of ``kind``, in step order, as one ``<kind>.parquet`` (the table's final form)."""
        parts = self.read_parts(kind)
        write_parquet(self.path / f"{kind}.parquet", pd.concat([parts[s] for s in sorted(parts)], ignore_index=True))

    def drop_parts(self, after: int | None = None) -> None:
        """Remove measurement parts (all, or those of steps after ``after``)."""
        if not self.parts.is_dir():
            return
        for kind in self.part_kinds():
            for step in self.part_steps(kind):
                if after is None or step > after:
                    self._part(kind, step).unlink()
        if after is None:
            for p in self.parts.iterdir():  # temporary files of a writer that died
                p.unlink()
            self.parts.rmdir()
