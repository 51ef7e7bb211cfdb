"""Checkpoints at many classes: reading the step, and a rank's rows, from one ``last.pt``
against a sharded checkpoint (``facecl.train.sharded_checkpoint``), side by side.

    .venv/bin/python benchmarks/bench_sharded_checkpoint.py --classes 1000000 --world 4 DIR

Writes into DIR a ``last.pt`` holding, for every class, a head row, its SGD momentum row and
a center (3 x classes x dim float32, 6.1 GB at 1M x 512: what a softmax + CL run's resume
checkpoint holds), and the same rows as a sharded checkpoint over ``--world`` ranks. Then
each reading is a fresh subprocess (its peak RSS is its own), with the files' pages dropped
from the page cache first (``posix_fadvise(DONTNEED)``), so every read is cold:

* ``torch.load`` of ``last.pt`` whole (what train did before the checkpoints were mmap'd);
* ``load_checkpoint`` of ``last.pt`` (mmap'd) and its ``step``;
* ``read_index`` of the sharded checkpoint (its ``index.json``) and its ``step``;
* one rank's own rows at the same world size (sha256 check + mmap);
* rank 0's rows at world ``--reshard-to`` (resharding: the overlapping files, copied).

``--save-ranks``: instead, ``--world`` gloo ranks each holding its rows save them together
(``save_rank``, what a ``--shard-classes`` run does at a checkpoint); each rank reports the
peak RSS the save adds (``VmHWM`` reset through ``/proc/self/clear_refs`` before it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from facecl.train.last import class_ranges  # noqa: E402

KEYS = ("head_state.weight", "momentum.head.weight", "loss_state.centers")

WORKER = r"""
import json, sys, time
import torch
from facecl.train import sharded_checkpoint as sc
from facecl.train.checkpoint import load_checkpoint

def status(key):  # MiB; VmHWM is this process's own peak (ru_maxrss survives the exec)
    with open("/proc/self/status") as f:
        return int(f.read().split(key + ":")[1].split()[0]) / 1024

what, d, lo, hi = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
before = status("VmRSS")
t = time.perf_counter()
if what == "torch.load":
    step = torch.load(f"{d}/last.pt", weights_only=True)["step"]
elif what == "load_checkpoint":
    step = load_checkpoint(f"{d}/last.pt")["step"]
elif what == "read_index":
    step = sc.read_index(f"{d}/last").step
else:
    index = sc.read_index(f"{d}/last")
    rows = sc.load_rows(index, lo, hi)
    step = index.step
    total = sum(float(t[:: max(1, len(t) // 64)].sum()) for t in rows.values())  # touch
wall = time.perf_counter() - t
peak = status("VmHWM")
print(json.dumps({"what": what, "wall_s": wall, "peak_rss_mib": peak,
                  "peak_over_start_mib": peak - before, "step": step}))
"""


def write(d: Path, classes: int, dim: int, world: int) -> None:
    import torch

    from facecl.train import sharded_checkpoint as sc
    from facecl.train.checkpoint import save_checkpoint

    d.mkdir(parents=True, exist_ok=True)
    ranges = class_ranges(classes, world)
    t = time.perf_counter()
    part = sc.prepare(d / "last", 1)
    entries = []
    for r, (lo, hi) in enumerate(ranges):  # one rank's rows in memory at a time
        rows = {k: torch.full((hi - lo, dim), float(r)) for k in KEYS}
        entries.append(sc.write_rank(part, r, world, lo, hi, rows))
        del rows
    shared = sc.write_shared(part, {"model": {"w": torch.ones(10)}})
    sc.commit(d / "last", part, step=1, ranges=ranges, shared=shared, ranks=entries, meta={})
    print(f"sharded checkpoint written in {time.perf_counter() - t:.1f} s", flush=True)
    t = time.perf_counter()
    full = {k: torch.zeros(classes, dim) for k in KEYS}
    payload = {
        "arch": "tiny",
        "arch_kwargs": {},
        "feature_dim": dim,
        "input_size": [24, 20],
        "model": {"w": torch.ones(10)},
        "head_state": {"weight": full[KEYS[0]]},
        "optimizer": {"state": {0: {"momentum_buffer": full[KEYS[1]]}}},
        "loss_state": {"centers": full[KEYS[2]]},
        "step": 1,
    }
    save_checkpoint(d / "last.pt", payload)
    print(f"last.pt written in {time.perf_counter() - t:.1f} s", flush=True)


def _status_mib(key: str) -> float:
    with open("/proc/self/status") as f:
        return int(f.read().split(key + ":")[1].split()[0]) / 1024


def _save_rank_worker(rank: int, world: int, init: str, d: str, classes: int, dim: int) -> None:
    import torch
    import torch.distributed as dist

    from facecl.train import sharded_checkpoint as sc

    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    ranges = class_ranges(classes, world)
    lo, hi = ranges[rank]
    rows = {k: torch.full((hi - lo, dim), float(rank)) for k in KEYS}
    shared = {"model": {"w": torch.ones(10)}} if rank == 0 else None
    dist.barrier()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS: the peak from here on is the save's
    before = _status_mib("VmRSS")
    t = time.perf_counter()
    sc.save_rank(d, step=1, rank=rank, ranges=ranges, rows=rows, shared=shared, meta={})
    wall = time.perf_counter() - t
    rows_mib = sum(v.numel() * 4 for v in rows.values()) / 2**20
    added = _status_mib("VmHWM") - before
    print(json.dumps({"rank": rank, "rows_mib": rows_mib, "save_s": wall, "peak_added_mib": added}))
    dist.destroy_process_group()


def save_ranks(d: Path, classes: int, dim: int, world: int) -> None:
    import tempfile

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        args = (world, f"{tmp}/init", str(d / "last"), classes, dim)
        mp.spawn(_save_rank_worker, args=args, nprocs=world, join=True)


def drop_cache(d: Path) -> None:
    for p in [d / "last.pt", *(d / "last").rglob("*")]:
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)


def measure(d: Path, classes: int, world: int, new_world: int) -> list[dict]:
    own = class_ranges(classes, world)[0]
    other = class_ranges(classes, new_world)[0]
    cases = [
        ("torch.load", 0, 0, "last.pt whole"),
        ("load_checkpoint", 0, 0, "last.pt mmap'd, step"),
        ("read_index", 0, 0, "index.json, step"),
        ("rows", *own, f"rank 0 of {world}: own rows"),
        ("rows", *other, f"rank 0 of {new_world}: resharded rows"),
    ]
    out = []
    for what, lo, hi, label in cases:
        drop_cache(d)
        cmd = [sys.executable, "-c", WORKER, what, str(d), str(lo), str(hi)]
        res = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
        res["label"] = label
        print(json.dumps(res), flush=True)
        out.append(res)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--classes", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--world", type=int, default=4)
    ap.add_argument("--reshard-to", type=int, default=3, help="the new world size")
    ap.add_argument("--keep", action="store_true", help="keep the files (else removed)")
    ap.add_argument("--save-ranks", action="store_true", help="measure the ranks' save")
    args = ap.parse_args()
    if args.save_ranks:
        save_ranks(args.dir, args.classes, args.dim, args.world)
        print(json.dumps({"load_avg": os.getloadavg()}))
        if not args.keep:
            import shutil

            shutil.rmtree(args.dir)
        return
    write(args.dir, args.classes, args.dim, args.world)
    sizes = {p.name: p.stat().st_size for p in [args.dir / "last.pt"]}
    sizes.update({p.name: p.stat().st_size for p in (args.dir / "last").rglob("*.pt")})
    print(json.dumps({"sizes_bytes": sizes}), flush=True)
    results = measure(args.dir, args.classes, args.world, args.reshard_to)
    print(json.dumps({"load_avg": os.getloadavg(), "results": results}))
    if not args.keep:
        import shutil

        shutil.rmtree(args.dir)


if __name__ == "__main__":
    main()
