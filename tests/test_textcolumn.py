"""TextColumn / TextIndex: the compact string columns the embed artifact's reader returns."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from facecl import textcolumn
from facecl.embed.artifact import from_arrays
from facecl.errors import ArtifactError, InputError
from facecl.textcolumn import TextColumn, TextIndex

WORDS = ["Ann/Ann_0001", "", "Zoë/Zoë_0001", "b\udcffad", "ok", "ok", "日本/x"]


def test_column_reads_back_what_it_was_given():
    col = TextColumn.of([w.encode("utf-8", "surrogatepass") if i == 2 else w
                         for i, w in enumerate(WORDS)])  # fmt: skip
    assert len(col) == len(WORDS) and list(col) == WORDS and col == WORDS
    assert [col[i] for i in range(-len(WORDS), len(WORDS))] == WORDS + WORDS
    assert col[1:6:2] == WORDS[1:6:2] and col.index("ok") == 4 and "日本/x" in col
    assert col.equals("ok").tolist() == [w == "ok" for w in WORDS]
    assert col.equals("").tolist() == [w == "" for w in WORDS]
    assert col.take(np.array([6, 0])).tolist() == ["日本/x", "Ann/Ann_0001"]
    assert col != WORDS[:-1] and col != [*WORDS[:-1], "x"] and col == TextColumn.of(WORDS)
    with pytest.raises(IndexError):
        col[len(WORDS)]


def test_column_crosses_encoding_blocks(monkeypatch):
    monkeypatch.setattr(textcolumn, "_BLOCK", 3)
    words = [f"w{i}" * (i % 4) for i in range(20)]
    assert TextColumn.of(iter(words)) == words and len(TextColumn.of([])) == 0


def test_column_refuses_bytes_that_are_not_utf8():
    with pytest.raises(UnicodeDecodeError):
        TextColumn.of([b"ok", b"\xff\xfe"])
    data = {"embeddings": np.ones((2, 3), np.float32), "keys": np.array([b"a", b"\xff"], object)}
    with pytest.raises(InputError, match="'keys' is not utf-8"):
        from_arrays(data, Path("x.h5"), {})


def test_index_finds_every_row_and_survives_hash_collisions(monkeypatch):
    col = TextColumn.of(WORDS)
    for idx in (TextIndex(col), None):
        if idx is None:  # every value in one hash bucket: candidates are checked exactly
            monkeypatch.setattr(textcolumn, "hash", lambda s: 7, raising=False)
            idx = TextIndex(col)
        assert idx.rows("ok") == [4, 5] and idx.first("Zoë/Zoë_0001") == 2
        assert idx.first("nope") == -1 and idx.duplicate() == "ok"
    norm = TextIndex(TextColumn.of(["a//b", "c"]), lambda s: s.replace("//", "/"))
    assert norm.first("a/b") == 0 and norm.duplicate() is None


def test_embeddings_reject_a_duplicate_key_among_colliding_hashes(monkeypatch):
    monkeypatch.setattr(textcolumn, "hash", lambda s: len(s), raising=False)
    keys = np.array(["A/a_1", "B/b_1", "A/a_2", "B/b_1"])
    with pytest.raises(ArtifactError, match="'B/b_1' appears twice"):
        from_arrays({"embeddings": np.ones((4, 2), np.float32), "keys": keys}, Path("x"), {})


def test_embeddings_hold_about_a_tenth_of_a_kib_a_row():
    """100k rows of ~21-character keys: the old lists, dicts and per-row strings held ~360 B a
    row (~700 B with real paths and statuses); the columns and indexes hold ~100."""
    n = 100_000
    ids = np.array([f"I{i // 10:07d}" for i in range(n)])
    keys = np.char.add(np.char.add(ids, "/"), np.array([f"{i:04d}" for i in range(n)]))
    data = {"embeddings": np.ones((n, 2), np.float32), "keys": keys, "identities": ids}
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        emb = from_arrays(data, Path("x.h5"), {})
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert emb.find("I0000042/0420") == 420 and emb.identities[420] == "I0000042"
    assert emb.ok.all() and held / n < 150, f"{held / n:.0f} B a row"
