"""`facecl embed` end to end through the CLI on real aligned faces and a tiny checkpoint."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from facecl.artifacts import StageOutput, read_manifest, sha256_file
from facecl.cli import app
from facecl.embed.artifact import EMBEDDINGS
from facecl.embed.features import preprocess
from facecl.embed.sources import read_rgb
from facecl.train.checkpoint import save_checkpoint
from facecl.verify.embeddings import load_embeddings

from .conftest import FACES, tiny_payload

runner = CliRunner()


def embed(*args):
    return runner.invoke(app, ["embed", *map(str, args)])


def read_h5(path):
    with h5py.File(path / EMBEDDINGS, "r") as f:
        return {k: f[k][()] for k in f}


def test_align_artifact_shape_dtype_keys_and_failures(tmp_path, tiny_ckpt, align_art):
    out = tmp_path / "emb"
    r = embed(tiny_ckpt, align_art, "-o", out, "--batch-size", 4, "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    n = len(FACES) + 3
    assert s["items"] == n and s["ok"] == len(FACES) and s["failed"] == 3 and s["dim"] == 32
    d = read_h5(out)
    assert d["embeddings"].dtype == np.float32 and d["embeddings"].shape == (n, 32)
    keys = [k.decode() for k in d["keys"]]
    status = [k.decode() for k in d["status"]]
    assert "Abdoulaye_Wade/Abdoulaye_Wade_0001" in keys
    by_key = dict(zip(keys, status, strict=True))
    assert by_key["Nobody/Nobody_0001"] == "no face"
    assert by_key["Gone/Gone_0001"] == "missing file"
    assert by_key["Broken/Broken_0001"] == "unreadable image"
    ok = np.array([s == "ok" for s in status])
    assert np.isfinite(d["embeddings"][ok]).all() and np.isnan(d["embeddings"][~ok]).all()
    assert d["paths"][0].decode().startswith("/photos/")
    # The vectors are the tiny net's concat features of the crops, computed here by hand.
    from facecl.train.checkpoint import build_backbone, load_checkpoint

    net = build_backbone(load_checkpoint(tiny_ckpt))
    row = keys.index("Abdoulaye_Wade/Abdoulaye_Wade_0001")
    img = read_rgb(align_art / "aligned" / "Abdoulaye_Wade" / "Abdoulaye_Wade_0001.png")
    x = torch.from_numpy(preprocess(img[None]))
    with torch.no_grad():
        want = torch.cat([net(x), net(torch.flip(x, [3]))], 1).numpy()[0]
    np.testing.assert_allclose(d["embeddings"][row], want, rtol=1e-4, atol=1e-5)
    # The manifest records the model hash, arch, fusion, normalisation and counts.
    m = read_manifest(out, stage="embed")
    assert m.extra["model_sha256"] == sha256_file(tiny_ckpt)
    assert m.extra["arch"] == "tiny" and m.extra["normalisation"].startswith("(x - 127.5) / 128")
    assert m.config["fusion"] == "concat" and m.config["l2"] is False
    assert m.counts["skipped"] == {"no face": 1, "missing file": 1, "unreadable image": 1}
    assert m.extra["files"][EMBEDDINGS] == sha256_file(out / EMBEDDINGS)
    # verify's reader accepts it and sees the failures.
    e = load_embeddings(out)
    assert e.dim == 32 and int(e.ok.sum()) == len(FACES)
    assert e.find("/photos/Abdoulaye_Wade/Abdoulaye_Wade_0001.jpg") == row


def test_rerun_is_noop_and_changed_config_needs_force(tmp_path, tiny_ckpt, align_art):
    out = tmp_path / "emb"
    assert embed(tiny_ckpt, align_art, "-o", out).exit_code == 0
    r = embed(tiny_ckpt, align_art, "-o", out, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["up_to_date"] is True
    r = embed(tiny_ckpt, align_art, "-o", out, "--fusion", "none")
    assert r.exit_code == 1 and "--force" in r.output
    r = embed(tiny_ckpt, align_art, "-o", out, "--fusion", "none", "--l2", "--force", "--json")
    assert r.exit_code == 0, r.output
    v = read_h5(out)["embeddings"]
    assert v.shape[1] == 16
    ok = np.isfinite(v).all(1)
    np.testing.assert_allclose(np.linalg.norm(v[ok], axis=1), 1.0, rtol=1e-5)
    assert read_manifest(out).config["l2"] is True


def test_align_artifact_and_crop_folder_give_same_vectors(tmp_path, tiny_ckpt, align_art, crops):
    a, b = tmp_path / "a", tmp_path / "b"
    assert embed(tiny_ckpt, align_art, "-o", a).exit_code == 0
    r = embed(tiny_ckpt, crops, "--aligned", "-o", b)
    assert r.exit_code == 0, r.output
    da, db = read_h5(a), read_h5(b)
    row_a = {k.decode(): i for i, k in enumerate(da["keys"])}
    for i, k in enumerate(db["keys"]):
        np.testing.assert_array_equal(db["embeddings"][i], da["embeddings"][row_a[k.decode()]])
    assert len(db["keys"]) == len(FACES)


def test_train_run_directory_is_accepted(tmp_path, tiny_ckpt, crops):
    so = StageOutput(tmp_path / "run", "train", {"arch": "tiny"}, [])
    work = so.begin()
    (work / "checkpoints").mkdir()
    (work / "checkpoints" / "last.pt").write_bytes(tiny_ckpt.read_bytes())
    so.commit({"processed": 1})
    r = embed(tmp_path / "run", crops, "--aligned", "-o", tmp_path / "e", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["model_sha256"] == sha256_file(tiny_ckpt)


@pytest.mark.parametrize("with_flip", [False, True])
def test_onnx_embed_equals_torch_embed(tmp_path, tiny_ckpt, align_art, with_flip):
    onnx_file = tmp_path / "m.onnx"
    args = ["export", str(tiny_ckpt), "-o", str(onnx_file)] + (["--with-flip"] if with_flip else [])
    assert runner.invoke(app, args).exit_code == 0
    t, o = tmp_path / "t", tmp_path / "o"
    assert embed(tiny_ckpt, align_art, "-o", t, "--batch-size", 5).exit_code == 0
    r = embed("--onnx", onnx_file, align_art, "-o", o, "--batch-size", 5, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["backend"] == "onnxruntime"
    dt, do = read_h5(t), read_h5(o)
    assert dt["keys"].tolist() == do["keys"].tolist()
    assert dt["status"].tolist() == do["status"].tolist()
    np.testing.assert_allclose(do["embeddings"], dt["embeddings"], rtol=1e-4, atol=1e-5)
    assert read_manifest(o).extra["model_sha256"] == sha256_file(onnx_file)


def test_onnx_with_baked_fusion_refuses_another_fusion(tmp_path, tiny_ckpt, crops):
    onnx_file = tmp_path / "m.onnx"
    r = runner.invoke(app, ["export", str(tiny_ckpt), "-o", str(onnx_file), "--with-flip"])
    assert r.exit_code == 0, r.output
    r = embed("--onnx", onnx_file, crops, "--aligned", "-o", tmp_path / "e", "--fusion", "sum")
    assert r.exit_code == 2 and "built in" in r.output


def test_wrong_crop_size_is_recorded_not_dropped(tmp_path, tiny_ckpt, crops):
    import cv2

    folder = tmp_path / "mixed" / "Someone"
    folder.mkdir(parents=True)
    cv2.imwrite(str(folder / "Someone_0001.png"), np.zeros((112, 112, 3), np.uint8))
    cv2.imwrite(str(folder / "Someone_0002.png"), np.full((112, 96, 3), 90, np.uint8))
    r = embed(tiny_ckpt, tmp_path / "mixed", "--aligned", "-o", tmp_path / "e", "--json")
    assert r.exit_code == 0, r.output
    d = read_h5(tmp_path / "e")
    assert [s.decode() for s in d["status"]] == ["crop is 112x112, model expects 112x96", "ok"]
    assert np.isnan(d["embeddings"][0]).all() and np.isfinite(d["embeddings"][1]).all()


def test_image_list_input(tmp_path, tiny_ckpt, crops):
    files = sorted(crops.rglob("*.png"))[:3]
    lst = tmp_path / "list.txt"
    lst.write_text(
        "# three faces and a missing one\n" + "\n".join(map(str, files)) + "\nnope.png\n"
    )
    r = embed(tiny_ckpt, lst, "--aligned", "-o", tmp_path / "e", "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert (s["items"], s["ok"], s["skipped"]) == (4, 3, {"missing file": 1})


# ----------------------------------------------------------------- clear errors


def one_line_error(r, code=1):
    """Exit ``code``, no traceback, and a single 'error: ...' message (the test console
    wraps it at 80 columns, so whitespace is normalised)."""
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output
    text = " ".join(r.output.split())
    assert text.startswith("error:") and text.count("error:") == 1, r.output
    return text


def test_corrupted_checkpoint_is_a_clear_error(tmp_path, tiny_ckpt, crops):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(tiny_ckpt.read_bytes()[:3000])
    out = one_line_error(embed(bad, crops, "--aligned", "-o", tmp_path / "e"))
    assert "not a readable checkpoint" in out
    assert not (tmp_path / "e").exists() and not (tmp_path / "e.partial").exists()
    out = one_line_error(runner.invoke(app, ["export", str(bad), "-o", str(tmp_path / "m.onnx")]))
    assert "not a readable checkpoint" in out and not (tmp_path / "m.onnx").exists()


def test_checkpoint_of_another_architecture_is_a_clear_error(tmp_path, crops):
    other = tiny_payload(feature_dim=16)
    other["arch_kwargs"] = {"feature_dim": 32}  # says 32-d, holds 16-d weights
    save_checkpoint(tmp_path / "other.pt", other)
    out = one_line_error(embed(tmp_path / "other.pt", crops, "--aligned", "-o", tmp_path / "e"))
    assert "do not fit architecture 'tiny'" in out
    unknown = tiny_payload()
    unknown["arch"] = "resnet1000"
    save_checkpoint(tmp_path / "unknown.pt", unknown)
    out = one_line_error(embed(tmp_path / "unknown.pt", crops, "--aligned", "-o", tmp_path / "e"))
    assert "unknown backbone 'resnet1000'" in out


def test_other_clear_errors(tmp_path, tiny_ckpt, crops, align_art):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.pt")
    assert "not a facecl checkpoint" in one_line_error(
        embed(tmp_path / "plain.pt", crops, "-o", tmp_path / "e")
    )
    assert "input not found" in one_line_error(
        embed(tiny_ckpt, tmp_path / "nope", "-o", tmp_path / "e")
    )
    assert "'align' artifact, expected 'train'" in one_line_error(
        embed(align_art, crops, "-o", tmp_path / "e")
    )
    r = embed(tiny_ckpt, crops, "-o", tmp_path / "e", "--fusion", "cat")
    assert r.exit_code == 2  # a choice: Typer lists the valid names
    assert "'concat', 'sum', 'mean', 'none'" in " ".join(r.output.replace("│", " ").split())
    if not torch.cuda.is_available():
        out = one_line_error(
            embed(tiny_ckpt, crops, "-o", tmp_path / "e", "--device", "cuda"), code=2
        )
        assert "CUDA is not available" in out and "--device cpu" in out
    one_line_error(embed(tiny_ckpt, "-o", tmp_path / "e"), code=2)


def test_pack_artifact_gives_same_vectors_as_its_align_artifact(tmp_path, tiny_ckpt, crops):
    from .conftest import make_align_artifact

    aligned = make_align_artifact(tmp_path / "aligned", crops, extra_rows=False)
    r = runner.invoke(app, ["pack", str(aligned), "-o", str(tmp_path / "pack"), "--shard-size", 4])
    assert r.exit_code == 0, r.output
    a, p = tmp_path / "a", tmp_path / "p"
    assert embed(tiny_ckpt, aligned, "-o", a).exit_code == 0
    r = embed(tiny_ckpt, tmp_path / "pack", "-o", p, "--batch-size", 3, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["ok"] == len(FACES)
    da, dp = read_h5(a), read_h5(p)
    row = {k: i for i, k in enumerate(da["keys"])}
    assert sorted(dp["keys"].tolist()) == sorted(da["keys"].tolist())
    for i, k in enumerate(dp["keys"]):
        np.testing.assert_allclose(dp["embeddings"][i], da["embeddings"][row[k]], atol=1e-5)
    assert read_manifest(p).extra["input_kind"] == "pack"


def test_fusion_choices_are_the_registry():
    """EmbedConfig's Literal (cheap for --help) names exactly the registered fusions."""
    from typing import get_args

    from facecl.embed.config import Fusion
    from facecl.embed.features import FUSIONS

    assert sorted(get_args(Fusion)) == FUSIONS.names()
