"""A checkpoint is memory-mapped on the CPU: embed and export use only the backbone, so a large
run's head and centers (GBs at 1M classes) are never read into memory (issue 17)."""

from __future__ import annotations

import subprocess
import sys

import torch

PROBE = """
import sys
from facecl.train.checkpoint import load_checkpoint

def rss_mib():
    with open("/proc/self/status") as f:
        return int(f.read().split("VmRSS:")[1].split()[0]) / 1024

before = rss_mib()
ckpt = load_checkpoint(sys.argv[1])
assert float(ckpt["model"]["w"].sum()) == 1000.0  # the backbone is really read
print(rss_mib() - before)
"""


def test_loading_a_checkpoint_does_not_read_the_head_into_memory(tmp_path):
    path = tmp_path / "model.pt"
    head = torch.ones(256, 1024, 256)  # 256 MiB that embed never touches
    torch.save(
        {
            "format": "facecl.checkpoint",
            "version": 1,
            "model": {"w": torch.ones(1000)},
            "head_state": {"weight": head},
        },
        path,
    )
    del head
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, check=True
    )
    grown = float(out.stdout.strip().splitlines()[-1])
    assert grown < 96, f"loading grew RSS by {grown:.0f} MiB: the 256 MiB head was read"
