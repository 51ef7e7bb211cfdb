"""Operating-system errors as one line: what failed, on which path, and how to fix it.

:func:`storage_error` maps an ``OSError`` (or torch's ``RuntimeError`` from a failed
``torch.save`` stream, or h5py's ``OSError`` text with an ``errno = N`` inside) to a
:class:`~facecl.errors.StorageError` (exit 1). ``cli.py`` applies it once, for every command;
stages need not catch anything: a failed write never reaches the commit, so the output is
left as ``OUT.partial/`` (without a manifest, resumable), never as a complete-looking artifact.
"""

from __future__ import annotations

import errno
import re

from facecl.errors import StorageError

# errno -> (what happened, how to fix it)
_KNOWN: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("no space left on the device", "free some space or choose another -o"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or choose another -o"),
    errno.EROFS: ("read-only file system", "choose a writable -o path"),
    errno.EACCES: ("permission denied", "fix the permissions or choose another path"),
    errno.EPERM: ("operation not permitted", "fix the permissions or choose another path"),
    errno.ENAMETOOLONG: ("file name too long", "choose a shorter -o name"),
    errno.ENOTDIR: ("a path component is a file, not a directory", "check the path"),
    errno.EISDIR: ("is a directory, expected a file", "check the path"),
    errno.EBUSY: ("device or resource busy (a mount point?)", "write into a directory inside it"),
    errno.EXDEV: ("cannot move across file systems", "keep -o on one file system"),
    errno.ENOENT: ("no such file or directory", "check the path"),
    errno.EIO: ("input/output error", "check the disk"),
    errno.EMFILE: ("too many open files", "raise the limit (ulimit -n) or use fewer workers"),
}
_TORCH_WRITE = ("PytorchStreamWriter failed", "file write failed", "unexpected pos")
_H5_ERRNO = re.compile(r"errno = (\d+)")
_H5_NAME = re.compile(r"name = '([^']*)'")


def _errno_of(e: BaseException) -> int | None:
    code = getattr(e, "errno", None)
    if isinstance(code, int):
        return code
    m = _H5_ERRNO.search(str(e))
    return int(m.group(1)) if m else None


def is_storage_failure(e: BaseException) -> bool:
    """An OSError, or torch's RuntimeError for a stream write that failed (a full disk)."""
    if isinstance(e, OSError):
        return True
    return isinstance(e, RuntimeError) and any(t in str(e) for t in _TORCH_WRITE)


def storage_error(e: BaseException, path: str | None = None) -> StorageError:
    """The one-line error for an OS-level failure ``e``. Without a file name in ``e`` (a
    failed ``write`` has none) the output being written is named."""
    code = _errno_of(e)
    if code is None and isinstance(e, RuntimeError):
        code = errno.ENOSPC  # torch hides the errno; a short write is a full disk in practice
        what, fix = "writing failed (the disk is probably full)", _KNOWN[errno.ENOSPC][1]
    elif code in _KNOWN:
        what, fix = _KNOWN[code]
    else:
        first = (getattr(e, "strerror", None) or str(e) or type(e).__name__).splitlines()[0]
        what, fix = first[:160], "check the path and the file system"
    where = path or getattr(e, "filename", None)
    if where is None and (m := _H5_NAME.search(str(e))):
        where = m.group(1)
    if where is None:
        from facecl.lock import held_outputs

        outs = held_outputs()
        where = f"writing {outs[0]}.partial" if outs else None
    other = getattr(e, "filename2", None)
    at = f" ({where}{' -> ' + str(other) if other else ''})" if where else ""
    name = errno.errorcode.get(code, "") if code is not None else ""
    return StorageError(f"{what}{' [' + name + ']' if name else ''}{at}", fix)
