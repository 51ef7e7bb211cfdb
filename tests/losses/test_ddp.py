"""DDP: center updates and the center terms' gradients of 2 gloo processes equal one process
on the concatenated batch."""

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
GRAD_VARIANTS = [("cl", 0.0), ("cl", 1.0), ("cil", 0.0), ("cil", 1.0), ("acl", 0.5)]
IN_DIM, LAM, GAMMA = 5, 0.7, 0.05


def _setup(name: str, rho: float):
    torch.manual_seed(0)
    head = create_head("softmax", D, C).double()
    counts = torch.arange(C, dtype=torch.float64) * 9 + 4  # the training set's N_j (cil)
    loss = create_center_loss(name, C, D, rho=rho, gamma=GAMMA, class_counts=counts).double()
    with torch.no_grad():  # centers of unequal norms (L_I != 0); local, no all-gather
        loss._apply_update(*_global_batch(99), head)
    return head, loss


def _grad_batch():
    """Inputs (N, IN_DIM) and labels of a global batch split evenly (the train sampler's)."""
    g = torch.Generator().manual_seed(7)
    n = sum(SPLIT)
    return torch.randn(n, IN_DIM, generator=g, dtype=torch.float64), torch.randint(
        0, C, (n,), generator=g
    )


def _center_grads(name: str, rho: float, lo: int, hi: int, ddp: bool) -> list[torch.Tensor]:
    """Gradients of a linear backbone under lambda L_C (+ gamma L_I for cil) on rows lo:hi
    of the global batch; under ``ddp`` the module is DDP-wrapped (gradients averaged)."""
    head, loss = _setup(name, rho)
    torch.manual_seed(1)
    net = torch.nn.Linear(IN_DIM, D).double()
    model = torch.nn.parallel.DistributedDataParallel(net) if ddp else net
    inp, y = _grad_batch()
    total, _ = loss.objective(model(inp[lo:hi]), y[lo:hi], head, LAM)
    total.backward()
    return [p.grad.detach().clone() for p in net.parameters()]


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
        n = sum(SPLIT) // world
        for name, rho in GRAD_VARIANTS:
            grads = _center_grads(name, rho, rank * n, (rank + 1) * n, ddp=True)
            for i, grad in enumerate(grads):
                states[f"grad:{name}:{rho}:{i}"] = grad
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
    for name, rho in GRAD_VARIANTS:  # N ranks' averaged gradients == one process's
        want = _center_grads(name, rho, 0, sum(SPLIT), ddp=False)
        for i, w in enumerate(want):
            assert w.abs().max() > 1e-3
            for r in range(2):
                torch.testing.assert_close(ranks[r][f"grad:{name}:{rho}:{i}"], w, rtol=0, atol=1e-6)
    # the invariant term is in cil's gradients: cl (same centers, no L_I) differs
    cl, cil = (_center_grads(name, 0.0, 0, sum(SPLIT), ddp=False)[0] for name in ("cl", "cil"))
    assert (cl - cil).abs().max() > 1e-4


def test_gather_is_identity_without_distributed():
    from facecl.losses.distributed import gather_batch

    x, y = torch.randn(3, 2), torch.tensor([0, 1, 0])
    gx, gy = gather_batch(x, y)
    assert gx is x and gy is y


if not dist.is_available():  # pragma: no cover
    pytestmark = pytest.mark.skip(reason="torch.distributed not available")
