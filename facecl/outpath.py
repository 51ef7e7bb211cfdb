"""The one check of an output path (``-o``) every stage runs before it writes anything.

:func:`check_output` refuses, in one line:

- an ``-o`` that is, contains or is inside one of the stage's inputs (symlinks resolved):
  ``--force`` would delete the input, and an output inside an input tree pollutes the next
  listing of that tree (exit 2, a usage error);
- an ``-o`` under a regular file, a mount point (the finished output is moved into place by
  a rename, which a mount point refuses only after the whole run), a name too long for the
  file system (``OUT.partial`` must fit too), or a directory this process cannot write
  (exit 1, :class:`~facecl.errors.StorageError`).

:func:`check_free_space` refuses up front a run whose output size is predictable and does
not fit the free space of the output's file system.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from facecl.errors import StorageError, UsageError

PARTIAL_SUFFIX = ".partial"
# Headroom over the predicted size (manifests, plots, file system overhead).
FREE_SPACE_MARGIN = 1.05


def _relation(out: Path, inp: Path) -> str | None:
    if out == inp:
        return "is"
    if out in inp.parents:
        return "contains"
    if inp in out.parents:
        return "is inside"
    return None


def check_not_input(out: Path, inputs: Iterable[str | os.PathLike]) -> None:
    """Refuse an output that is, contains, or is inside any input (paths resolved)."""
    for raw in inputs:
        inp = Path(raw).resolve()
        rel = _relation(out, inp)
        if rel is None:
            continue
        what = "an input" if rel == "is" else f"the input {inp}"
        suggestion = inp.parent / f"{inp.name}_out" if rel != "is inside" else inp.parent
        raise UsageError(
            f"-o {out} {rel} {what}: writing it would replace or pollute the input",
            f"choose an -o outside the inputs, e.g. -o {suggestion}"
            if rel != "is inside"
            else f"choose an -o outside {inp}",
        )


def _existing_ancestor(path: Path) -> Path:
    for p in (path, *path.parents):
        if os.path.lexists(p):
            return p
    return Path("/")


def check_writable_location(out: Path) -> None:
    """Refuse an ``-o`` under a regular file, a mount point, a name too long for the file
    system, or a directory this process may not write."""
    anc = _existing_ancestor(out.parent)
    if not anc.is_dir():
        raise StorageError(
            f"cannot create -o {out}: {anc} is a file, not a directory",
            "choose an -o whose parent is a directory",
        )
    if out.is_dir() and os.path.ismount(out):
        raise StorageError(
            f"-o {out} is a mount point: the finished output replaces the directory by a "
            "rename, which a mount point refuses",
            f"write into a directory inside it, e.g. -o {out / out.name}",
        )
    if not os.access(anc, os.W_OK | os.X_OK):
        raise StorageError(
            f"cannot write -o {out}: {anc} is not writable (read-only or no permission)",
            "choose a writable -o path, or fix the permissions",
        )


def check_name_lengths(out: Path) -> None:
    """Refuse path components longer than the file system allows (``OUT.partial`` too)."""
    anc = _existing_ancestor(out.parent)
    try:
        name_max = os.pathconf(anc if anc.is_dir() else anc.parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    for part in (*out.parent.parts, out.name + PARTIAL_SUFFIX):
        if len(os.fsencode(part)) > name_max:
            raise StorageError(
                f"-o {str(out)[:60]}...: the name {part[:20]}... is {len(os.fsencode(part))} "
                f"bytes, more than the {name_max} the file system allows",
                f"choose a shorter -o name (at most {name_max - len(PARTIAL_SUFFIX)} bytes)",
            )


def check_output(out: str | os.PathLike, inputs: Iterable[str | os.PathLike]) -> Path:
    """All checks of an output path before a stage writes; returns it resolved."""
    check_name_lengths(Path(os.path.abspath(out)))
    p = Path(out).resolve()
    if p.name.endswith(PARTIAL_SUFFIX):
        raise UsageError(
            f"-o {p}: a name ending in {PARTIAL_SUFFIX} is where facecl builds an unfinished "
            "output, and is never read as an artifact",
            f"choose another -o name, e.g. -o {p.with_name(p.name[: -len(PARTIAL_SUFFIX)])}",
        )
    check_not_input(p, inputs)
    check_writable_location(p)
    return p


def check_free_space(out: str | os.PathLike, need_bytes: int, what: str) -> None:
    """Refuse up front when ``need_bytes`` (times a margin) does not fit the free space of
    the file system ``out`` will be written to."""
    anc = _existing_ancestor(Path(out).resolve())
    if not anc.is_dir():
        anc = anc.parent
    free = shutil.disk_usage(anc).free
    need = int(need_bytes * FREE_SPACE_MARGIN)
    if need > free:
        raise StorageError(
            f"not enough free space for {what} in {anc}: about {_mb(need)} needed, "
            f"{_mb(free)} free",
            "free some space or choose an -o on another file system",
        )


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"
