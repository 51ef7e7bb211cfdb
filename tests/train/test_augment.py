"""`facecl train --augment PRESET`: in the loader workers, seeded by --seed."""

from __future__ import annotations

import torch
from typer.testing import CliRunner

from facecl.cli import app
from facecl.train.checkpoint import load_checkpoint

runner = CliRunner()
TINY = ["--arch", "tiny", "--steps", "3", "--batch-size", "8", "--workers", "2", "--loss", "none"]
TINY += ["--log-every", "1", "--lr", "0.05", "--no-progress", "--json"]


def weights(pack, out, *extra):
    r = runner.invoke(app, ["train", str(pack), *TINY, "-o", str(out), *extra])
    assert r.exit_code == 0, r.output
    return load_checkpoint(out / "model.pt")["model"]


def test_strong_augment_in_workers_is_deterministic_per_seed(pack, tmp_path):
    """Two runs with the same seed and workers train the same weights with augmentation on
    (that the augment changes the images is tests/pack/test_augment.py's and
    tests/train/test_cli.py's)."""
    a = weights(pack, tmp_path / "a", "--augment", "strong")
    b = weights(pack, tmp_path / "b", "--augment", "strong")
    assert all(torch.equal(a[k], b[k]) for k in a)
