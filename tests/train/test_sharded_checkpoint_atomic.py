"""A sharded checkpoint is committed as a whole: a process killed (SIGKILL) anywhere in a
save leaves the previous complete checkpoint, and the ranks of a gloo group save together
(one rank failing fails them all, nothing committed)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp

from facecl.errors import CheckpointError
from facecl.train import sharded_checkpoint as sc

# Saves steps 1, 2, ... of 4 ranks; every tensor of step s is filled with s. argv: the
# checkpoint directory, then where to kill itself in the save of step 2 (or "loop": save
# until killed from outside).
SAVER = """
import os, signal, sys
import torch
from facecl.train import sharded_checkpoint as sc

ckpt, where = sys.argv[1], sys.argv[2]
ranges = [(0, 3), (3, 6), (6, 8), (8, 10)]

def kill():
    os.kill(os.getpid(), signal.SIGKILL)

def save(step, before_commit=None):
    rows = [{"w": torch.full((hi - lo, 1 << 16), float(step))} for lo, hi in ranges]
    sc.save_set(ckpt, step=step, ranges=ranges, rows=rows, shared={"step": step},
                meta={"step": step}, before_commit=before_commit)

save(1)
print("saved 1", flush=True)
if where == "between-files":  # rank 2's file is never written
    real = sc.write_rank
    sc.write_rank = lambda part, r, *a: kill() if r == 2 else real(part, r, *a)
    save(2)
elif where == "before-commit":  # every file written, nothing renamed
    save(2, before_commit=kill)
elif where == "before-index":  # the data directory renamed into place, the old index kept
    sc.atomic_write_json = lambda *a: kill()
    save(2)
else:
    step = 2
    while True:
        save(step)
        step += 1
"""


def check_complete(ckpt, at_least: int = 1) -> int:
    """The checkpoint's step; every file of it present, sha-checked, and of that step."""
    index = sc.read_index(ckpt)
    assert index.step >= at_least and index.meta["step"] == index.step
    assert sc.load_shared(index)["step"] == index.step
    rows = sc.load_rows(index, 0, 10)["w"]
    assert rows.shape == (10, 1 << 16) and bool((rows == index.step).all())
    return index.step


@pytest.mark.parametrize("where", ["between-files", "before-commit", "before-index"])
def test_a_kill_inside_a_save_keeps_the_previous_checkpoint(tmp_path, where):
    ckpt = tmp_path / "last"
    proc = subprocess.run(
        [sys.executable, "-c", SAVER, str(ckpt), where], capture_output=True, text=True
    )
    assert proc.returncode == -signal.SIGKILL and "saved 1" in proc.stdout
    assert check_complete(ckpt) == 1
    leftovers = {p.name for p in ckpt.iterdir()} - {"index.json", "s000000001"}
    assert leftovers == {"s000000002" if where == "before-index" else ".s000000002.partial"}
    rows = [{"w": torch.zeros(hi - lo, 1)} for lo, hi in [(0, 5), (5, 10)]]
    sc.save_set(ckpt, step=2, ranges=[(0, 5), (5, 10)], rows=rows, shared={}, meta={})
    names = sorted(p.name for p in ckpt.iterdir())  # the next save cleans up
    assert names == ["index.json", "s000000002-1" if where == "before-index" else "s000000002"]


@pytest.mark.parametrize("delay", [0.3, 0.8])
def test_a_sigkill_at_any_time_leaves_a_complete_checkpoint(tmp_path, delay):
    ckpt = tmp_path / "last"
    proc = subprocess.Popen(
        [sys.executable, "-c", SAVER, str(ckpt), "loop"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().startswith("saved 1")
    time.sleep(delay)  # somewhere in a later save
    proc.kill()
    proc.wait()
    check_complete(ckpt)


# --------------------------------------------------------------------------- gloo ranks


def _rank(rank: int, world: int, init: str, ckpt: str, out: str) -> None:
    """Save step 4 at 3 ranks, then step 5 with rank 1 handing over too few rows."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    ranges = [(0, 4), (4, 7), (7, 10)]
    full = torch.arange(10 * 2, dtype=torch.float32).reshape(10, 2)
    lo, hi = ranges[rank]
    shared = {"model": torch.ones(2)} if rank == 0 else None
    results = []
    for step in (4, 5):
        rows = {"w": full[lo : hi - 1] if step == 5 and rank == 1 else full[lo:hi]}
        try:
            sc.save_rank(
                ckpt, step=step, rank=rank, ranges=ranges, rows=rows, shared=shared, meta={}
            )
            results.append("ok")
        except CheckpointError as e:
            results.append(f"checkpoint error: {e}")
        except ValueError as e:  # write_rank refuses the wrong number of rows
            results.append(f"own error: {e}")
    with open(f"{out}.{rank}", "w") as f:
        f.write("\n".join(results))
    dist.destroy_process_group()


def test_gloo_ranks_save_together_and_fail_together(tmp_path):
    world, out = 3, str(tmp_path / "result")
    args = (world, str(tmp_path / "init"), str(tmp_path / "last"), out)
    mp.spawn(_rank, args=args, nprocs=world, join=True)
    results = [(tmp_path / f"result.{r}").read_text().splitlines() for r in range(world)]
    assert [r[0] for r in results] == ["ok"] * 3
    assert results[1][1].startswith("own error: sharded 'w' has shape (2, 2), not (3, ...)")
    for r in (0, 2):
        assert results[r][1].startswith("checkpoint error: rank 1 could not write the checkpoint")
    index = sc.read_index(tmp_path / "last")  # step 4, untouched by the failed save
    assert (index.step, index.world, index.ranges) == (4, 3, [(0, 4), (4, 7), (7, 10)])
    full = torch.arange(10 * 2, dtype=torch.float32).reshape(10, 2)
    assert torch.equal(sc.load_rows(index, 0, 10)["w"], full)
    assert torch.equal(sc.load_rows(index, 3, 8)["w"], full[3:8])
    assert torch.equal(sc.load_shared(index)["model"], torch.ones(2))
