"""B1-B9: one listing for align and embed; every entry of a hostile tree is a row with its
reason or a counted skip (hidden files), never lost and never a crash."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from facecl.align.io import decode_image, list_source, list_tree
from facecl.artifacts import input_ref
from facecl.embed.sources import list_photos

from .hostile import CROPS, build, photo


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    return build(tmp_path_factory.mktemp("h"))


def test_align_listing_accounts_for_every_entry(hostile):
    items, notes = list_tree(hostile.root)
    listed = {i.source: i.problem for i in items}
    expected = {s: r if r in ("link_loop", "unsafe_name", "no_identity", "read_error") else ""
                for s, r in hostile.rows.items()}  # fmt: skip
    assert listed == expected
    assert notes["ignored_hidden"] == hostile.hidden  # 1 file + a folder of 3: 4, not 2


def test_embed_lists_the_same_entries_as_align(hostile):
    items, _ = list_tree(hostile.root)
    photos, notes = list_photos(hostile.root)
    assert [p.path for p in photos] == [i.path for i in items]
    assert notes == {"ignored_hidden": hostile.hidden}
    problems = {p.key: p.problem for p in photos if p.problem}
    assert sorted(problems.values()) == sorted(
        i.problem for i in items if i.problem and i.problem != "no_identity"
    )
    # keyed like align's output names: <identity>/<stem>; a root file by its stem
    keys = {p.key for p in photos}
    assert {"Ann_Veneman/Ann_Veneman_0002", "Linked/a1", "Odd/photo_without_extension"} <= keys
    assert "root_photo" in keys and not any(k.startswith(".") for k in keys)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("Bad/truncated.jpg", "truncated"),
        ("Bad/bad_crc.png", "corrupt"),
        ("Bad/empty.jpg", "empty_file"),
        ("Bad/text.jpg", "not_an_image"),
        ("Bad/dangling.jpg", "missing"),
    ],
)
def test_damaged_files_decode_to_their_reason(hostile, name, reason):
    assert decode_image(hostile.root / name).reason == reason


def test_read_by_content_whatever_the_extension(hostile):
    for name in ("Odd/photo_without_extension", "Odd/gif_photo.gif", "Linked/a1.jpg"):
        d = decode_image(hostile.root / name)
        assert d.reason == "" and d.image is not None and d.image.shape == (150, 150, 3)


def test_png_with_a_bad_idat_crc_is_corrupt_not_garbage(tmp_path):
    good = sorted(CROPS.glob("*.png"))[0]
    assert decode_image(good).reason == ""
    from .hostile import bad_crc_png

    bad_crc_png(tmp_path / "x.png")
    d = decode_image(tmp_path / "x.png")
    assert (d.reason, d.image) == ("corrupt", None) and "CRC" in d.detail


def test_unreadable_folder_is_a_row(tmp_path):
    """chmod 000 (as a non-root user: root reads through it; the PATH_MAX folder of the
    hostile tree covers root)."""
    root = tmp_path / "t"
    (root / "Locked").mkdir(parents=True)
    shutil.copy(photo("AJ_Lamas"), root / "Locked" / "x.jpg")
    os.chmod(root / "Locked", 0)
    try:
        if os.access(root / "Locked", os.R_OK):
            pytest.skip("running as root: chmod 000 does not stop root from reading")
        items, _ = list_tree(root)
        assert [(i.source, i.problem) for i in items] == [("Locked", "read_error")]
    finally:
        os.chmod(root / "Locked", 0o755)


def test_list_file_with_bom_and_non_utf8_line(tmp_path):
    (tmp_path / "A").mkdir()
    shutil.copy(photo("AJ_Lamas"), tmp_path / "A" / "a.jpg")
    shutil.copy(photo("AJ_Lamas"), os.fsencode(tmp_path) + b"/A/\xff.jpg")
    lst = tmp_path / "list.txt"
    lst.write_bytes(b"\xef\xbb\xbfA/a.jpg\nA/\xff.jpg\n")
    items, _ = list_source(lst)
    assert [(i.source, i.identity, i.problem) for i in items] == [
        ("A/a.jpg", "A", ""),  # the BOM is not part of the first path
        ("A/\\xff.jpg", "A", "unsafe_name"),
    ]
    photos, _ = list_photos(lst)
    assert [(p.key, p.problem) for p in photos] == [("A/a", ""), ("A/\\xff", "unsafe_name")]


def test_tree_hash_sees_names_links_and_edits(tmp_path, hostile):
    """B13/B34: the tree hash never crashes on a non-UTF-8 name, follows folder links, and
    changes on an in-place edit (also inside a linked folder); a new mtime alone (a touch,
    a copy, a re-mount) is the same content and the same hash."""
    before = input_ref(hostile.root)["sha256"]
    assert input_ref(hostile.root)["sha256"] == before
    target = hostile.root / "Linked" / "a1.jpg"  # inside the linked folder
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert input_ref(hostile.root)["sha256"] == before
    original = target.read_bytes()
    try:
        target.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))  # same size
        assert input_ref(hostile.root)["sha256"] != before
    finally:
        target.write_bytes(original)
    assert input_ref(hostile.root)["sha256"] == before


def test_listing_a_missing_source_is_one_error(tmp_path):
    from facecl.errors import InputError

    with pytest.raises(InputError, match="input not found"):
        list_source(Path(tmp_path / "nope"))


def test_a_link_to_a_folder_of_the_tree_is_the_duplicate(tmp_path):
    """Whatever the names' order, the real folder is listed and the link is the
    ``link_loop`` row."""
    root = tmp_path / "t"
    (root / "Zed").mkdir(parents=True)
    shutil.copy(photo("AJ_Lamas"), root / "Zed" / "z.jpg")
    (root / "Alias").symlink_to(root / "Zed", target_is_directory=True)
    items, _ = list_tree(root)
    assert [(i.source, i.problem) for i in items] == [("Alias", "link_loop"), ("Zed/z.jpg", "")]


def test_gallery_folder_lists_like_align(tmp_path, hostile):
    """B58: verify's gallery/probe folder goes through scan_tree: every entry of the
    hostile tree is a matched row or a recorded reason (link loop, unreadable folder,
    non-UTF-8 name, never embedded), extension-less files included, hidden files counted."""
    import numpy as np

    from facecl.verify.embeddings import load_embeddings
    from facecl.verify.protocols import select_images
    from tests.verify.helpers import make_embed_artifact

    items, _ = list_tree(hostile.root)
    good = [i for i in items if not i.problem]
    embedded = good[::2]  # half of the readable files were embedded
    keys = [f"{i.identity}/{Path(i.source).stem}" for i in embedded]
    paths = [str(i.path) for i in embedded]
    vecs = np.random.default_rng(0).normal(size=(len(keys), 4))
    emb = load_embeddings(make_embed_artifact(tmp_path, keys, vecs, paths=paths))
    rows, missing, notes = select_images(emb, hostile.root)
    assert sorted(rows.tolist()) == list(range(len(embedded)))
    assert notes == {"ignored_hidden": hostile.hidden}
    root_files = [i for i in items if i.problem == "no_identity"]  # rows of their own here
    assert len(rows) + len(missing) == len(items)
    reasons = sorted(missing.values())
    want = sorted(
        [i.problem for i in items if i.problem and i.problem != "no_identity"]
        + ["not in embeddings"] * (len(good) - len(embedded) + len(root_files))
    )
    assert reasons == want
    assert any("\\x" in k for k, r in missing.items() if r == "unsafe_name")
