"""One process at a time per run folder: an OS-level lock on ``<run folder>/.lock``.

``fcntl.flock`` on an open file: the kernel releases it when the file is closed or its
process dies (kill -9 included), so a lock never outlives a crashed trainer (the file a
killed holder leaves is simply locked by the next one, who removes it when done). The file holds the pid of the holder, for the message a second process
prints. A second process asking for a locked run either waits for it (``"wait"``, the
default) or skips it (``"skip"``: ``RunLocked``), and says which.

Where ``fcntl`` does not exist (Windows) the lock is a no-op.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import UserError

try:
    import fcntl
except ImportError:  # pragma: no cover  (Windows)
    fcntl = None

WHEN_LOCKED = ("wait", "skip")


class RunLocked(UserError):
    """The run folder is being trained by another process and the caller asked to skip it."""


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def holder(folder: Path) -> str:
    """Who holds the lock, as written in the lock file (``pid N on HOST``), or ``another process``."""
    try:
        text = (Path(folder) / ".lock").read_text().strip()
    except OSError:
        text = ""
    return text or "another process"


def is_locked(folder: Path) -> bool:
    """Whether some process holds the folder's lock now (never blocks, creates nothing)."""
    if fcntl is None:  # pragma: no cover
        return False
    try:
        fd = os.open(Path(folder) / ".lock", os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def _open_locked(folder: Path, when_locked: str, say: Callable[[str], None] | None) -> tuple[int, bool]:
    """An fd holding the lock of ``folder/.lock`` (the file that is there now, not an unlinked one)
    and whether this call created the folder."""
    path, said = folder / ".lock", False
    while True:
        created = not folder.exists()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except FileNotFoundError:  # the folder went between mkdir and open (its creator removed it empty)
            continue
        except OSError as err:
            raise UserError(f"cannot create the run folder {folder} ({err.strerror}); pass a writable folder with --out") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            who = holder(folder)
            if when_locked == "skip":
                os.close(fd)
                raise RunLocked(f"run {folder.name} is being trained by {who}: skipped") from None
            if not said:
                (say or _say)(f"run {folder.name} is being trained by {who}: waiting for it")
                said = True
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd, created
        os.close(fd)  # the holder removed that file when it let go: lock the current one


@contextlib.contextmanager
def locked(folder: Path, when_locked: str = "wait", say: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold ``folder``'s lock for the body (the folder is created if needed).

    When another process holds it: ``"wait"`` says so (``say``, default stderr) and blocks
    until it is released; ``"skip"`` raises ``RunLocked`` naming the run. On release the
    lock file is removed (a waiter then locks a fresh one), and so is the folder if this
    call created it and nothing was written into it: a refused run leaves nothing behind.
    """
    if when_locked not in WHEN_LOCKED:
        raise UserError(f"unknown when-locked {when_locked!r}; known: {', '.join(WHEN_LOCKED)}")
    if fcntl is None:  # pragma: no cover
        yield
        return
    folder = Path(folder)
    fd, created = _open_locked(folder, when_locked, say)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {os.uname().nodename}\n".encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(folder / ".lock")  # while still holding it: nobody can lock this file after us
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty
        os.close(fd)  # closing the file releases the lock
