"""`facecl export --insightface`: loaded by insightface's own model_zoo, same vectors."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from facecl.cli import app
from facecl.embed.binset import read_bin
from facecl.embed.export import cosine_rows
from facecl.verify.embeddings import load_embeddings

BIN = Path(__file__).resolve().parents[1] / "data" / "insightface" / "lfw_mini_py3.bin"
runner = CliRunner()


def bgr_crops() -> list[np.ndarray]:
    """The .bin's 112x112 ArcFace crops as insightface's callers hold them (cv2, BGR)."""
    return [
        cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR) for b in read_bin(BIN).images
    ]


def export(ckpt, out, *extra):
    r = runner.invoke(app, ["export", str(ckpt), "-o", str(out), "--insightface", "--json", *extra])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


@pytest.mark.parametrize("model", ["tiny_ckpt", "tiny_ckpt_112"])
def test_insightface_model_zoo_loads_it_and_gives_facecl_embeddings(tmp_path, request, model):
    insightface = pytest.importorskip("insightface")
    ckpt = request.getfixturevalue(model)
    out = tmp_path / "m.onnx"
    rep = export(ckpt, out, "--verify-on", BIN)
    assert rep["parity_min_cosine"] >= 0.9999 and rep["input_size"] == [112, 112]

    rec = insightface.model_zoo.get_model(str(out))
    assert type(rec).__name__ == "ArcFaceONNX" and rec.taskname == "recognition"
    # Sub and Mul found among the first nodes: insightface feeds raw 0..255 pixels.
    assert (rec.input_mean, rec.input_std, rec.input_size) == (0.0, 1.0, (112, 112))
    got = rec.get_feat(bgr_crops())  # (120, 16)

    r = runner.invoke(app, ["embed", str(ckpt), str(BIN), "-o", str(tmp_path / "e"),
                            "--fusion", "none"])  # fmt: skip
    assert r.exit_code == 0, r.output
    want = load_embeddings(tmp_path / "e").vectors  # FC1 of the fitted crops, torch
    assert got.shape == want.shape == (120, 16)
    assert cosine_rows(got, want).min() >= 0.9999


def test_graph_input_normalisation_and_single_output(tmp_path, tiny_ckpt):
    out = tmp_path / "m.onnx"
    export(tiny_ckpt, out)  # parity on the bundled 112x96 faces placed in their window
    m = onnx.load(out)
    names = [n.name for n in m.graph.node[:3]]
    assert names == ["Sub_normalise", "Mul_normalise", "Slice_template"]
    assert [n.op_type for n in m.graph.node[:3]] == ["Sub", "Mul", "Slice"]
    dims = [d.dim_value or d.dim_param for d in m.graph.input[0].type.tensor_type.shape.dim]
    assert m.graph.input[0].name == "data" and dims == ["batch", 3, 112, 112]
    assert [o.name for o in m.graph.output] == ["fc1"]
    meta = {p.key: p.value for p in m.metadata_props}
    assert meta["input_size"] == "112x112" and meta["mean"] == "0" and meta["scale"] == "1"
    assert json.loads(meta["backbone_input_spec"])["size"] == [112, 96]


def test_facecl_embed_onnx_runs_the_insightface_export(tmp_path, tiny_ckpt):
    out = tmp_path / "m.onnx"
    export(tiny_ckpt, out, "--verify-on", BIN)
    for name, args in (("t", [str(tiny_ckpt), str(BIN)]), ("o", ["--onnx", str(out), str(BIN)])):
        r = runner.invoke(app, ["embed", *args, "-o", str(tmp_path / name)])
        assert r.exit_code == 0, r.output
    a, b = load_embeddings(tmp_path / "t").vectors, load_embeddings(tmp_path / "o").vectors
    assert cosine_rows(a, b).min() >= 0.9999


def test_insightface_with_flip_is_a_usage_error(tmp_path, tiny_ckpt):
    r = runner.invoke(
        app, ["export", str(tiny_ckpt), "-o", str(tmp_path / "m.onnx"), "--insightface",
              "--with-flip"],
    )  # fmt: skip
    assert r.exit_code != 0 and "drop --with-flip" in r.output
    assert not (tmp_path / "m.onnx").exists()
