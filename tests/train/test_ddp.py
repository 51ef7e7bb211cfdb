"""DDP: 2 gloo processes on CPU train like one process with the global batch."""

from __future__ import annotations

import torch

from facecl.pack.dataset import ShardDataset
from facecl.train.checkpoint import load_checkpoint
from facecl.train.config import TrainConfig
from facecl.train.metrics import read_metrics
from facecl.train.stage import fit
from facecl.train.state import build_state


def test_two_processes_equal_one(pack, tmp_path):
    cfg = TrainConfig(
        arch="tiny",
        loss="cl",
        lam=0.1,
        steps=4,
        batch_size=8,
        workers=0,
        log_every=2,
        checkpoint_every=4,
        lr=0.05,
        threads=1,
    )
    one = fit(cfg, ShardDataset(pack), tmp_path / "one", show_progress=False)
    two = fit(cfg, ShardDataset(pack), tmp_path / "two", ddp=2, show_progress=False)
    assert (one["world"], two["world"]) == (1, 2)
    a = load_checkpoint(tmp_path / "one" / "model.pt")
    b = load_checkpoint(tmp_path / "two" / "model.pt")
    ca, cb = a["loss_state"]["centers"], b["loss_state"]["centers"]
    assert (ca - cb).abs().max() <= 1e-6
    init = build_state(cfg, 4, {"input_size": [24, 20]}, torch.device("cpu")).center.centers
    assert (ca - init).abs().max() > 1e-3  # the centers did move
    for key, value in a["model"].items():
        assert torch.allclose(value, b["model"][key], atol=1e-5), key
    # The logged losses are averaged over the ranks: the global batch's loss.
    ra, rb = (read_metrics(tmp_path / d / "metrics.jsonl") for d in ("one", "two"))
    assert [r["step"] for r in rb] == [2, 4]
    for x, y in zip(ra, rb, strict=True):
        assert abs(x["loss"] - y["loss"]) < 1e-5 and abs(x["center"] - y["center"]) < 1e-5
