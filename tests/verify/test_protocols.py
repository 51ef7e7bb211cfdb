"""Protocol readers: LFW pairs (View 1/2), user CSV, BLUFR config, missing-image handling."""

from __future__ import annotations

import re

import numpy as np
import pytest

from facecl.errors import ConfigError, InputError
from facecl.verify.embeddings import load_embeddings
from facecl.verify.protocols import (
    read_blufr_config,
    read_lfw_pairs,
    read_pairs_csv,
    resolve_pairs,
    select_images,
    stratified_folds,
)

from .helpers import make_embed_artifact


def test_lfw_mini_pairs_view2_format(lfw_mini):
    pl = read_lfw_pairs(lfw_mini / "pairs.txt")
    assert pl.header == (10, 3) and len(pl) == 60 and pl.n_folds == 10
    for k in range(10):
        in_fold = pl.fold == k
        assert in_fold.sum() == 6 and pl.same[in_fold].sum() == 3
        # Within each set the 3 matched pairs come before the 3 mismatched ones.
        assert pl.same[in_fold].tolist() == [True] * 3 + [False] * 3
    assert pl.a[0] == "Abel_Pacheco/Abel_Pacheco_0001"
    assert pl.b[0] == "Abel_Pacheco/Abel_Pacheco_0004"
    # Every key names a file of the fixture.
    for key in set(pl.a) | set(pl.b):
        assert (lfw_mini / "lfw_original_150px" / f"{key}.jpg").is_file(), key


def test_view1_format_and_errors(tmp_path):
    f = tmp_path / "pairsDevTest.txt"
    f.write_text("2\nA\t1\t2\nB\t3\t4\nA\t1\tB\t2\nC\t5\tD\t6\n")
    pl = read_lfw_pairs(f)
    assert pl.header == (2,) and pl.n_folds == 1
    assert pl.same.tolist() == [True, True, False, False]
    assert pl.a[3] == "C/C_0005" and pl.b[3] == "D/D_0006"
    f.write_text("2\nA\t1\t2\nB\t3\t4\nA\t1\tB\t2\n")
    with pytest.raises(InputError, match="3 pair lines, header promises 4"):
        read_lfw_pairs(f)
    f.write_text("1\nA\t1\tB\t2\nA\t1\tB\t2\n")
    with pytest.raises(InputError, match=r":2: expected a matched pair"):
        read_lfw_pairs(f)
    f.write_text("1\nA\tx\t2\nA\t1\tB\t2\n")
    with pytest.raises(InputError, match="must be integers"):
        read_lfw_pairs(f)
    with pytest.raises(InputError, match="not found"):
        read_lfw_pairs(tmp_path / "nope.txt")


def test_real_lfw_pairs(shared_data):
    v2 = read_lfw_pairs(shared_data / "lfw" / "pairs.txt")
    assert len(v2) == 6000 and v2.header == (10, 300)
    assert np.bincount(v2.fold).tolist() == [600] * 10
    assert np.bincount(v2.fold[v2.same]).tolist() == [300] * 10
    v1 = read_lfw_pairs(shared_data / "lfw" / "pairsDevTest.txt")
    assert len(v1) == 1000 and v1.same.sum() == 500 and v1.n_folds == 1


def test_pairs_csv_header_values_and_stratified_folds(tmp_path):
    f = tmp_path / "p.csv"
    rows = ["path1,path2,same"]
    rows += [f"a{i}.jpg,b{i}.jpg,{'yes' if i % 3 == 0 else 0}" for i in range(30)]
    f.write_text("\n".join(rows) + "\n")
    pl = read_pairs_csv(f, folds=5)
    assert len(pl) == 30 and pl.same.sum() == 10
    assert np.bincount(pl.fold[pl.same]).tolist() == [2] * 5
    assert np.bincount(pl.fold[~pl.same]).tolist() == [4] * 5
    f.write_text("a.jpg,b.jpg,maybe\nc.jpg,d.jpg,maybe\n")
    with pytest.raises(InputError, match=":2: 'same' value"):
        read_pairs_csv(f)
    # Fewer pairs of a kind than folds: the fold count shrinks to what the data allows.
    f.write_text("a,b,1\nc,d,0\ne,f,1\n")
    assert read_pairs_csv(f).n_folds == 1
    assert stratified_folds(np.array([True, False, True, True]), 2).tolist() == [0, 0, 1, 0]


def _blufr_info(path):
    """Per set: test #img, GenProb and ImpProb image counts, from the config's _info.txt."""
    text = path.read_text()
    sets = re.findall(
        r"Set (\d+):.*?Test: #img = (\d+).*?Gal: (\d+) / \d+, GenProb: (\d+) / \d+, "
        r"ImpProb: (\d+)",
        text,
        flags=re.S,
    )
    return [tuple(int(v) for v in s[1:]) for s in sets]


def test_blufr_reader_on_the_real_config(shared_data):
    cfg = read_blufr_config(shared_data / "blufr" / "blufr_lfw_config.mat")
    info = _blufr_info(shared_data / "blufr" / "blufr_lfw_config_info.txt")
    assert len(info) == 10 and len(cfg.trials) == 10
    assert len(cfg.image_list) == 13233 and len(cfg.labels) == 13233
    assert cfg.labels.min() == 1 and cfg.labels.max() == 5749
    assert len(cfg.dev_train) == 521 and len(cfg.dev_test) == 673
    assert cfg.keys[0] == "Aaron_Eckhart/Aaron_Eckhart_0001"
    for trial, (n_test, n_gal, n_gen, n_imp) in zip(cfg.trials, info, strict=True):
        assert len(trial.test) == n_test and len(trial.gallery) == n_gal == 1000
        for idx in (trial.train, trial.test, trial.gallery, trial.probe):
            assert idx.min() >= 0 and idx.max() < 13233  # 1-based MATLAB -> 0-based
        # testIndex is the disjoint union of galIndex and probIndex.
        assert not np.intersect1d(trial.gallery, trial.probe).size
        assert np.array_equal(np.sort(trial.test), np.union1d(trial.gallery, trial.probe))
        assert not np.intersect1d(trial.train, trial.test).size
        genuine = np.isin(cfg.labels[trial.probe], cfg.labels[trial.gallery])
        assert genuine.sum() == n_gen and (~genuine).sum() == n_imp
    # The image list names the LFW files (this copy lacks Betsy_Coffin_0001 only).
    lfw = shared_data / "lfw" / "lfw_original_150px"
    absent = [k for k in cfg.keys if not (lfw / f"{k}.jpg").is_file()]
    assert absent == ["Betsy_Coffin/Betsy_Coffin_0001"]


def test_resolve_pairs_reports_every_dropped_pair(tmp_path, lfw_mini):
    pl = read_lfw_pairs(lfw_mini / "pairs.txt")
    keys = sorted(set(pl.a) | set(pl.b))
    gone, failed = keys[0], keys[1]
    present = [k for k in keys if k != gone]
    status = ["no_face" if k == failed else "ok" for k in present]
    vecs = np.random.default_rng(0).normal(size=(len(present), 8))
    emb = load_embeddings(make_embed_artifact(tmp_path, present, vecs, status))
    res = resolve_pairs(emb, pl)
    touching = [i for i in range(len(pl)) if {pl.a[i], pl.b[i]} & {gone, failed}]
    assert sorted(d["index"] for d in res.dropped) == touching
    assert (~res.keep).sum() == len(touching) > 0
    assert res.missing_images == {gone: "not in embeddings", failed: "no_face"}
    d = res.dropped[0]
    assert set(d["missing"]) <= {gone, failed} and "fold" in d and "same" in d


def test_select_images_folder_and_list(tmp_path):
    keys = ["A/A_0001", "A/A_0002", "B/B_0001"]
    folder = tmp_path / "gal"
    for k in keys[:2]:
        (folder / k).parent.mkdir(parents=True, exist_ok=True)
        (folder / f"{k}.jpg").write_bytes(b"x")
    (folder / "C").mkdir()
    (folder / "C" / "C_0001.jpg").write_bytes(b"x")  # an image that was never embedded
    paths = [str(folder / f"{k}.jpg") for k in keys]
    emb = load_embeddings(make_embed_artifact(tmp_path, keys, np.eye(3, 4) + 0.1, paths=paths))
    rows, missing, notes = select_images(emb, folder)
    assert sorted(rows.tolist()) == [0, 1]
    assert missing == {str(folder / "C" / "C_0001.jpg"): "not in embeddings"}
    assert notes == {}
    lst = tmp_path / "probe.txt"
    lst.write_text("# probes\nB/B_0001\nZ/Z_0009\n")
    rows, missing, _ = select_images(emb, lst)
    assert rows.tolist() == [2] and missing == {"Z/Z_0009": "not in embeddings"}


def test_protocols_come_from_the_registry():
    from facecl.errors import UnknownNameError
    from facecl.verify.config import VerifyConfig
    from facecl.verify.evaluate import PROTOCOLS

    assert PROTOCOLS.names() == ["bin", "blufr", "identify", "lfw-pairs", "lfw-view1", "pairs"]
    with pytest.raises(UnknownNameError, match="unknown protocol 'lfw-view2'") as e:
        VerifyConfig(protocol="lfw-view2").validate()
    assert "did you mean 'lfw-view1'" in str(e.value) and "bin, blufr, identify" in str(e.value)
    with pytest.raises(ConfigError, match="no training split in the identify protocol"):
        VerifyConfig(protocol="identify", pca_dim=4).validate()
