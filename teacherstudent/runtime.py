"""Where and how a run executes: its provenance (for ``meta.json``) and its CPU thread count.

Light to import (torch and numpy are imported inside the functions), so the CLI can use it
before it decides to load anything heavy.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        res = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):  # git missing, no permission, hung
        return None
    return res.stdout.strip() if res.returncode == 0 else None


GIT_CACHE_S = 10.0  # git_commit's answer is reused this long (a study writes every run's meta.json in a burst)
_git_cache: dict[Path, tuple[float, tuple[str | None, bool | None]]] = {}


def git_commit(package_dir: Path = PACKAGE_DIR) -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the source checkout the package runs from; ``(None, None)`` when the
    package is not the checkout's own folder (an installed wheel, even inside some other
    repository), git is missing or anything else fails. Never raises. Asked again within
    ``GIT_CACHE_S`` seconds for the same folder, it answers as before without running git (three
    git processes per run were a tenth of a small study's time).
    """
    now = time.monotonic()
    hit = _git_cache.get(package_dir)
    if hit is not None and now - hit[0] < GIT_CACHE_S:
        return hit[1]
    answer = _git_commit(package_dir)
    _git_cache[package_dir] = (now, answer)
    return answer


def _git_commit(package_dir: Path) -> tuple[str | None, bool | None]:
    try:
        checkout = package_dir.resolve().parent
        top = _git(["rev-parse", "--show-toplevel"], checkout)
        if top is None or Path(top).resolve() != checkout:
            return None, None
        commit = _git(["rev-parse", "HEAD"], checkout)
        if not commit:
            return None, None
        status = _git(["status", "--porcelain", "--untracked-files=no"], checkout)
        return commit, (None if status is None else bool(status))
    except Exception:  # noqa: BLE001  (provenance must never fail a run)
        return None, None


def provenance() -> dict[str, Any]:
    """What produced a run: date (UTC, ISO 8601), git commit of the checkout (None outside one),
    Python, torch and numpy versions, torch's CPU thread count, host name and platform."""
    import numpy
    import torch

    commit, dirty = git_commit()
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": commit,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "threads": torch.get_num_threads(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
    }


def machine_load() -> tuple[float | None, int]:
    """``(1-minute load average, logical CPUs)``; the load is None where the OS has none (Windows)."""
    cpus = os.cpu_count() or 1
    try:
        return os.getloadavg()[0], cpus
    except (AttributeError, OSError):
        return None, cpus


def choose_threads(requested: int | None = None) -> tuple[int, str]:
    """The CPU thread count for torch and a short reason to print.

    ``requested`` (``--threads``) wins. Otherwise torch's default, capped at the cores the
    machine has free (``cpu_count - floor(load)``, at least 1): on an oversubscribed machine
    torch's default made a default run about 20x slower than a single thread.
    """
    if requested is not None:
        if requested < 1:
            from .errors import UserError

            raise UserError(f"threads must be at least 1, got {requested}")
        return requested, "--threads"
    import torch

    default = torch.get_num_threads()
    load, cpus = machine_load()
    if load is None:
        return default, "torch default"
    available = max(1, cpus - int(load))  # whole cores in use: a load of 0.8 (a finished job decaying) takes none
    if available < default:
        return available, f"machine busy: load {load:.1f} on {cpus} cores"
    return default, "torch default"
