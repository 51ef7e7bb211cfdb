"""`--shard-classes` memory (issue 17 item 2): peak RSS per rank of a C-class head + centers,
one process against N gloo ranks each holding a class shard.

    .venv/bin/python benchmarks/bench_shard_classes.py [--classes 1000000] [--dim 512]
        [--heads softmax,arcface] [--loss cl] [--world 4] [--batch 32] [--steps 3]
        [--modes single,sharded] [--cap-gib 14] [--out rows.jsonl]

The backbone is facecl's ``tiny`` net on 12x10 inputs with a ``--dim`` feature, so the
head and the centers dominate. Each measurement is a fresh worker subprocess (this script
with ``--worker``): ``single`` runs ``loop.train_step`` in one process on the global batch;
``sharded`` spawns ``--world`` gloo ranks that run ``shard_classes.sharded_train_step``
(the train loop's step), each on its slice of the batch. Every rank reports its own peak RSS
(``getrusage(RUSAGE_SELF).ru_maxrss``), its RSS after building the state, and its mean step
time. The parent polls the RSS of the worker's process tree and kills it past
``--cap-gib`` (the sum over the ranks), reported as killed. Checkpoints are not written
(``bench_sharded_checkpoint.py`` measures those).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZE = (12, 10)


def _rss_now_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    return 0.0


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _config(args: argparse.Namespace, head: str, world: int):
    from facecl.train.config import TrainConfig

    return TrainConfig(
        arch="tiny", feature_dim=args.dim, head=head, loss=args.loss, batch_size=args.batch,
        steps=args.steps, workers=0, threads=1, shard_classes=world > 1,
    )  # fmt: skip


def _arch(args: argparse.Namespace) -> dict:
    return {"input_size": list(SIZE), "feature_dim": args.dim}


def _batch(args: argparse.Namespace, step: int):
    import torch

    g = torch.Generator().manual_seed(step)
    images = torch.randn(args.batch, 3, *SIZE, generator=g)
    return images, torch.randint(0, args.classes, (args.batch,), generator=g)


def _run_steps(args: argparse.Namespace, step_fn) -> dict:
    times = []
    for step in range(args.steps):
        t = time.perf_counter()
        step_fn(step)
        times.append(time.perf_counter() - t)
    return {"step_s": sum(times[1:]) / max(len(times) - 1, 1), "first_step_s": times[0]}


def single(args: argparse.Namespace, head: str) -> dict:
    import torch

    from facecl.train.loop import train_step
    from facecl.train.state import build_state

    torch.set_num_threads(1)
    cfg = _config(args, head, 1)
    base = _rss_now_gib()
    t = time.perf_counter()
    state = build_state(cfg, args.classes, _arch(args), torch.device("cpu"))
    built, build_s = _rss_now_gib(), time.perf_counter() - t

    def step(i: int) -> None:
        images, labels = _batch(args, i)
        train_step(state.net, state.net.head, state.center, state.optimizer, images, labels,
                   lam=cfg.lam)  # fmt: skip

    timing = _run_steps(args, step)
    row = {"peak_gib": _peak_gib(), "base_gib": base, "built_gib": built, "build_s": build_s}
    return {"ranks": [{**row, **timing}]}


def _rank(rank: int, world: int, init: str, args: argparse.Namespace, head: str, out: str) -> None:
    import torch
    import torch.distributed as dist
    from torch import nn

    from facecl.losses.distributed import class_range
    from facecl.train.shard_classes import sharded_train_step
    from facecl.train.state import build_state

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        cfg = _config(args, head, world)
        shard = class_range(args.classes, rank, world)
        base = _rss_now_gib()
        t = time.perf_counter()
        state = build_state(cfg, args.classes, _arch(args), torch.device("cpu"), shard=shard)
        built, build_s = _rss_now_gib(), time.perf_counter() - t
        backbone = nn.parallel.DistributedDataParallel(state.net.backbone)
        rows = slice(rank * args.batch // world, (rank + 1) * args.batch // world)

        def step(i: int) -> None:
            images, labels = _batch(args, i)
            sharded_train_step(
                backbone, state.net.head, state.center, state.optimizer,
                images[rows], labels[rows], lam=cfg.lam, world=world,
            )  # fmt: skip

        timing = _run_steps(args, step)
        row = {"rank": rank, "classes": shard.size, "peak_gib": _peak_gib(), "base_gib": base}
        row["built_gib"] = built
        Path(out, f"rank{rank}.json").write_text(json.dumps({**row, "build_s": build_s, **timing}))
    finally:
        dist.destroy_process_group()


def sharded(args: argparse.Namespace, head: str) -> dict:
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="facecl-bench-shard-") as tmp:
        init = os.path.join(tmp, "init")
        mp.spawn(_rank, args=(args.world, init, args, head, tmp), nprocs=args.world, join=True)
        ranks = [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(args.world)]
    return {"ranks": ranks, "launcher_peak_gib": _peak_gib()}


# --------------------------------------------------------------------------- the parent


def _tree_rss_gib(pid: int) -> float:
    """VmRSS of ``pid`` and its descendants."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 2**20
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return total


def measure(mode: str, head: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", mode, "--heads", head]
    for key in ("classes", "dim", "loss", "world", "batch", "steps"):
        cmd += [f"--{key}", str(getattr(args, key))]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, _tree_rss_gib(proc.pid))
        if peak > args.cap_gib:
            proc.kill()
            proc.communicate()
            return {"killed": f"> {args.cap_gib:g} GiB (tree)", "wall": time.perf_counter() - t0}
        time.sleep(0.2)
    out, err = proc.communicate()
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return {"failed": (err.strip().splitlines() or ["?"])[-1], "wall": time.perf_counter() - t0}
    return {**json.loads(lines[-1][7:]), "tree_peak_gib": peak, "wall": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--heads", default="softmax,arcface")
    ap.add_argument("--loss", default="cl")
    ap.add_argument("--world", type=int, default=4)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--modes", default="single,sharded")
    ap.add_argument("--cap-gib", type=float, default=14.0)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--worker", choices=["single", "sharded"])
    args = ap.parse_args()
    if args.worker:
        sys.path.insert(0, str(ROOT))
        result = (single if args.worker == "single" else sharded)(args, args.heads)
        print("RESULT " + json.dumps(result), flush=True)
        return
    sys.path.insert(0, str(ROOT))
    from benchmarks.common import machine

    for head in args.heads.split(","):
        for mode in args.modes.split(","):
            world = args.world if mode == "sharded" else 1
            row = {"head": head, "loss": args.loss, "mode": mode, "classes": args.classes,
                   "dim": args.dim, "world": world, "batch": args.batch}  # fmt: skip
            row.update(measure(mode, head, args), machine=machine())
            print(json.dumps(row), flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
