"""Decoding anything without crashing, listings, landmark files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from facecl.align.io import LandmarkTable, decode_image, list_file, list_tree, safe_component
from facecl.errors import InputError


@pytest.fixture
def face(mini_paths) -> Image.Image:
    return Image.open(mini_paths[0]).convert("RGB")


def test_decodes_every_mode_to_rgb(tmp_path, face):
    arr = np.asarray(face)
    gray = face.convert("L")
    cases = {
        "rgb.png": (face, "png", ()),
        "gray.jpg": (gray, "jpeg", ("grayscale",)),
        "rgba.png": (face.convert("RGBA"), "png", ("alpha",)),
        "pal.png": (face.quantize(64), "png", ("palette",)),
        "g16.png": (Image.fromarray(np.asarray(gray).astype(np.uint16) * 257), "png", ("16bit",)),
        "cmyk.jpg": (face.convert("CMYK"), "jpeg", ("cmyk",)),
        "bw.png": (face.convert("1"), "png", ("grayscale",)),
        "la.png": (face.convert("LA"), "png", ("alpha",)),
    }
    for name, (im, fmt, notes) in cases.items():
        im.save(tmp_path / name, fmt)
        d = decode_image(tmp_path / name)
        assert d.reason == "", (name, d.detail)
        assert d.image.shape == arr.shape and d.image.dtype == np.uint8, name
        for n in notes:
            assert n in d.notes, (name, d.notes)
    # lossless ones equal the source
    assert np.array_equal(decode_image(tmp_path / "rgb.png").image, arr)
    g16 = decode_image(tmp_path / "g16.png").image
    assert np.abs(g16[..., 0].astype(int) - np.asarray(gray)).max() <= 1
    cmyk = decode_image(tmp_path / "cmyk.jpg").image
    assert np.abs(cmyk.astype(int) - arr).mean() < 8  # JPEG loss only, not inverted


def test_exif_orientation_is_applied(tmp_path, face):
    stored = face.transpose(Image.Transpose.ROTATE_90)  # stored rotated, EXIF says turn back
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    stored.save(tmp_path / "rot.jpg", "jpeg", exif=exif, quality=95)
    d = decode_image(tmp_path / "rot.jpg")
    assert "exif_rotated" in d.notes
    assert d.image.shape == np.asarray(face).shape
    assert np.abs(d.image.astype(int) - np.asarray(face)).mean() < 6


@pytest.mark.parametrize(
    "name,data,reason",
    [
        ("empty.jpg", b"", "empty_file"),
        ("text.jpg", b"hello, this is not an image\n" * 10, "not_an_image"),
        ("photo.heic", b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64, "unsupported_format"),
        ("fake.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "unsupported_format"),
    ],
)
def test_bad_bytes_get_a_reason(tmp_path, name, data, reason):
    (tmp_path / name).write_bytes(data)
    d = decode_image(tmp_path / name)
    assert d.image is None and d.reason == reason and d.detail


def test_truncated_missing_and_directories(tmp_path, mini_paths):
    data = mini_paths[0].read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    d = decode_image(tmp_path / "cut.jpg")
    assert d.reason == "truncated", d.detail
    assert decode_image(tmp_path / "nope.jpg").reason == "missing"
    assert decode_image(tmp_path).reason == "read_error"


def test_too_large_and_jpeg_draft(tmp_path, face):
    big = face.resize((1200, 1200))
    big.save(tmp_path / "big.png")
    big.save(tmp_path / "big.jpg", quality=90)
    assert decode_image(tmp_path / "big.png", max_pixels=1_000_000).reason == "too_large"
    d = decode_image(tmp_path / "big.jpg", max_pixels=1_000_000)
    assert d.reason == "" and "reduced" in d.notes
    assert d.image.shape[0] * d.image.shape[1] <= 1_000_000
    assert (d.width, d.height) == (1200, 1200) and d.scale[0] > 1


def test_safe_component():
    for bad in ["", ".", "..", "a/b", "a\\b", "x\x00y", "x\ny"]:
        assert not safe_component(bad)
    for ok in ["Aaron_Eckhart", "José María", "a.b", "-x"]:
        assert safe_component(ok)


def test_list_tree(tmp_path):
    for rel in [
        "A/1.jpg",
        "A/1.png",
        "A/sub/2.jpg",
        "B/3.jpg",
        "top.jpg",
        ".hidden/x.jpg",
        "A/.DS_Store",
        "a\\b/4.jpg",
    ]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    items, notes = list_tree(tmp_path)
    by = {i.source: i for i in items}
    assert notes["ignored_hidden"] == 2
    assert by["A/1.jpg"].base == "A/1.jpg" and by["A/1.png"].base == "A/1.png"  # collision
    assert by["A/sub/2.jpg"].base == "A/sub/2" and by["A/sub/2.jpg"].identity == "A"
    assert by["B/3.jpg"].base == "B/3"
    assert by["top.jpg"].problem == "no_identity"
    assert by["a\\b/4.jpg"].problem == "unsafe_name"
    assert [i.index for i in items] == list(range(len(items)))


def test_list_file(tmp_path):
    (tmp_path / "imgs").mkdir()
    lst = tmp_path / "list.txt"
    lst.write_text(
        "# comment\n"
        "imgs/a.jpg Alice\n"
        "imgs/my photo.jpg Bob\n"
        "imgs/c.jpg ../evil\n"
        "imgs/...jpg Carol\n"
        "/abs/path/Dave/d.jpg\n"
        "other/a.jpg Alice\n"
    )
    items, _ = list_file(lst)
    assert [i.identity for i in items] == ["Alice", "Bob", "../evil", "Carol", "Dave", "Alice"]
    assert items[0].path == tmp_path / "imgs/a.jpg" and items[0].source == "imgs/a.jpg"
    assert items[1].source == "imgs/my photo.jpg" and items[1].base == "Bob/my photo"
    assert items[2].problem == "unsafe_name" and items[3].problem == "unsafe_name"
    assert str(items[4].path) == "/abs/path/Dave/d.jpg"
    assert items[0].base != items[5].base  # same identity and stem: disambiguated


def test_landmark_table(tmp_path):
    f = tmp_path / "lm.txt"
    f.write_text("A/x y.jpg " + " ".join(str(v) for v in range(10)) + "\nB/z.jpg " + "1 " * 10)
    t = LandmarkTable.read(f)
    assert len(t) == 2 and t.entries["A/x y.jpg"][4].tolist() == [8.0, 9.0]
    (tmp_path / "bad.txt").write_text("A/x.jpg 1 2 3\n")
    with pytest.raises(InputError, match="bad.txt:1"):
        LandmarkTable.read(tmp_path / "bad.txt")
