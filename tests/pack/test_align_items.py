"""Pack's align input as columns (issue 17 item 3): each Item made on demand is the one the
per-row list gave (key, identity, file, source, sha256), and a crop key listed by two
artifacts is still refused, naming both files."""

from __future__ import annotations

from pathlib import Path

import pytest

from facecl.align.artifact import crop_hashes, read_faces
from facecl.errors import InputError
from facecl.pack.inputs import Item, align_input

from .helpers import lfw_mini_people, make_align_artifact


def _oracle(artifact: Path) -> list[Item]:
    """The items as the reader built them before the columns: one per row with a crop."""
    hashes = crop_hashes(artifact)
    out = []
    for r in read_faces(artifact):
        if r.output and r.status != "skipped":
            key = Path(r.output).with_suffix("").relative_to("aligned").as_posix()
            out.append(Item(key, r.identity, artifact / r.output, r.source, -1, hashes[r.output]))
    return out


def test_items_made_on_demand_equal_the_rows(tmp_path):
    people = lfw_mini_people(max_per_identity=2)
    a = make_align_artifact(tmp_path, dict(list(people.items())[:4]), name="a", no_face=2)
    b = make_align_artifact(tmp_path, dict(list(people.items())[4:7]), name="b")
    got = align_input([a, b])
    want = _oracle(a) + _oracle(b)
    assert list(got.items) == want and len(got.items) == len(want)
    assert got.items[-1] == want[-1] and got.items[1:3] == want[1:3]
    assert [s["reason"] for s in got.skipped] == ["align:no_face", "align:too_small"]
    assert got.rows == len(want) + 2


def test_a_key_in_two_artifacts_is_refused(tmp_path):
    people = dict(list(lfw_mini_people(max_per_identity=1).items())[:3])
    a = make_align_artifact(tmp_path, people, name="a")
    b = make_align_artifact(tmp_path, dict(list(people.items())[1:2]), name="b")
    key = next(iter(_oracle(b))).key
    with pytest.raises(InputError, match=f"image '{key}' appears twice") as e:
        align_input([a, b])
    assert str(a / "aligned" / f"{key}.png") in str(e.value)
    assert str(b / "aligned" / f"{key}.png") in str(e.value)
