"""align artifact -> pack -> a real `facecl train` run -> embed and export of the run."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from facecl.artifacts import read_manifest, sha256_file
from facecl.cli import app
from facecl.embed.artifact import EMBEDDINGS

from .conftest import FACES, make_align_artifact

runner = CliRunner()


def ok(*args):
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout) if "--json" in args else r


@pytest.mark.slow
def test_train_run_embeds_and_exports(tmp_path, crops):
    aligned = make_align_artifact(tmp_path / "aligned", crops, extra_rows=False)
    ok("pack", aligned, "-o", tmp_path / "pack")
    ok(
        "train",
        tmp_path / "pack",
        "-o",
        tmp_path / "run",
        "--arch",
        "tiny",
        "--steps",
        3,
        "--batch-size",
        8,
        "--workers",
        0,
        "--device",
        "cpu",
        "--loss",
        "cl",
    )
    s = ok("embed", tmp_path / "run", aligned, "-o", tmp_path / "emb", "--json")
    assert s["ok"] == len(FACES) and s["dim"] == 2 * m_dim(tmp_path / "run")
    m = read_manifest(tmp_path / "emb")
    assert m.extra["model_sha256"] == sha256_file(tmp_path / "run" / "model.pt")
    rep = ok("export", tmp_path / "run", "-o", tmp_path / "m.onnx", "--json")
    assert rep["parity_min_cosine"] >= 0.9999
    ok("embed", "--onnx", tmp_path / "m.onnx", aligned, "-o", tmp_path / "emb_onnx")
    with (
        h5py.File(tmp_path / "emb" / EMBEDDINGS) as a,
        h5py.File(tmp_path / "emb_onnx" / EMBEDDINGS) as b,
    ):
        np.testing.assert_allclose(a["embeddings"][()], b["embeddings"][()], rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
def test_reduced_precision_on_cuda_is_close_to_fp32(tmp_path, tiny_ckpt, crops):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    a = ok("embed", tiny_ckpt, crops, "--aligned", "-o", tmp_path / "a", "--device", "cpu")
    b = ok("embed", tiny_ckpt, crops, "--aligned", "-o", tmp_path / "b", "--device", "cuda")
    del a, b
    with (
        h5py.File(tmp_path / "a" / EMBEDDINGS) as fa,
        h5py.File(tmp_path / "b" / EMBEDDINGS) as fb,
    ):
        x, y = fa["embeddings"][()], fb["embeddings"][()]
    cos = (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
    assert cos.min() > 0.999
    extra = read_manifest(tmp_path / "b").extra  # reduced precision through autocast
    assert extra["dtype"] in ("bfloat16", "float16") and extra["autocast"] is True


def m_dim(run) -> int:
    from facecl.train.checkpoint import load_checkpoint

    return int(load_checkpoint(run / "model.pt")["feature_dim"])
