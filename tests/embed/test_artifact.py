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
    EmbeddingsWriter,
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


def test_writer_appends_blocks_to_one_growing_chunked_dataset(tmp_path):
    rng = np.random.default_rng(0)
    v = rng.normal(size=(1000, 8)).astype(np.float32)
    keys = [f"P{i}/P{i}_0001" for i in range(1000)]
    cols = {
        "keys": keys,
        "paths": keys,
        "identities": [k[:4] for k in keys],
        "status": ["ok"] * 1000,
    }
    with EmbeddingsWriter(tmp_path, 8) as w:
        for block in np.array_split(v, 7):
            w.append(block)
        assert w.rows == 1000 and not (tmp_path / EMBEDDINGS).exists()  # temp file until close
        h5 = w.close(**cols)
    with h5py.File(h5, "r") as f:
        d = f["embeddings"]
        assert d.maxshape == (None, 8) and d.chunks is not None
        np.testing.assert_array_equal(d[()], v)
        assert f["keys"].asstr()[()].tolist() == keys
    assert [p.name for p in tmp_path.iterdir()] == [EMBEDDINGS]


def test_writer_leaves_nothing_behind_on_abort_or_error(tmp_path):
    with pytest.raises(RuntimeError), EmbeddingsWriter(tmp_path, 4) as w:
        w.append(np.ones((3, 4)))
        raise RuntimeError("killed mid-merge")
    w = EmbeddingsWriter(tmp_path, 4)
    w.append(np.ones((3, 4)))
    with pytest.raises(ValueError, match="2 entries for 3 rows"):
        w.close(keys=["a", "b"], paths=["a", "b"], identities=["a", "b"], status=["ok", "ok"])
    assert list(tmp_path.iterdir()) == []
