"""B21-B25: pair files name images as other face libraries ship them (bare file names next
to the images); names resolve relative to the pairs file, the embedded root and the working
directory, stems only when they name one image, and an ambiguous name is an error naming
both files. A pairs file that is not UTF-8 is a one-line error."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from facecl.cli import app
from facecl.embed.artifact import read_embeddings
from facecl.errors import InputError
from facecl.verify.protocols import read_pairs_csv, resolve_pairs

from .hostile import CROPS, tiny_checkpoint

runner = CliRunner()


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """Real crops in one flat folder (x.jpg and x.png side by side) and their embeddings."""
    tmp = tmp_path_factory.mktemp("p")
    faces = tmp / "faces"
    faces.mkdir()
    crops = sorted(CROPS.glob("*.png"))
    for i, c in enumerate(crops[:4]):
        shutil.copy(c, faces / f"img{i + 1}.png")
    shutil.copy(crops[4], faces / "x.png")
    Image.open(crops[5]).convert("RGB").save(faces / "x.jpg", quality=95)
    ckpt = tiny_checkpoint(tmp / "tiny.pt")
    r = runner.invoke(app, ["embed", str(ckpt), str(faces), "--aligned", "-o", str(tmp / "e")])
    assert r.exit_code == 0, r.output
    return faces, read_embeddings(tmp / "e")


def _pairs(path, text):
    path.write_text(text, encoding="utf-8")
    return read_pairs_csv(path)


def test_bare_names_next_to_the_images_resolve_from_anywhere(embedded, tmp_path, monkeypatch):
    faces, emb = embedded
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    pairs = _pairs(faces / "pairs.csv", "img1.png,img2.png,1\nimg3.png,img4.png,0\n")
    res = resolve_pairs(emb, pairs)
    assert res.keep.all(), res.dropped
    want = [emb.keys.index(k) for k in ("img1", "img2", "img3", "img4")]
    assert [*res.idx_a, *res.idx_b] == [want[0], want[2], want[1], want[3]]


def test_names_relative_to_the_embedded_root_and_cwd(embedded, tmp_path, monkeypatch):
    faces, emb = embedded
    pairs = _pairs(tmp_path / "p.csv", "img1.png,img2.png,1\n")  # pairs file elsewhere
    assert resolve_pairs(emb, pairs).keep.all()  # relative to the embedded root
    monkeypatch.chdir(faces.parent)
    pairs = _pairs(tmp_path / "q.csv", "faces/img1.png,faces/img3.png,0\n")
    res = resolve_pairs(emb, pairs)  # relative to the working directory
    assert res.keep.all() and res.idx_b[0] == emb.keys.index("img3")


def test_same_stem_other_suffix_gets_its_own_vector(embedded, tmp_path):
    faces, emb = embedded
    jpg = emb.paths.index(str(faces / "x.jpg"))
    png = emb.paths.index(str(faces / "x.png"))
    pairs = _pairs(tmp_path / "p.csv", "x.png,x.jpg,0\n")
    res = resolve_pairs(emb, pairs)
    assert (res.idx_a[0], res.idx_b[0]) == (png, jpg)
    assert not np.allclose(emb.vectors[png], emb.vectors[jpg])
    moved = tmp_path / "other"  # no file at any base: stems decide, by suffix
    moved.mkdir()
    res = resolve_pairs(emb, _pairs(moved / "p.csv", "gone/x.png,gone/x.jpg,0\n"))
    assert res.idx_a[0] == -1  # folder 'gone' is not 'faces': no stem match
    res = resolve_pairs(emb, _pairs(moved / "p.csv", "x.png,img1.png,0\n"))
    assert res.idx_a[0] == png


def test_an_ambiguous_name_is_an_error_naming_both(embedded, tmp_path):
    faces, emb = embedded
    pairs = _pairs(tmp_path / "p.csv", "x,img1.png,0\n")
    with pytest.raises(InputError, match="fits more than one embedded image") as e:
        resolve_pairs(emb, pairs)
    assert str(faces / "x.jpg") in e.value.message and str(faces / "x.png") in e.value.message


def test_non_utf8_pairs_file_is_one_line_error(embedded, tmp_path):
    faces, _ = embedded
    bad = tmp_path / "pairs.csv"
    bad.write_bytes(b"img1.png,img2.png,1\nimg\xff.png,img2.png,0\n")
    with pytest.raises(
        InputError, match=r"pairs.csv:2: not UTF-8 text \(byte 0xff at offset \d+\)"
    ):
        read_pairs_csv(bad)
    emb_dir = tmp_path.parent / "p0" / "e"
    r = runner.invoke(app, ["verify", str(emb_dir), "--pairs", str(bad), "-o", str(tmp_path / "v")])
    assert r.exit_code == 1 and "not UTF-8" in r.stderr and "Traceback" not in r.output
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbfimg1.png,img2.png,1\n")
    assert read_pairs_csv(bom).a == ["img1.png"]
