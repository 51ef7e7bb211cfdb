"""insightface verification .bin sets: the safe reader, and `facecl embed RUN set.bin`."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from facecl.cli import app
from facecl.embed.artifact import EMBEDDINGS
from facecl.embed.binfit import template_offset
from facecl.embed.binset import read_bin, write_bin
from facecl.embed.features import preprocess
from facecl.errors import InputError
from facecl.train.checkpoint import build_backbone, load_checkpoint
from facecl.verify.embeddings import load_embeddings

DATA = Path(__file__).resolve().parents[1] / "data"
BINS = DATA / "insightface"
PY2, PY3, EVIL = BINS / "lfw_mini_py2.bin", BINS / "lfw_mini_py3.bin", BINS / "evil.bin"
EVIL_MARKER = Path("/tmp/facecl_evil_bin_ran")  # what evil.bin's shell command creates
runner = CliRunner()


def pairs_txt_issame() -> list[bool]:
    """The same/different flags of lfw_mini/pairs.txt, in file order (the .bin's source)."""
    lines = (DATA / "lfw_mini" / "pairs.txt").read_text().split("\n")[1:]
    return [len(ln.split()) == 3 for ln in lines if ln.strip()]


def decode(data: bytes) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), 4)


# --------------------------------------------------------------------------- reader


def test_both_pickle_styles_read_the_same_set():
    a, b = read_bin(PY2), read_bin(PY3)
    assert a.images == b.images and len(a.images) == 120
    assert a.issame.tolist() == b.issame.tolist() == pairs_txt_issame()
    img = decode(a.images[0])
    assert img.shape == (112, 112, 3) and img.dtype == np.uint8
    # The reader gives what pickle itself would (on a file we trust).
    with open(PY3, "rb") as f:
        bins, issame = pickle.load(f)
    assert bins == b.images and issame == b.issame.tolist()


def test_write_bin_round_trip(tmp_path):
    imgs = read_bin(PY3).images[:4]
    p = write_bin(tmp_path / "s.bin", imgs, [True, False])
    back = read_bin(p)
    assert back.images == imgs and back.issame.tolist() == [True, False]


class _Runs:
    """Unpickling this runs a shell command that creates a file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_evil_pickles_are_refused_and_never_run(tmp_path):
    marker = tmp_path / "ran"
    for proto in (2, 4):
        evil = tmp_path / f"evil{proto}.bin"
        evil.write_bytes(pickle.dumps(([b"x", _Runs(marker)], [True]), protocol=proto))
        with pytest.raises(InputError, match=r"refused: opcode (STACK_)?GLOBAL|SHORT_BINUNICODE"):
            read_bin(evil)
    assert not marker.exists()
    with pytest.raises(InputError, match=r"refused: opcode GLOBAL 'posix system' at byte 5"):
        read_bin(EVIL)


@pytest.mark.parametrize(
    "value, match",
    [
        (np.ones(2, bool), "refused: opcode"),  # numpy arrays need GLOBAL: not allowed
        (([b"a", b"b", b"c"], [True]), "3 images for 1 pairs"),
        (([b"a", b"b"], [b"x"]), "not a list of bools"),
        ([b"a", b"b"], "not \\(bins, issame\\)"),
    ],
)
def test_other_contents_are_refused(tmp_path, value, match):
    p = tmp_path / "x.bin"
    p.write_bytes(pickle.dumps(value, protocol=4))
    with pytest.raises(InputError, match=match):
        read_bin(p)


def test_truncated_file_is_one_error(tmp_path):
    p = tmp_path / "cut.bin"
    p.write_bytes(PY3.read_bytes()[:5000])
    with pytest.raises(InputError, match="cut.bin"):
        read_bin(p)


def test_cli_refuses_evil_bin_in_one_line_and_its_command_never_runs(tmp_path, tiny_ckpt):
    EVIL_MARKER.unlink(missing_ok=True)
    out = tmp_path / "emb"
    r = subprocess.run(
        [sys.executable, "-m", "facecl", "embed", str(tiny_ckpt), str(EVIL), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "refused" in lines[0] and "Traceback" not in r.stderr
    assert not EVIL_MARKER.exists() and not out.exists()


# --------------------------------------------------------------------------- embed


def test_arcface_window_of_the_112x96_template():
    assert template_offset("112x96") == (0, 8)
    assert template_offset("112x112") == (0, 0)


def embed(model, src, out, *extra):
    r = runner.invoke(app, ["embed", str(model), str(src), "-o", str(out), "--json", *extra])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_both_styles_give_the_same_embeddings_and_store_the_pairs(tmp_path, tiny_ckpt_112):
    s2 = embed(tiny_ckpt_112, PY2, tmp_path / "e2")
    s3 = embed(tiny_ckpt_112, PY3, tmp_path / "e3")
    assert s2["items"] == s3["items"] == 120 and s2["ok"] == 120
    e2, e3 = load_embeddings(tmp_path / "e2"), load_embeddings(tmp_path / "e3")
    assert np.array_equal(e2.vectors, e3.vectors)
    assert e2.issame is not None and e2.issame.tolist() == pairs_txt_issame()
    assert e2.keys[:2] == ["lfw_mini_py2/000000", "lfw_mini_py2/000001"]
    with h5py.File(tmp_path / "e3" / EMBEDDINGS) as f:
        assert f["issame"].shape == (60,)
    m = json.loads((tmp_path / "e3" / "manifest.json").read_text())
    assert m["extra"]["input_kind"] == "bin" and m["extra"]["bin_pairs"] == 60
    assert m["extra"]["bin_fit"].startswith("as stored")
    # Row 0 is the net's concat features of the first crop, computed here by hand.
    net = build_backbone(load_checkpoint(tiny_ckpt_112))
    x = torch.from_numpy(preprocess(decode(read_bin(PY3).images[0])[None]))
    with torch.no_grad():
        ref = torch.cat([net(x), net(torch.flip(x, dims=[3]))], 1).numpy()[0]
    np.testing.assert_allclose(e3.vectors[0], ref, rtol=1e-5, atol=1e-5)


def test_112x96_model_gets_columns_8_to_104(tmp_path, tiny_ckpt):
    s = embed(tiny_ckpt, PY3, tmp_path / "e")
    assert s["ok"] == 120
    e = load_embeddings(tmp_path / "e")
    m = json.loads((tmp_path / "e" / "manifest.json").read_text())
    assert "columns 8..104" in m["extra"]["bin_fit"] and "112x96" in m["extra"]["bin_fit"]
    net = build_backbone(load_checkpoint(tiny_ckpt))
    crop = decode(read_bin(PY3).images[7])[:, 8:104]
    x = torch.from_numpy(preprocess(crop[None]))
    with torch.no_grad():
        ref = torch.cat([net(x), net(torch.flip(x, dims=[3]))], 1).numpy()[0]
    np.testing.assert_allclose(e.vectors[7], ref, rtol=1e-5, atol=1e-5)


def test_a_corrupt_image_in_the_bin_is_counted_not_fatal(tmp_path, tiny_ckpt):
    bs = read_bin(PY3)
    imgs = list(bs.images[:8])
    imgs[3] = b"not a jpeg"
    p = write_bin(tmp_path / "bad.bin", imgs, bs.issame[:4].tolist())
    s = embed(tiny_ckpt, p, tmp_path / "e")
    assert s["ok"] == 7 and s["skipped"] == {"unreadable image in .bin": 1}
