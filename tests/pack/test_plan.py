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
