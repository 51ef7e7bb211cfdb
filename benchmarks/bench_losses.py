"""Benchmark the center-loss layer step: forward + backward + center update.

    .venv/bin/python benchmarks/bench_losses.py [--classes 1000 10000 100000] [--repeats 5]
        [--batch 256] [--dim 512] [--device cpu|cuda] [--threads N]

Side by side in one process, on the same features and labels:

* **facecl**: ``create_center_loss(name, C, D)``: L_C from the B gathered centers
  (O(B D)), backward, then ``update_centers`` (ECCV Eq. 4 on the classes present, O(B D)).
  Rows for ``cl``, ``cl`` with rho = 5, ``acl-gamma`` and ``cil``.
* **reference**: the full-distance-matrix formulation of the popular pytorch-center-loss
  repository (KaiyangZhou/pytorch-center-loss, ``center_loss.py`` + ``main.py``),
  reimplemented here (not a dependency): ``distmat = ||x||^2 + ||c||^2 - 2 x c^T`` over all
  C classes (B x C), a B x C label mask, ``clamp(1e-12, 1e12).sum() / B``; centers are an
  ``nn.Parameter`` updated by its own SGD (lr 0.5) after rescaling the gradient by
  1/weight_cent, as its ``main.py`` does. O(B C D) per step plus dense (C, D) gradients.

The time of one step is the min and the median of ``--repeats`` timed steps after 2 warm-up
steps (the min is the robust one on a machine shared with other jobs);
the features are a leaf tensor with ``requires_grad`` (the backbone is not part of the
layer). Prints a markdown table with the ratio reference / facecl per C.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from facecl.losses import create_center_loss, create_head  # noqa: E402

LAMBDA = 0.003  # ECCV's loss weight (weight_cent in the reference's main.py)


class ReferenceCenterLoss(nn.Module):
    """KaiyangZhou/pytorch-center-loss ``CenterLoss``, device-agnostic, same arithmetic."""

    def __init__(self, num_classes: int, feat_dim: int, device: torch.device):
        super().__init__()
        self.num_classes = num_classes
        self.centers = nn.Parameter(torch.randn(num_classes, feat_dim, device=device))
        self.classes = torch.arange(num_classes, device=device).long()

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        batch_size = x.size(0)
        distmat = (
            torch.pow(x, 2).sum(dim=1, keepdim=True).expand(batch_size, self.num_classes)
            + torch.pow(self.centers, 2)
            .sum(dim=1, keepdim=True)
            .expand(self.num_classes, batch_size)
            .t()
        )  # (B, C)
        distmat = distmat.addmm(x, self.centers.t(), beta=1, alpha=-2)
        labels = labels.unsqueeze(1).expand(batch_size, self.num_classes)
        mask = labels.eq(self.classes.expand(batch_size, self.num_classes))  # (B, C)
        dist = distmat * mask.float()
        return dist.clamp(min=1e-12, max=1e12).sum() / batch_size


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(step, repeats: int, device: torch.device) -> tuple[float, float]:
    """(min, median) seconds of ``repeats`` timed calls after 2 warm-up calls."""
    for _ in range(2):
        step()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def _time_reference(
    x0: torch.Tensor, y: torch.Tensor, num_classes: int, args: argparse.Namespace, device
) -> tuple[tuple[float, float], torch.Tensor]:
    """Time the reference step; its dense buffers are freed on return."""
    ref = ReferenceCenterLoss(num_classes, args.dim, device)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.5)
    start = ref.centers.detach().clone()

    def ref_step() -> None:
        x = x0.clone().requires_grad_(True)
        ref_opt.zero_grad()
        (LAMBDA * ref(x, y)).backward()
        for p in ref.parameters():  # main.py: remove the loss weight from the center gradient
            p.grad.data *= 1.0 / LAMBDA
        ref_opt.step()

    return _time(ref_step, args.repeats, device), start


def bench(num_classes: int, args: argparse.Namespace, device: torch.device) -> list[dict]:
    g = torch.Generator(device="cpu").manual_seed(num_classes)
    x0 = torch.randn(args.batch, args.dim, generator=g).to(device)
    y = torch.randint(0, num_classes, (args.batch,), generator=g).to(device)
    rows = []

    t_ref, ref_centers = _time_reference(x0, y, num_classes, args, device)
    rows.append({"C": num_classes, "impl": "pytorch-center-loss (distmat)", "s": t_ref})

    head = create_head("softmax", args.dim, num_classes).to(device)
    counts = torch.full((num_classes,), 100.0)  # CIL's training-set images per class
    for name, kw in [("cl", {}), ("cl", {"rho": 5.0}), ("acl-gamma", {}), ("cil", {})]:
        loss = create_center_loss(name, num_classes, args.dim, class_counts=counts, **kw)
        loss = loss.to(device)

        def step(loss=loss) -> None:
            x = x0.clone().requires_grad_(True)
            total, _ = loss.objective(x, y, head, LAMBDA)
            total.backward()
            loss.update_centers(x.detach(), y, head)

        label = f"facecl {name}" + (f" rho={kw['rho']:g}" if kw else "")
        rows.append({"C": num_classes, "impl": label, "s": _time(step, args.repeats, device)})

    # same quantity: the reference sums ||x - c||^2 / B (plus its clamp's 1e-12 per masked
    # entry); ours is 1/(2B) sum ||x - c||^2 -> ref == 2 * ours up to the clamp floor
    check = create_center_loss("cl", num_classes, args.dim).to(device)
    with torch.no_grad():
        check.centers.copy_(ref_centers)
        ref = ReferenceCenterLoss(num_classes, args.dim, device)
        ref.centers.copy_(ref_centers)
        ours, theirs = float(check(x0, y)), float(ref(x0, y))
    floor = (num_classes - 1) * 1e-12
    assert abs(theirs - floor - 2 * ours) <= 1e-4 * abs(theirs), (theirs, ours)
    for r in rows:
        r["ratio_min"] = t_ref[0] / r["s"][0]
        r["ratio_med"] = t_ref[1] / r["s"][1]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    where = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor()
    print(
        f"# center-loss layer step, B={args.batch}, D={args.dim}, device={args.device} "
        f"({where or platform.machine()}, {os.cpu_count()} CPUs, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads), "
        f"min and median of {args.repeats} steps\n"
    )
    print("| C | implementation | min (ms) | median (ms) | ref / this (min) | (median) |")
    print("|---:|---|---:|---:|---:|---:|")
    for c in args.classes:
        for r in bench(c, args, device):
            t_min, t_med = (1000 * t for t in r["s"])
            print(
                f"| {r['C']:,} | {r['impl']} | {t_min:.2f} | {t_med:.2f} "
                f"| {r['ratio_min']:.1f}x | {r['ratio_med']:.1f}x |"
            )
        sys.stdout.flush()


if __name__ == "__main__":
    main()
