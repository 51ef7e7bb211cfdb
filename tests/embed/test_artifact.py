"""The embed artifact layout: what the writer writes, the reader (and verify) reads back."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from facecl.artifacts import StageOutput
from facecl.embed.artifact import (
    DATASETS,
    EMBEDDINGS,
    STAGE,
    read_embeddings,
    write_embeddings,
)
from facecl.errors import ArtifactError, InputError
from facecl.verify.embeddings import load_embeddings

KEYS = ["Ann/Ann_0001", "Ann/Ann_0002", "Bob/Bob_0001"]
STATUS = ["ok", "no face", "ok"]


def vectors() -> np.ndarray:
    v = np.arange(12, dtype=np.float64).reshape(3, 4) + 1.0
    v[1] = np.nan
    return v


def make(tmp_path, name="emb"):
    so = StageOutput(tmp_path / name, STAGE, {"t": 1}, [])
    work = so.begin()
    h5 = write_embeddings(
        work,
        vectors(),
        keys=KEYS,
        paths=[f"/p/{k}.jpg" for k in KEYS],
        identities=["Ann", "Ann", "Bob"],
        status=STATUS,
    )
    assert h5 == work / EMBEDDINGS
    so.commit({"processed": 3})
    return tmp_path / name


def test_writer_layout_and_reader_round_trip(tmp_path):
    art = make(tmp_path)
    with h5py.File(art / EMBEDDINGS, "r") as f:
        assert set(f) == set(DATASETS)
        assert f["embeddings"].dtype == np.float32 and f["embeddings"].shape == (3, 4)
        assert f["status"].asstr()[()].tolist() == STATUS
    e = read_embeddings(art)
    assert e.keys == KEYS and e.identities == ["Ann", "Ann", "Bob"] and e.status == STATUS
    assert e.ok.tolist() == [True, False, True] and e.dim == 4
    np.testing.assert_array_equal(e.vectors[[0, 2]], vectors()[[0, 2]].astype(np.float32))
    assert e.find("/p/Bob/Bob_0001.jpg") == 2 and e.find("Nope/Nope_0001") == -1


def test_verify_reads_artifact_plain_h5_and_npz_alike(tmp_path):
    art = make(tmp_path)
    a = load_embeddings(art)
    h = load_embeddings(art / EMBEDDINGS)  # the same file, given as a plain .h5
    assert (h.keys, h.status, h.paths) == (a.keys, a.status, a.paths)
    np.testing.assert_array_equal(h.vectors, a.vectors)
    npz = tmp_path / "e.npz"
    np.savez(npz, embeddings=vectors()[[0, 2]], keys=np.array([KEYS[0], KEYS[2]]))
    n = load_embeddings(npz)  # defaults: paths = keys, identity = folder, status ok
    assert n.identities == ["Ann", "Bob"] and n.status == ["ok", "ok"] and n.paths == n.keys


def test_reader_errors(tmp_path):
    art = make(tmp_path)
    (art / EMBEDDINGS).unlink()
    with pytest.raises(ArtifactError, match=f"has no {EMBEDDINGS}"):
        read_embeddings(art)
    with pytest.raises(ArtifactError, match="expected 'embed'"):
        so = StageOutput(tmp_path / "al", "align", {}, [])
        so.begin()
        so.commit({})
        read_embeddings(tmp_path / "al")
    np.savez(tmp_path / "k.npz", embeddings=np.ones((2, 3)))
    with pytest.raises(InputError, match="no 'keys' dataset"):
        load_embeddings(tmp_path / "k.npz")
