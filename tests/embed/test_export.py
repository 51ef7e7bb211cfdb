"""`facecl export`: ONNX metadata, dynamic batch, parity with torch on real aligned faces."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

from facecl import __version__
from facecl.artifacts import sha256_file, sha256_json
from facecl.cli import app
from facecl.embed.export import _check_parity, cosine_rows, load_faces, sidecar_path
from facecl.embed.features import FlipFusion, preprocess
from facecl.errors import ArtifactError
from facecl.models import create_backbone
from facecl.train.checkpoint import build_backbone, load_checkpoint

from .conftest import FACES, tiny_payload

runner = CliRunner()


def export(*args):
    return runner.invoke(app, ["export", *map(str, args)])


@pytest.fixture(scope="module")
def faces():
    return load_faces(None, (112, 96), 64)  # the bundled real aligned faces


def test_cosine_rows():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    b = np.array([[2.0, 0.0], [-1.0, -1.0], [1.0, 0.0]])
    np.testing.assert_allclose(cosine_rows(a, b), [1.0, -1.0, 0.0], atol=1e-12)


def test_export_metadata_dynamic_batch_and_parity(tmp_path, tiny_ckpt, faces):
    out = tmp_path / "model.onnx"
    r = export(tiny_ckpt, "-o", out, "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["parity_faces"] == len(FACES) == len(faces)
    assert rep["parity_min_cosine"] >= 0.9999 and rep["parity_max_cosine_distance"] < 1e-4
    assert rep["opset"] == 17 and rep["output_dim"] == 16 and rep["fusion_in_graph"] == "none"

    m = onnx.load(out)
    meta = {p.key: p.value for p in m.metadata_props}
    ckpt = load_checkpoint(tiny_ckpt)
    assert meta["input_size"] == "112x96" and meta["color"] == "RGB"
    assert meta["input_layout"] == "NCHW" and meta["normalisation"].startswith("(x - 127.5) / 128")
    assert meta["feature_dim"] == "16" and meta["fusion"] == "none" and meta["opset"] == "17"
    assert meta["facecl_version"] == __version__ and meta["arch"] == "tiny"
    assert meta["train_config_sha256"] == sha256_json(ckpt["config"])
    assert meta["checkpoint_sha256"] == sha256_file(tiny_ckpt)
    assert any(o.version == 17 for o in m.opset_import if o.domain in ("", "ai.onnx"))

    # Dynamic batch: 1, 3 and all faces, each equal to torch on the same faces.
    net = build_backbone(ckpt)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for n in (1, 3, len(faces)):
        x = preprocess(faces[:n])
        got = sess.run(None, {"input": x})[0]
        with torch.no_grad():
            want = net(torch.from_numpy(x)).numpy()
        assert got.shape == (n, 16)
        assert cosine_rows(got, want).min() > 0.9999
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)

    side = json.loads(sidecar_path(out).read_text())
    assert side["schema"] == "facecl.export/1" and side["extra"]["onnx_sha256"] == sha256_file(out)
    assert side["inputs"][0]["sha256"] == sha256_file(tiny_ckpt)
    # Same checkpoint and config: no-op; another config needs --force.
    r = export(tiny_ckpt, "-o", out, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["up_to_date"] is True
    r = export(tiny_ckpt, "-o", out, "--opset", 13)
    assert r.exit_code == 1 and "--force" in r.output
    r = export(tiny_ckpt, "-o", out, "--opset", 13, "--force", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["opset"] == 13


def test_export_with_flip_bakes_the_fusion(tmp_path, tiny_ckpt, faces):
    out = tmp_path / "flip.onnx"
    r = export(tiny_ckpt, "-o", out, "--with-flip", "--fusion", "mean", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["output_dim"] == 16
    meta = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert meta["fusion"] == "mean" and meta["output_dim"] == "16"
    x = preprocess(faces[:4])
    got = ort.InferenceSession(str(out)).run(None, {"input": x})[0]
    net = build_backbone(load_checkpoint(tiny_ckpt))
    with torch.no_grad():
        t = torch.from_numpy(x)
        want = ((net(t) + net(torch.flip(t, [3]))) / 2).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_parity_check_fails_on_a_different_model(tmp_path, tiny_ckpt, faces):
    out = tmp_path / "m.onnx"
    assert export(tiny_ckpt, "-o", out).exit_code == 0
    torch.manual_seed(123)
    other = create_backbone("tiny").eval()
    with pytest.raises(ArtifactError, match="disagrees with torch"):
        _check_parity(other, str(out), faces, 0.9999)
    same = build_backbone(load_checkpoint(tiny_ckpt))
    assert _check_parity(same, str(out), faces, 0.9999)["parity_min_cosine"] > 0.9999
    assert _check_parity(FlipFusion(same, "none"), str(out), faces, 0.9999)["parity_faces"] == 15


def test_export_verify_on_align_artifact_and_size_mismatch(tmp_path, tiny_ckpt, align_art):
    r = export(tiny_ckpt, "-o", tmp_path / "a.onnx", "--verify-on", align_art, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["parity_faces"] == len(FACES)  # the failed rows are skipped
    wide = tiny_payload()
    wide["arch_kwargs"] = {"feature_dim": 16, "input_size": [112, 112]}
    wide["input_size"] = [112, 112]
    from facecl.train.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "wide.pt", wide)
    r = export(tmp_path / "wide.pt", "-o", tmp_path / "w.onnx")
    assert r.exit_code == 1 and "no 112x112 aligned faces" in " ".join(r.output.split())
    assert not (tmp_path / "w.onnx").exists()


def test_onnx_backend_reads_the_spec_and_derives_it_for_older_exports(tmp_path, tiny_ckpt):
    from facecl.embed.backends import OnnxBackend, resolve_model
    from facecl.models.input_spec import InputSpec
    from facecl.train.checkpoint import checkpoint_input_spec

    out = tmp_path / "m.onnx"
    assert export(tiny_ckpt, "-o", out).exit_code == 0
    spec = checkpoint_input_spec(load_checkpoint(tiny_ckpt))
    meta = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert InputSpec.from_dict(json.loads(meta["input_spec"])) == spec
    assert OnnxBackend(resolve_model(out), "concat", False, "cpu").spec == spec
    # An export from before input_spec was written: the spec of its input_size's template.
    old = onnx.load(out)
    kept = [(p.key, p.value) for p in old.metadata_props if p.key != "input_spec"]
    del old.metadata_props[:]
    for k, v in kept:
        entry = old.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(old, tmp_path / "old.onnx")
    back = OnnxBackend(resolve_model(tmp_path / "old.onnx"), "concat", False, "cpu")
    assert back.spec == InputSpec.for_template("112x96") == spec
