"""`--shard-classes` equivalence harness: the same few SGD steps by one process on the
global batch (the oracle, ``loop.train_step``) and by N gloo ranks holding a class shard
each (``shard_classes.sharded_train_step``), on a tiny backbone.

``reference(case)`` runs in the test process (no process group); ``spawn(world, cases,
out)`` runs every case on ``world`` spawned ranks, each saving what it holds per step:
the logged terms, the backbone's gradients (after DDP's average), its head rows and its
loss state. ``compare`` lists every difference above the tolerance.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from facecl.losses.config import CenterLossConfig
from facecl.train.config import TrainConfig

CLASSES, BATCH, STEPS, SIZE = 10, 8, 3, (12, 10)
TOL = 1e-5


@dataclass(frozen=True)
class Case:
    head: str
    loss: str
    rho: float = 0.0
    lam: float = 0.1
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.head}-{self.loss}" + (f"-rho{self.rho:g}" if self.rho else "")

    def config(self) -> TrainConfig:
        center = CenterLossConfig(rho=self.rho, gamma=0.05)
        return TrainConfig(
            arch="tiny",
            head=self.head,
            loss=self.loss,
            lam=self.lam,
            center=center,
            lr=0.005,  # s = 64 margin heads diverge in 3 steps at 0.05
            batch_size=BATCH,
            steps=STEPS,
            workers=0,
            threads=1,
            **self.extra,
        )


LOSSES = [("none", 0.0), ("cl", 0.0), ("acl", 0.0), ("acl-gamma", 0.0), ("cl", 0.1), ("cil", 0.0)]
HEADS = ["softmax", "sphereface", "cosface", "arcface"]
GRID = [Case(h, loss, rho) for h in HEADS for loss, rho in LOSSES]


def batches() -> tuple[torch.Tensor, torch.Tensor]:
    """(STEPS, BATCH, 3, H, W) images and (STEPS, BATCH) labels, fixed by a seed."""
    g = torch.Generator().manual_seed(7)
    images = torch.randn(STEPS, BATCH, 3, *SIZE, generator=g)
    labels = torch.randint(0, CLASSES, (STEPS, BATCH), generator=g)
    return images, labels


def counts() -> torch.Tensor:
    return torch.arange(1, CLASSES + 1, dtype=torch.float32) * 3


def _record(state: Any, terms: dict[str, torch.Tensor]) -> dict[str, Any]:
    return {
        "terms": {k: float(v) for k, v in terms.items()},
        "grads": {n: p.grad.clone() for n, p in state.net.backbone.named_parameters()},
        "head": {k: v.clone() for k, v in state.net.head.state_dict().items()},
        "loss_state": {k: v.clone() for k, v in state.center.state_dict().items()},
    }


def reference(case: Case) -> list[dict[str, Any]]:
    """One process on the global batch: what every step leaves."""
    from facecl.train.loop import train_step
    from facecl.train.state import build_state

    cfg = case.config()
    size = {"input_size": list(SIZE)}
    state = build_state(cfg, CLASSES, size, torch.device("cpu"), None, counts())
    images, labels = batches()
    out = []
    for step in range(STEPS):
        state.net.head.set_step(step)
        state.center.set_step(step)
        terms, _ = train_step(
            state.net, state.net.head, state.center, state.optimizer, images[step], labels[step],
            lam=cfg.lam,
        )  # fmt: skip
        out.append(_record(state, terms))
    return out


def _sharded(case: Case, rank: int, world: int) -> list[dict[str, Any]]:
    from torch import nn

    from facecl.losses.distributed import class_range
    from facecl.train.shard_classes import sharded_train_step
    from facecl.train.state import build_state

    cfg = case.config()
    shard = class_range(CLASSES, rank, world)
    size = {"input_size": list(SIZE)}
    state = build_state(cfg, CLASSES, size, torch.device("cpu"), None, counts(), shard=shard)
    backbone = nn.parallel.DistributedDataParallel(state.net.backbone)
    images, labels = batches()
    rows = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
    out = []
    for step in range(STEPS):
        state.net.head.set_step(step)
        state.center.set_step(step)
        terms, _, _ = sharded_train_step(
            backbone, state.net.head, state.center, state.optimizer,
            images[step][rows], labels[step][rows], lam=cfg.lam, world=world,
        )  # fmt: skip
        out.append(_record(state, terms))
    return out


def _worker(rank: int, world: int, init: str, cases: list[Case], out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        results = {case.name: _sharded(case, rank, world) for case in cases}
        torch.save(results, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def spawn(world: int, cases: list[Case], out: Path) -> list[dict[str, Any]]:
    """Run ``cases`` on ``world`` gloo ranks; each rank's {case name: steps}."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="facecl-shard-") as tmp:
        init = os.path.join(tmp, "init")
        mp.spawn(_worker, args=(world, init, cases, str(out)), nprocs=world, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(world)]


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal to ``TOL`` relative to the tensor's scale (at least 1): float32 sums in another
    order differ by ~1e-7 of the largest entry, not of each entry."""
    if a.shape != b.shape:
        return False
    scale = max(1.0, float(a.abs().max())) if a.numel() else 1.0
    return a.numel() == 0 or float((a - b).abs().max()) <= TOL * scale


def compare(case: Case, ref: list[dict[str, Any]], ranks: list[list[dict[str, Any]]]) -> list[str]:
    """Every quantity of one process that a rank's run does not reproduce (empty: equal)."""
    from facecl.losses import CENTER_LOSSES
    from facecl.losses.distributed import class_range

    world = len(ranks)
    rows_of = CENTER_LOSSES.get(case.loss).class_rows
    bad = []
    for rank, steps in enumerate(ranks):
        shard = class_range(CLASSES, rank, world)
        for step, (want, got) in enumerate(zip(ref, steps, strict=True)):
            where = f"{case.name} world {world} rank {rank} step {step}"
            for k, v in want["terms"].items():
                if abs(v - got["terms"][k]) > TOL * max(1.0, abs(v)):
                    bad.append(f"{where}: term {k} {got['terms'][k]} != {v}")
            for k, g in want["grads"].items():
                if not _close(g, got["grads"][k]):
                    bad.append(f"{where}: backbone grad {k}")
            for k, v in want["head"].items():
                if not _close(v[shard.lo : shard.hi], got["head"][k]):
                    bad.append(f"{where}: head {k} rows")
            for k, v in want["loss_state"].items():
                v = v[shard.lo : shard.hi] if k in rows_of else v
                if not _close(v, got["loss_state"][k]):
                    bad.append(f"{where}: loss state {k}")
    return bad


# --------------------------------------------------------------------------- --sample-rate

SAMPLED_CLASSES, RATE = 40, 0.3


def sampled_config() -> TrainConfig:
    return TrainConfig(
        arch="tiny", head="arcface", loss="cl", lam=0.1, lr=0.005, batch_size=BATCH, steps=1,
        workers=0, threads=1, shard_classes=True, sample_rate=RATE,
    )  # fmt: skip


def _sampled(rank: int, world: int) -> dict[str, Any]:
    """One --sample-rate step on a shard: the classes drawn (global ids), the loss, the
    head rows before and after."""
    from torch import nn

    from facecl.losses.distributed import class_range
    from facecl.losses.sharded import sample_classes
    from facecl.train.shard_classes import sample_seed, sharded_train_step
    from facecl.train.state import build_state

    cfg = sampled_config()
    shard = class_range(SAMPLED_CLASSES, rank, world)
    size = {"input_size": list(SIZE)}
    state = build_state(cfg, SAMPLED_CLASSES, size, torch.device("cpu"), shard=shard)
    backbone = nn.parallel.DistributedDataParallel(state.net.backbone)
    images, labels = batches()
    rows = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
    _, local = shard.local_labels(labels[0])
    seed = sample_seed(cfg.seed, 0)
    drawn, _ = sample_classes(local, shard.size, RATE, torch.Generator().manual_seed(seed))
    before = state.net.head.weight.detach().clone()
    terms, _, _ = sharded_train_step(
        backbone, state.net.head, state.center, state.optimizer, images[0][rows],
        labels[0][rows], lam=cfg.lam, world=world, sample_rate=RATE, sample_seed=seed,
    )  # fmt: skip
    return {
        "drawn": drawn + shard.lo,
        "terms": {k: float(v) for k, v in terms.items()},
        "before": before,
        "after": state.net.head.weight.detach().clone(),
    }


def _sampled_worker(rank: int, world: int, init: str, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        torch.save(_sampled(rank, world), Path(out) / f"sampled{rank}.pt")
    finally:
        dist.destroy_process_group()


def spawn_sampled(world: int, out: Path) -> list[dict[str, Any]]:
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="facecl-shard-") as tmp:
        init = os.path.join(tmp, "init")
        mp.spawn(_sampled_worker, args=(world, init, str(out)), nprocs=world, join=True)
    return [torch.load(out / f"sampled{r}.pt", weights_only=True) for r in range(world)]


def sampled_reference(drawn: torch.Tensor) -> float:
    """One process: the arcface cross entropy of the first batch over the classes
    ``drawn`` only (the oracle of a sampled step's softmax term)."""
    import torch.nn.functional as F

    from facecl.train.state import build_state

    cfg = sampled_config()
    size = {"input_size": list(SIZE)}
    state = build_state(cfg, SAMPLED_CLASSES, size, torch.device("cpu"))
    images, labels = batches()
    y = torch.searchsorted(drawn, labels[0])
    assert torch.equal(drawn[y], labels[0])  # every positive was drawn
    feats = state.net.backbone(images[0])
    return F.cross_entropy(state.net.head(feats, y, drawn), y).item()
