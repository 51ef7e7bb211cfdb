"""`facecl verify --protocol bin`: insightface's protocol on the pairs stored from a .bin."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from facecl.cli import app
from facecl.verify.metrics import contiguous_folds, insightface_kfold

from .helpers import make_embed_artifact

runner = CliRunner()
BINS = Path(__file__).resolve().parents[1] / "data" / "insightface"


def oracle_accuracy(emb: np.ndarray, issame: np.ndarray, k: int = 10) -> list[float]:
    """insightface eval/verification.py as published, written out loop by loop: rows 0::2
    against 1::2, unit vectors, squared distance, KFold(k, shuffle=False), thresholds
    0..4 step 0.01 (first best on the training folds), accuracy on the test fold."""
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    dist = np.sum(np.square(e[0::2] - e[1::2]), 1)
    n = len(issame)
    bounds, start = [], 0
    for f in range(k):  # sklearn KFold: the first n % k folds one larger
        size = n // k + (1 if f < n % k else 0)
        bounds.append((start, start + size))
        start += size
    thresholds = np.arange(0, 4, 0.01)
    out = []
    for lo, hi in bounds:
        test = np.zeros(n, bool)
        test[lo:hi] = True
        best, best_t = -1.0, 0.0
        for t in thresholds:
            acc = np.mean(np.less(dist[~test], t) == issame[~test])
            if acc > best:
                best, best_t = acc, t
        out.append(float(np.mean(np.less(dist[test], best_t) == issame[test])))
    return out


def synthetic(n_pairs: int, seed: int, noise: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """(2P, 8) vectors: a genuine pair's second vector is the first plus noise."""
    rng = np.random.default_rng(seed)
    issame = rng.random(n_pairs) < 0.5
    a = rng.normal(size=(n_pairs, 8))
    b = np.where(issame[:, None], a + noise * rng.normal(size=a.shape), rng.normal(size=a.shape))
    v = np.empty((2 * n_pairs, 8))
    v[0::2], v[1::2] = a, b
    return v.astype(np.float32), issame


def test_contiguous_folds_match_kfold_without_shuffle():
    f = contiguous_folds(23, 10)
    assert np.bincount(f).tolist() == [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]
    assert (np.diff(f) >= 0).all()


@pytest.mark.parametrize("n_pairs, seed", [(60, 0), (601, 1), (6000, 2)])
def test_accuracy_equals_insightface_loop(n_pairs, seed):
    v, issame = synthetic(n_pairs, seed)
    kf = insightface_kfold(v[0::2], v[1::2], issame, contiguous_folds(n_pairs, 10))
    assert kf.accuracy.tolist() == pytest.approx(oracle_accuracy(v, issame), abs=1e-12)
    assert 0.6 < kf.mean < 1.0


def bin_artifact(tmp_path, n_pairs=60, seed=0, fusion="sum", name="emb"):
    v, issame = synthetic(n_pairs, seed)
    keys = [f"set{seed}/{i:06d}" for i in range(2 * n_pairs)]
    art = make_embed_artifact(
        tmp_path, keys, v, name=name, issame=issame, config={"fusion": fusion}
    )
    return art, v, issame


def verify(*args):
    return runner.invoke(app, ["verify", *map(str, args)])


def test_report_numbers_and_comparability(tmp_path):
    art, v, issame = bin_artifact(tmp_path)
    r = verify(art, "--protocol", "bin", "-o", tmp_path / "rep", "--json", "--no-plots")
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    acc = rep["results"]["accuracy"]
    expected = oracle_accuracy(v, issame)
    assert acc["folds"] == pytest.approx(expected, abs=1e-12)
    assert acc["std"] == pytest.approx(np.std(expected), abs=1e-12)  # population std
    assert acc["fold_sizes"] == [6] * 10
    assert rep["summary"]["accuracy"] == pytest.approx(np.mean(expected))
    assert {"auc", "eer", "tar@far=0.001"} <= set(rep["summary"])
    assert rep["comparable"] is True


def test_concat_fusion_is_flagged_not_comparable(tmp_path):
    art, _, _ = bin_artifact(tmp_path, fusion="concat")
    r = verify(art, "--protocol", "bin", "-o", tmp_path / "rep", "--json", "--no-plots")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["comparable"] is False and "--fusion sum" in out["comparability"]


def test_several_sets_one_table(tmp_path):
    a1, _, _ = bin_artifact(tmp_path, seed=1, name="lfw")
    a2, _, _ = bin_artifact(tmp_path, n_pairs=70, seed=2, name="agedb_30")
    out = tmp_path / "rep"
    r = verify(a1, a2, "--protocol", "bin", "-o", out, "--no-plots")
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "sets.json").read_text())
    assert [run["label"] for run in doc["runs"]] == ["lfw", "agedb_30"]
    for run in doc["runs"]:
        assert (out / run["label"] / "report.json").is_file()
    assert "lfw" in r.stderr and "agedb_30" in r.stderr and "accuracy" in r.stderr


def test_embeddings_without_pairs_and_wrong_usage_are_one_line_errors(tmp_path):
    keys = [f"A/A_{i:04d}" for i in range(4)]
    plain = make_embed_artifact(tmp_path, keys, np.eye(4, 8), name="plain")
    r = verify(plain, "--protocol", "bin", "-o", tmp_path / "r1")
    assert r.exit_code == 1 and "no stored pairs" in r.output and "Traceback" not in r.output
    art, _, _ = bin_artifact(tmp_path)
    r = verify(art, art, "--protocol", "lfw-pairs", "-o", tmp_path / "r2")
    assert r.exit_code == 2 and "takes one embeddings input" in r.output


def test_end_to_end_on_the_fixture_bin(tmp_path):
    """embed lfw_mini_py3.bin with --fusion sum, verify: the report's folds are insightface's
    on the stored vectors."""
    import torch

    from facecl.models import create_backbone
    from facecl.train.checkpoint import save_checkpoint
    from facecl.verify.embeddings import load_embeddings

    torch.manual_seed(0)
    net = create_backbone("tiny", feature_dim=16, input_size=(112, 112))
    ckpt = tmp_path / "t.pt"
    kw = {"feature_dim": 16, "input_size": [112, 112]}
    save_checkpoint(
        ckpt,
        {"arch": "tiny", "arch_kwargs": kw, "feature_dim": 16, "input_size": [112, 112],
         "loss": "cl", "config": {}, "model": net.state_dict()},
    )  # fmt: skip
    emb = tmp_path / "e"
    r = runner.invoke(app, ["embed", str(ckpt), str(BINS / "lfw_mini_py3.bin"), "-o", str(emb),
                            "--fusion", "sum"])  # fmt: skip
    assert r.exit_code == 0, r.output
    r = verify(emb, "--protocol", "bin", "-o", tmp_path / "rep", "--no-plots")
    assert r.exit_code == 0, r.output
    e = load_embeddings(emb)
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rep["results"]["accuracy"]["folds"] == pytest.approx(
        oracle_accuracy(e.vectors.astype(np.float64), e.issame), abs=1e-12
    )
    assert rep["comparable"] is True and rep["results"]["n_pairs"] == 60


def test_fusion_sum_at_verify_time_equals_sum_embeddings(tmp_path):
    """--fusion sum adds the halves of concat vectors: the same numbers as vectors embedded
    with sum fusion, and comparable to insightface; other combinations are usage errors."""
    rng = np.random.default_rng(4)
    a = rng.normal(size=(120, 8)).astype(np.float32)  # FC1(image)
    b = a + 0.5 * rng.normal(size=a.shape).astype(np.float32)  # FC1(flip)
    issame = rng.random(60) < 0.5
    keys = [f"s/{i:06d}" for i in range(120)]
    cat = make_embed_artifact(tmp_path, keys, np.concatenate([a, b], 1), name="cat",
                              issame=issame, config={"fusion": "concat"})  # fmt: skip
    summed = make_embed_artifact(tmp_path, keys, a + b, name="sum", issame=issame,
                                 config={"fusion": "sum"})  # fmt: skip
    reports = {}
    for name, art, extra in (("cat", cat, ["--fusion", "sum"]), ("sum", summed, [])):
        out = tmp_path / f"r_{name}"
        r = verify(art, "--protocol", "bin", "-o", out, "--no-plots", *extra)
        assert r.exit_code == 0, r.output
        reports[name] = json.loads((out / "report.json").read_text())
    assert reports["cat"]["results"]["accuracy"] == reports["sum"]["results"]["accuracy"]
    assert reports["cat"]["comparable"] is True and reports["cat"]["embeddings"]["dim"] == 8
    r = verify(summed, "--protocol", "bin", "-o", tmp_path / "bad", "--fusion", "concat")
    assert r.exit_code == 2 and "--fusion stored" in r.output
