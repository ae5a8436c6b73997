"""Writing a run folder: atomic writes (temp file + rename), the crash hook, and ``RunFolder``,
the folder's lifecycle: skip when finished, refuse another config or version, resume,
status, measurement parts (one file per measurement while a run trains, compacted into the
tables at the end). Reading finished runs is in ``reader.py``; the table registry in ``tables.py``.
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

from .config import build_config
from .errors import UserError
from .lock import locked

TEMP_GLOB = ".*.tmp"  # atomic_write_bytes' temporary files
CRASH_ENV = "TEACHERSTUDENT_CRASH_AT_WRITE"  # tests/test_crash.py: SIGKILL inside the N-th atomic write
_writes = 0


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


def load_torch(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise UserError(f"checkpoint {path} is missing; run the experiment again to recreate it") from None
    except Exception as err:  # torch raises many types for a damaged file
        raise UserError(f"checkpoint {path} is corrupted ({type(err).__name__}); delete it and run again") from None


def run_status(folder: Path) -> dict[str, Any]:
    path = folder / "status.json"
    return read_json(path) if path.exists() else {"state": "created"}


def remove_temp_files(folder: Path) -> list[Path]:
    """Remove the temporary files (``.<name>.XXXX.tmp``) that writers which died left under ``folder``."""
    gone = []
    if folder.is_dir():
        for p in folder.rglob(TEMP_GLOB):
            if p.is_file():
                p.unlink(missing_ok=True)
                gone.append(p)
    return gone


PART_BUFFER_BYTES = 64 << 20  # measurement parts kept in memory before they are written anyway (RunFolder.write_part)
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
        self._pending: dict[tuple[str, int], tuple[Any, int]] = {}  # parts not yet on disk, with their bytes (write_part)

    # ---- state ------------------------------------------------------------
    @property
    def status(self) -> dict[str, Any]:
        return run_status(self.path) if self.path.exists() else {"state": "new"}

    @property
    def finished(self) -> bool:
        return self.status.get("state") == "finished"

    def lock(self, when_locked: str = "wait"):
        """Context manager: this process alone trains the folder (``lock.locked``: wait or skip)."""
        return locked(self.path, when_locked)

    def check_config(self) -> None:
        """A folder of this run id must hold this config, compared by canonical form (so a field
        added later with a no-op default never orphans older folders)."""
        path = self.path / "config.json"
        if not path.exists():
            return
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

    def save_teacher(self, state: dict, report: dict) -> None:
        """A trained teacher (``teacher.train``): ``teacher.pt`` (its weights) and ``teacher.json`` (its accuracies)."""
        save_torch(self.path / "teacher.pt", state)
        write_json(self.path / "teacher.json", report)

    def save_resume(self, state: dict) -> None:
        self.flush_parts()  # a resume point at step s finds every part up to s on disk
        save_torch(self.latest, state)

    # ---- measurement parts -------------------------------------------------
    # A part is kept in memory until the next resume point (``save_resume`` flushes them first), the
    # end of the run (``compact_parts`` reads them from memory) or PART_BUFFER_BYTES of them. A run
    # that dies loses only parts past its resume point, which a resumed run removes and redoes anyway,
    # so a run shorter than the resume interval writes no part at all.
    def _part(self, kind: str, step: int) -> Path:
        return self.parts / f"{kind}-{step:012d}{part_suffix(kind)}"

    def write_part(self, kind: str, step: int, obj) -> None:
        """Keep one measurement's part (a table, or a dict of arrays for ``corr``); a copy, since
        the caller may reuse its buffers."""
        if isinstance(obj, pd.DataFrame):
            obj, size = obj.copy(deep=True), int(obj.memory_usage(index=False, deep=False).sum())
        else:
            obj = {k: np.array(v, copy=True) for k, v in obj.items()}
            size = sum(a.nbytes for a in obj.values())
        self._pending[(kind, step)] = (obj, size)
        if sum(n for _, n in self._pending.values()) > PART_BUFFER_BYTES:
            self.flush_parts()

    def flush_parts(self) -> None:
        """Write the parts kept in memory, one file each."""
        for (kind, step), (obj, _) in sorted(self._pending.items()):
            if part_suffix(kind) == ".parquet":
                write_parquet(self._part(kind, step), obj)
            else:
                write_npz(self._part(kind, step), obj, compressed=False)  # parts are read back once: speed over size
            del self._pending[(kind, step)]

    def part_steps(self, kind: str) -> list[int]:
        """The steps of ``kind``'s parts, on disk or kept in memory."""
        held = {step for k, step in self._pending if k == kind}
        if not self.parts.is_dir():
            return sorted(held)
        suffix = part_suffix(kind)
        on_disk = {int(p.name[len(kind) + 1:-len(suffix)]) for p in self.parts.glob(f"{kind}-*{suffix}")}
        return sorted(on_disk | held)

    def part_kinds(self) -> list[str]:
        """The kinds of measurement part in ``parts/`` (``metrics``, ``corr``, an extension's tables) or in memory."""
        held = {k for k, _ in self._pending}
        if not self.parts.is_dir():
            return sorted(held)
        return sorted(held | {p.name.rsplit("-", 1)[0] for p in self.parts.iterdir() if "-" in p.name and not p.name.startswith(".")})

    def read_parts(self, kind: str) -> dict[int, Any]:
        out = {}
        for step in self.part_steps(kind):
            if (kind, step) in self._pending:
                out[step] = self._pending[(kind, step)][0]
                continue
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
        for key in [key for key in self._pending if after is None or key[1] > after]:
            del self._pending[key]
        if not self.parts.is_dir():
            return
        for kind in self.part_kinds():
            for step in self.part_steps(kind):
                if after is None or step > after:
                    self._part(kind, step).unlink(missing_ok=True)
        if after is None:
            for p in self.parts.iterdir():  # temporary files of a writer that died
                p.unlink()
            self.parts.rmdir()
