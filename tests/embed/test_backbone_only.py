"""Embed and export read the backbone only: a checkpoint's head and centers (absent in a
``--shard-classes`` run's model.pt, GBs at 1M classes in others) change nothing (issue 17)."""

from __future__ import annotations

import json

import numpy as np
import torch
from typer.testing import CliRunner

from facecl.cli import app
from facecl.embed.backends import TorchBackend, resolve_model
from facecl.embed.export import load_faces
from facecl.train.checkpoint import save_checkpoint

from .conftest import tiny_payload


def test_embed_and_export_ignore_the_head_and_centers(tmp_path):
    bare, full = tmp_path / "bare.pt", tmp_path / "full.pt"
    save_checkpoint(bare, tiny_payload())  # what a class-sharded run's model.pt holds
    junk = {"weight": torch.full((1000, 3), float("nan")), "rows": torch.zeros(7)}
    save_checkpoint(full, {**tiny_payload(), "head_state": junk, "loss_state": junk})
    faces = load_faces(None, (112, 96), 8)
    a = TorchBackend(resolve_model(bare), "none", True, device="cpu", fp16=False)
    b = TorchBackend(resolve_model(full), "none", True, device="cpu", fp16=False)
    np.testing.assert_array_equal(a.embed(faces), b.embed(faces))
    r = CliRunner().invoke(app, ["export", str(full), "-o", str(tmp_path / "m.onnx"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["parity_min_cosine"] >= 0.9999
