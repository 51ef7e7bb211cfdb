"""One writer per output: an ``flock``-ed lock file beside it (``OUT.lock``).

The lock file holds the writer's PID. A second process that finds the lock held exits with
a :class:`~facecl.errors.LockedError` naming that PID; a lock file left by a process that is
gone is not locked any more (the kernel drops an ``flock`` when its holder dies), so it is
simply taken over. The lock is released (and its file removed) when the stage commits, finds
its output up to date, fails, or the process exits; only a killed process leaves the file
(which the next run takes over). A lock this process already holds is re-taken (an
in-process retry after an error).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
from pathlib import Path

from facecl.errors import LockedError

LOCK_SUFFIX = ".lock"

_HELD: dict[str, int] = {}  # lock path -> fd, the locks this process holds


def lock_path(out: str | os.PathLike) -> Path:
    p = Path(out)
    return p.with_name(p.name + LOCK_SUFFIX)


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "?"
    except OSError:
        return "?"


def _open_locked(path: Path) -> int:
    """An fd of ``path`` holding its exclusive flock, or raise LockedError."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockedError(
                f"{path.with_name(path.name[: -len(LOCK_SUFFIX)])} is already being written by "
                f"PID {_holder(path)} (lock {path})",
                "wait for it to finish, or remove the lock file if that process is gone",
            ) from None
        except BaseException:
            os.close(fd)
            raise
        # The holder may have removed the file between our open and flock: lock the new one.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def acquire(out: str | os.PathLike) -> Path:
    """Take the lock of output ``out``; returns the lock file's path."""
    path = lock_path(Path(out).resolve())
    key = str(path)
    if key in _HELD:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)  # the output's parent, made by begin() anyway
    fd = _open_locked(path)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _HELD[key] = fd
    return path


def release(out: str | os.PathLike) -> None:
    """Drop the lock of ``out`` (if this process holds it) and remove its file."""
    path = lock_path(Path(out).resolve())
    fd = _HELD.pop(str(path), None)
    if fd is None:
        return
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    os.close(fd)


def held_outputs() -> list[Path]:
    """The outputs this process is writing (those it holds the lock of)."""
    return [Path(k[: -len(LOCK_SUFFIX)]) for k in _HELD]


def holds(out: str | os.PathLike) -> bool:
    return str(lock_path(Path(out).resolve())) in _HELD


@atexit.register
def release_all() -> None:
    """Drop every lock this process holds (at exit, and when a command fails)."""
    for key in list(_HELD):
        release(Path(key[: -len(LOCK_SUFFIX)]))
