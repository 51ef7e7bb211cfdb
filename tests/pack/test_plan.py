"""The pack plan as column arrays equals the plan made the plain way, an object per image."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from facecl.pack.config import PackConfig
from facecl.pack.inputs import ALIGN, RECORDIO, open_input, path_list
from facecl.pack.overlap import load_name_list
from facecl.pack.stage import make_plan, split_identity

REC = Path(__file__).resolve().parents[1] / "data" / "insightface" / "lfw_mini_rec"


def plain_plan(items, config, removed):
    """The oracle: group items by identity, drop ``removed`` and small identities, labels by
    sorted name, each identity's items by key, validation keys from split_identity."""
    by_id = defaultdict(list)
    for it in items:
        by_id[it.identity].append(it)
    kept = sorted(i for i in by_id if i not in removed and len(by_id[i]) >= config.min_images)
    out = {"train": [], "val": []}
    for label, ident in enumerate(kept):
        group = sorted(by_id[ident], key=lambda it: it.key)
        val = split_identity([it.key for it in group], ident, config.val_fraction, config.seed)
        for it in group:
            out["val" if it.key in val else "train"].append((it, label))
    return kept, out


@pytest.mark.parametrize("kind", [ALIGN, RECORDIO])
def test_column_plan_equals_the_plain_plan(kind, aligned, tmp_path):
    inputs = path_list([aligned if kind == ALIGN else REC])
    source = open_input(kind, inputs)
    idents = sorted({it.identity for it in source.items})
    names = tmp_path / "names.txt"
    names.write_text("\n".join(idents[:3]) + "\n")
    lists = [load_name_list(str(names))] if kind == ALIGN else []
    config = PackConfig(shard_size=7, val_fraction=0.3, seed=3, min_images=2)
    plan = make_plan(source, config, lists)
    removed = set(idents[:3]) if kind == ALIGN else set()
    classes, want = plain_plan(source.items, config, removed)

    assert plan.classes == classes
    assert plan.n_images == len(want["train"]) + len(want["val"]) > 0 and want["val"]
    for split in ("train", "val"):
        assert plan.index[split].dtype == np.int64 and plan.labels[split].dtype == np.int32
        got = [c for s, _, a, b in plan.shards(7) if s == split for c in plan.chunk(split, a, b)]
        assert got == want[split]
    shards = plan.shards(7)
    assert all(b - a <= 7 for *_, a, b in shards)
    assert sum(b - a for *_, a, b in shards) == plan.n_images
    skipped = [r for r in plan.skipped if r["reason"] in ("excluded", "min_images")]
    small = {i for i in idents if i not in removed and i not in classes}
    assert sorted(r["key"] for r in skipped) == sorted(
        it.key for it in source.items if it.identity in removed | small
    )


def test_recordio_items_are_columns_that_make_each_item():
    from facecl.pack.recordio import REC_FILE, scan
    from facecl.pack.recordio_input import RecordItems

    source = open_input(RECORDIO, path_list([REC]))
    items = source.items
    assert isinstance(items, RecordItems) and items.keys.dtype == np.int64
    faces = scan(REC).faces
    assert len(items) == len(faces) == 176
    width = len(str(max(f.key for f in faces)))
    label_width = len(str(max(f.label for f in faces)))  # class ids zero-padded to the widest
    for i in (0, 1, 100, 175):
        f, it = faces[i], items[i]
        name = f"{f.label:0{label_width}d}"
        assert it.key == f"{name}/{f.key:0{width}d}" and it.identity == name
        assert it.source == f"{REC_FILE}#{f.key}" and it.offset == f.offset
    assert items[-1] == items[175] and items[np.int64(3)] == items[3]
    assert items[2:5] == [items[2], items[3], items[4]] and list(items)[-1] == items[175]
    with pytest.raises(IndexError):
        items[176]
