"""DDP: center updates of 2 gloo processes equal one process on the concatenated batch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.overrides import TorchFunctionMode

from facecl.losses import create_center_loss, create_head

C, D, STEPS = 6, 4, 3
SPLIT = (7, 5)  # uneven per-rank batch sizes
VARIANTS = [("cl", 0.0), ("cl", 1.0), ("acl", 0.5), ("acl-gamma", 0.0), ("cil", 0.0)]


def _setup(name: str, rho: float):
    torch.manual_seed(0)
    head = create_head("softmax", D, C).double()
    counts = torch.arange(C, dtype=torch.float64) * 9 + 4  # the training set's N_j (cil)
    loss = create_center_loss(name, C, D, rho=rho, class_counts=counts).double()
    return head, loss


def _global_batch(step: int):
    g = torch.Generator().manual_seed(100 + step)
    x = torch.randn(sum(SPLIT), D, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, C, (sum(SPLIT),), generator=g)
    return x, y


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        lo = sum(SPLIT[:rank])
        states = {}
        for name, rho in VARIANTS:
            head, loss = _setup(name, rho)
            for step in range(STEPS):
                x, y = _global_batch(step)
                loss.update_centers(x[lo : lo + SPLIT[rank]], y[lo : lo + SPLIT[rank]], head)
            states[f"{name}:{rho}"] = loss.state_dict()
        states["same_size"] = _gather_equal_slices(rank, world)
        torch.save(states, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


class _ReadBacks(TorchFunctionMode):
    """Counts the calls that read a value back to the host (``.item()``, ``int()``, ...)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in ("item", "tolist", "__int__", "__index__"):
            self.calls.append(func.__name__)
        return func(*args, **(kwargs or {}))


def _gather_equal_slices(rank: int, world: int) -> dict[str, torch.Tensor]:
    """Equal slices (the train sampler's) gathered with ``same_size``: no size gather."""
    from facecl.losses.distributed import gather_batch

    x, y = _global_batch(0)
    n = len(y) // world
    with _ReadBacks() as reads:
        gx, gy = gather_batch(x[rank * n : (rank + 1) * n], y[rank * n : (rank + 1) * n], True)
    return {"x": gx, "y": gy, "read_backs": torch.tensor(len(reads.calls))}


def test_two_process_center_updates_equal_single_process(tmp_path: Path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for name, rho in VARIANTS:
        head, loss = _setup(name, rho)
        start = {k: v.clone() for k, v in loss.state_dict().items()}
        for step in range(STEPS):
            loss.update_centers(*_global_batch(step), head)
        for key, want in loss.state_dict().items():
            assert torch.equal(want, start[key]) == (key == "class_counts")  # updates moved
            for r in range(2):
                got = ranks[r][f"{name}:{rho}"][key]
                torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    x, y = _global_batch(0)
    for r in range(2):  # equal slices, gathered without the size all-gather
        same = ranks[r]["same_size"]
        assert torch.equal(same["x"], x) and torch.equal(same["y"], y)
        assert int(same["read_backs"]) == 0


def test_gather_is_identity_without_distributed():
    from facecl.losses.distributed import gather_batch

    x, y = torch.randn(3, 2), torch.tensor([0, 1, 0])
    gx, gy = gather_batch(x, y)
    assert gx is x and gy is y


if not dist.is_available():  # pragma: no cover
    pytestmark = pytest.mark.skip(reason="torch.distributed not available")
