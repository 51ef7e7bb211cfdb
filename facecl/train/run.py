"""The train run artifact's layout: the only home of its file names, and how a run is resolved.

A ``facecl train`` (or ``facecl toy mnist``) output directory::

    RUN/manifest.json
    RUN/model.pt              final checkpoint (weights, no optimiser state)
    RUN/checkpoints/last.pt   full checkpoint (optimiser, step, RNG): what a resume loads
    RUN/checkpoints/last/     the same from a --shard-classes run: per-rank files + index.json
                              (facecl.train.sharded_checkpoint; facecl.train.last picks one)
    RUN/metrics.jsonl         one record per log step
    RUN/training_curve.png
    RUN/classes.json          copy of the pack's class map
    RUN/summary.json

Consumers (embed, export, study, toy) import these names and :func:`resolve_checkpoint`;
none of them spells a file name of this layout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from facecl.artifacts import MANIFEST, read_manifest
from facecl.errors import CheckpointError

STAGE = "train"
MODEL = "model.pt"
CHECKPOINTS = "checkpoints"
LAST = "last.pt"
LAST_REL = f"{CHECKPOINTS}/{LAST}"
LAST_SHARDED = "last"  # a directory: its inside is facecl.train.sharded_checkpoint's
LAST_SHARDED_REL = f"{CHECKPOINTS}/{LAST_SHARDED}"
METRICS = "metrics.jsonl"
CURVE = "training_curve.png"
SUMMARY = "summary.json"
CLASSES = "classes.json"


@dataclass(frozen=True)
class RunCheckpoint:
    """A checkpoint file and, when it belongs to a complete train run, that run's directory."""

    checkpoint: Path
    run: Path | None


def resolve_checkpoint(path: str | os.PathLike) -> RunCheckpoint:
    """A train run directory (its ``model.pt``, else ``checkpoints/last.pt``) or a ``.pt``
    file (inside a run directory, that run is recorded too)."""
    p = Path(path)
    if p.is_dir() or (not p.exists() and Path(str(p) + ".partial").is_dir()):
        read_manifest(p, stage=STAGE)  # a complete train run (else a clear error)
        for cand in (p / MODEL, p / CHECKPOINTS / LAST):
            if cand.is_file():
                return RunCheckpoint(cand.resolve(), p.resolve())
        raise CheckpointError(
            f"train run {path} has neither {MODEL} nor {LAST_REL}",
            "pass a checkpoint file, or re-run 'facecl train'",
        )
    if not p.is_file():
        raise CheckpointError(
            f"model not found: {p}", "pass a train run directory, a .pt checkpoint or .onnx"
        )
    return RunCheckpoint(p.resolve(), run_of(p))


def run_of(checkpoint: Path) -> Path | None:
    """The complete train run a checkpoint file sits in (``RUN/model.pt`` or
    ``RUN/checkpoints/last.pt``), or None."""
    c = checkpoint.resolve()
    for cand, rel in ((c.parent, MODEL), (c.parent.parent, LAST_REL)):
        if (cand / MANIFEST).is_file() and (cand / rel).resolve() == c:
            try:
                read_manifest(cand, stage=STAGE)
            except Exception:  # noqa: BLE001 - not a readable train run: a loose file
                return None
            return cand
    return None
