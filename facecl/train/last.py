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
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from facecl.errors import CheckpointError
from facecl.train import sharded_checkpoint as sc
from facecl.train.checkpoint import load_checkpoint
from facecl.train.run import CHECKPOINTS, LAST, LAST_SHARDED

if TYPE_CHECKING:
    from facecl.train.state import TrainState


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


def _check_classes(where: Path, held: Any, num_classes: int | None) -> None:
    """A resume checkpoint of another class count than the run's pack (``classes.json``)
    cannot fit its head: one line with both counts, before any row is read."""
    if num_classes is not None and held is not None and int(held) != int(num_classes):
        raise CheckpointError(
            f"{where} holds {int(held)} classes, the pack has {int(num_classes)}",
            "resume with the pack the run was trained on, or start afresh with --force",
        )


def load_last(
    work: Path, lo: int | None = None, hi: int | None = None, *, num_classes: int | None = None
) -> dict[str, Any] | None:
    """``work``'s resume checkpoint as one checkpoint payload (``checkpoint.py``'s layout)
    holding the class rows [lo, hi) (default: all), or None when it has none. From a
    sharded checkpoint only the files overlapping those rows are read; from ``last.pt`` the
    caller slices its rows (``slice_rows``) as it knows which tensors hold classes.
    ``num_classes`` (the run's): a checkpoint of another count is a ``CheckpointError``."""
    kind = which(work)
    if kind is None:
        return None
    if kind == "file":
        payload = load_checkpoint(last_pt(work))
        _check_classes(last_pt(work), payload.get("num_classes"), num_classes)
        return payload
    index = sc.read_index(last_dir(work))
    _check_classes(index.path / sc.INDEX, index.num_classes, num_classes)
    lo = 0 if lo is None else lo
    hi = index.num_classes if hi is None else hi
    payload = sc.merge_payload(sc.load_shared(index), sc.load_rows(index, lo, hi))
    payload["class_rows"] = [lo, hi]  # which rows it holds: not the whole head when sharded
    return payload


def class_ranges(num_classes: int, world: int) -> list[tuple[int, int]]:
    """Every rank's [lo, hi) of a ``--shard-classes`` run (``class_range``, the one split)."""
    from facecl.losses.distributed import class_range

    return [(r.lo, r.hi) for r in (class_range(num_classes, i, world) for i in range(world))]


def class_row_paths(state: TrainState, payload: Mapping[str, Any]) -> list[sc.KeyPath]:
    """Where ``payload`` (a checkpoint payload of ``state``'s run: a rank's own, or a
    one-process ``last.pt``'s with every class) holds class rows: the head's and the center
    loss's ``class_rows`` (``head_state`` / ``loss_state`` keys) and the SGD momentum of the
    head's class parameters (``optimizer`` state, by ``state.optimizer``'s parameter index),
    those of them that it holds."""
    head, center, optimizer = state.net.head, state.center, state.optimizer
    head_rows = tuple(getattr(head, "class_rows", ()))
    paths: list[sc.KeyPath] = [("head_state", k) for k in head_rows if k in payload["head_state"]]
    paths += [
        ("loss_state", k) for k in getattr(center, "class_rows", ()) if k in payload["loss_state"]
    ]
    flat = [p for group in optimizer.param_groups for p in group["params"]]
    index = {id(p): i for i, p in enumerate(flat)}
    saved = (payload.get("optimizer") or {}).get("state", {})
    for name, p in head.named_parameters():
        buf = saved.get(index[id(p)], {}).get("momentum_buffer")
        if name in head_rows and isinstance(buf, torch.Tensor):
            paths.append(("optimizer", "state", index[id(p)], "momentum_buffer"))
    return paths


def slice_rows(payload: Mapping[str, Any], state: TrainState) -> dict[str, Any]:
    """A one-process checkpoint payload (every class) with the head, center and momentum
    rows of ``state.shard`` only, for ``load_state_dict`` into a sharded run's rank."""
    if state.shard is None:
        raise ValueError("slice_rows needs a class-sharded state")
    shared, rows = sc.split_payload(payload, class_row_paths(state, payload))
    return sc.merge_payload(shared, sc.split_rows(rows, state.shard.lo, state.shard.hi))


def save_sharded(
    work: Path, state: TrainState, payload: dict[str, Any], rank: int, world: int
) -> None:
    """Every rank of a ``--shard-classes`` run at once: ``payload`` (this rank's
    ``checkpoint_payload``) as ``checkpoints/last/``, each rank's class rows in its own file
    and the rest (backbone, optimiser, RNG, config) from rank 0. Then ``last.pt`` is gone."""
    num_classes = int(state.num_classes)
    ranges = class_ranges(num_classes, world)
    shared, rows = sc.split_payload(payload, class_row_paths(state, payload))
    meta = {"config": payload["config"], "num_classes": num_classes, "arch": payload["arch"]}
    sc.save_rank(
        last_dir(work),
        step=int(payload["step"]),
        rank=rank,
        ranges=ranges,
        rows=rows,
        shared=shared if rank == 0 else None,
        meta=meta,
    )
    if rank == 0:
        drop_other(work, "sharded")
