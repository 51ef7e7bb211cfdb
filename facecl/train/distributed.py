"""Process groups for DDP: ``--ddp N`` spawns N local processes; ``torchrun`` sets the env.

Backend: gloo on CPU, nccl on CUDA. Every rank builds the same model from the same seed and
takes its slice of the same global batch (``loop.StepBatchSampler``); the center losses
all-gather the batch before their update (``facecl.losses.distributed``), so the centers
follow one process with the global batch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from facecl import errors
from facecl.errors import FaceclError, UsageError


@dataclass(frozen=True)
class RankInfo:
    rank: int
    world: int
    local_rank: int


def torchrun_env() -> RankInfo | None:
    """The rank set by ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``), else None."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    world = int(os.environ["WORLD_SIZE"])
    if world < 2:
        return None
    rank = int(os.environ["RANK"])
    return RankInfo(rank, world, int(os.environ.get("LOCAL_RANK", rank)))


def rank_device(device: torch.device, local_rank: int) -> torch.device:
    """One GPU per local rank on CUDA; CPU stays CPU."""
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return device


def init_group(device: torch.device, rank: int, world: int, init_method: str | None = None) -> None:
    backend = "nccl" if device.type == "cuda" else "gloo"
    if init_method is None:
        dist.init_process_group(backend)  # env:// (torchrun)
    else:
        dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def threads_per_rank(world: int) -> int:
    """Split this machine's cores between the local processes."""
    return max(1, (os.cpu_count() or 1) // world)


def check_ddp(ddp: int, batch_size: int, device: torch.device) -> None:
    """``--ddp N`` checked before any process is spawned or the run directory is made:
    N >= 0, the global batch splits evenly over N ranks, and on CUDA one GPU per rank."""
    if ddp < 0:
        raise UsageError(f"--ddp must be >= 0, got {ddp}", "e.g. --ddp 2 (0 or 1: one process)")
    if ddp <= 1:
        return
    if batch_size % ddp:
        lower = max(ddp, batch_size - batch_size % ddp)
        raise UsageError(
            f"--batch-size {batch_size} does not split over --ddp {ddp} processes",
            f"use a multiple of {ddp}, e.g. --batch-size {lower}",
        )
    if device.type == "cuda":
        visible = torch.cuda.device_count()
        if ddp > visible:
            raise UsageError(
                f"--ddp {ddp} needs {ddp} GPUs, {visible} visible",
                f"use --ddp {visible} or fewer (CUDA_VISIBLE_DEVICES), or --device cpu",
            )


def _error_file(folder: Path, rank: int) -> Path:
    return folder / f"error-rank-{rank}.json"


def record_rank_error(folder: Path, rank: int, error: FaceclError) -> None:
    """A spawned rank's expected error, for the parent (``mp.spawn`` hands it only a
    traceback text): its class, message and fix, in ``folder``."""
    doc = {"class": type(error).__name__, "message": error.message, "hint": error.hint}
    _error_file(folder, rank).write_text(json.dumps(doc))


def raise_rank_error(folder: Path, world: int) -> None:
    """Re-raise, in the parent, the error of the lowest spawned rank that recorded one
    (``record_rank_error``), as its own class with the rank named; nothing when none did."""
    for rank in range(world):
        path = _error_file(folder, rank)
        if path.is_file():
            doc = json.loads(path.read_text())
            cls = getattr(errors, str(doc.get("class")), FaceclError)
            if not (isinstance(cls, type) and issubclass(cls, FaceclError)):
                cls = FaceclError
            raise cls(f"rank {rank}: {doc['message']}", doc.get("hint")) from None
