"""A run's resume checkpoint: ``checkpoints/last.pt`` (one file, ``facecl.train.checkpoint``)
or, from a ``--shard-classes`` run, ``checkpoints/last/`` (per-rank files and an index,
``facecl.train.sharded_checkpoint``). Whichever kind a run finds, any run reads it: the
step from the index alone, and a rank the rows of its own classes (all of them for a run
that does not shard), resharded when the world size changed.

When both exist (a run killed between writing one kind and removing the other), the one
with the later step wins, the sharded one on a tie.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from facecl.train import sharded_checkpoint as sc
from facecl.train.checkpoint import load_checkpoint
from facecl.train.run import CHECKPOINTS, LAST, LAST_SHARDED


def last_pt(work: Path) -> Path:
    return Path(work) / CHECKPOINTS / LAST


def last_dir(work: Path) -> Path:
    return Path(work) / CHECKPOINTS / LAST_SHARDED


def drop_other(work: Path, kept: str) -> None:
    """After a save of the ``kept`` kind (``"file"`` or ``"sharded"``): remove the other kind,
    left by the run before a resume that changed ``--shard-classes``."""
    if kept == "file":
        shutil.rmtree(last_dir(work), ignore_errors=True)
    else:
        last_pt(work).unlink(missing_ok=True)


def _pt_step(work: Path) -> int | None:
    path = last_pt(work)
    return int(load_checkpoint(path).get("step", 0)) if path.is_file() else None


def which(work: Path) -> str | None:
    """``"sharded"``, ``"file"`` or None: the kind of resume checkpoint ``work`` holds."""
    sharded = sc.read_index(last_dir(work)).step if sc.is_sharded(last_dir(work)) else None
    if sharded is None:
        return "file" if last_pt(work).is_file() else None
    pt = _pt_step(work)
    return "file" if pt is not None and pt > sharded else "sharded"


def last_step(work: Path) -> int:
    """The step of ``work``'s resume checkpoint, 0 when it has none. A sharded one's comes
    from its index alone; ``last.pt`` is memory-mapped, its tensors never read."""
    kind = which(work)
    if kind == "sharded":
        return sc.read_index(last_dir(work)).step
    return int(_pt_step(work) or 0)


def load_last(work: Path, lo: int | None = None, hi: int | None = None) -> dict[str, Any] | None:
    """``work``'s resume checkpoint as one checkpoint payload (``checkpoint.py``'s layout)
    holding the class rows [lo, hi) (default: all), or None when it has none. From a
    sharded checkpoint only the files overlapping those rows are read; from ``last.pt`` the
    caller slices its rows (``shard_checkpoint``) as it knows which tensors hold classes."""
    kind = which(work)
    if kind is None:
        return None
    if kind == "file":
        return load_checkpoint(last_pt(work))
    index = sc.read_index(last_dir(work))
    lo = 0 if lo is None else lo
    hi = index.num_classes if hi is None else hi
    payload = sc.merge_payload(sc.load_shared(index), sc.load_rows(index, lo, hi))
    payload["class_rows"] = [lo, hi]  # which rows it holds: not the whole head when sharded
    return payload
