"""`--shard-classes` on gloo: 2 and 4 ranks holding a class shard each give one process's
losses, backbone gradients, head rows and centers on the global batch (to 1e-5), for every
center loss with the softmax and the margin heads (``shard_harness``)."""

from __future__ import annotations

import pytest
import torch

from facecl.errors import UsageError
from facecl.pack.dataset import ShardDataset
from facecl.train.checkpoint import load_checkpoint
from facecl.train.config import TrainConfig
from facecl.train.last import load_last
from facecl.train.loop import StopFlag, train
from facecl.train.metrics import read_metrics
from facecl.train.run import LAST_REL, LAST_SHARDED_REL, METRICS
from facecl.train.shard_classes import check_shard_classes
from facecl.train.sharded_checkpoint import read_index
from facecl.train.stage import fit

from .shard_harness import (
    GRID,
    Case,
    batches,
    compare,
    reference,
    sampled_config,
    sampled_reference,
    spawn,
    spawn_sampled,
)

# The fast set: every center loss and every head at least once, on 2 and 4 ranks (one spawn each).
FAST = [
    Case("softmax", "none"),
    Case("softmax", "cl"),
    Case("arcface", "acl"),
    Case("cosface", "acl-gamma"),
    Case("sphereface", "cl", rho=0.1),
    Case("softmax", "cil"),
    Case("arcface", "cil"),
]


def _check(world: int, cases: list[Case], tmp_path) -> None:
    ranks = spawn(world, cases, tmp_path)
    bad = []
    for case in cases:
        bad += compare(case, reference(case), [r[case.name] for r in ranks])
    assert not bad, "\n".join(bad[:20])


def test_four_shards_equal_one_process(tmp_path):
    """10 classes on 4 ranks (3, 3, 2, 2 rows); 2 ranks: the loop test below, the grid."""
    _check(4, FAST, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 4])
def test_shards_equal_one_process_full_grid(world, tmp_path):
    _check(world, GRID, tmp_path)


def _cfg(**kw):
    return TrainConfig(
        arch="tiny", head="softmax", loss="cil", lam=0.1, steps=4, batch_size=8, workers=0,
        log_every=2, checkpoint_every=2, lr=0.05, threads=1, **kw,
    )  # fmt: skip


PARTS = ("model", "head_state", "loss_state")


def _assert_same_model(a: dict, b: dict) -> None:
    for part in PARTS:
        assert a[part].keys() == b[part].keys(), part
        for key, value in a[part].items():
            assert value.shape == b[part][key].shape, (part, key)
            assert torch.allclose(value, b[part][key], atol=1e-5), (part, key)


def test_sharded_run_resumes_and_saves_as_one_process(pack, tmp_path):
    """Through the train loop: a one-process run stopped at step 2 resumes on 2 class
    shards (each rank slices its rows, momentum included, out of the full last.pt), writes
    its rows per rank (checkpoints/last/, merged: one process's last.pt), a backbone-only
    model.pt, and one process's metrics."""
    cfg, sharded = _cfg(), _cfg(shard_classes=True)
    fit(cfg, ShardDataset(pack), tmp_path / "one", show_progress=False)
    stop = StopFlag()

    def halt(step, record):
        stop.requested = step >= 2

    with pytest.raises(KeyboardInterrupt):
        train(cfg, ShardDataset(pack), tmp_path / "two", stop=stop, on_progress=halt)
    assert load_checkpoint(tmp_path / "two" / LAST_REL)["step"] == 2
    two = fit(sharded, ShardDataset(pack), tmp_path / "two", ddp=2, show_progress=False)
    assert (two["world"], two["resumed_from"]) == (2, 2)
    assert not (tmp_path / "two" / LAST_REL).exists()  # replaced by the per-rank files
    index = read_index(tmp_path / "two" / LAST_SHARDED_REL)
    assert (index.step, index.world, index.ranges) == (4, 2, [(0, 2), (2, 4)])
    one_model, two_model = (load_checkpoint(tmp_path / d / "model.pt") for d in ("one", "two"))
    assert two_model["head_state"] == {} and two_model["loss_state"] == {}  # backbone only
    _assert_same_model(one_model, {**two_model, **{k: one_model[k] for k in PARTS[1:]}})
    one_last, two_last = load_checkpoint(tmp_path / "one" / LAST_REL), load_last(tmp_path / "two")
    assert two_last is not None and two_last["step"] == 4
    _assert_same_model(one_last, two_last)
    assert two_last["loss_state"]["centers"].shape == (4, 16)  # every class, merged
    for idx, entry in one_last["optimizer"]["state"].items():
        got = two_last["optimizer"]["state"][idx]["momentum_buffer"]
        assert torch.allclose(entry["momentum_buffer"], got, atol=1e-5), idx
    # world 1 from the per-rank files: every row reassembled, one process's full model.pt
    assert train(cfg, ShardDataset(pack), tmp_path / "two")["resumed_from"] == 4
    _assert_same_model(one_model, load_checkpoint(tmp_path / "two" / "model.pt"))
    ra, rb = (read_metrics(tmp_path / d / METRICS) for d in ("one", "two"))
    assert [r["step"] for r in rb] == [2, 4]
    for x, y in zip(ra, rb, strict=True):
        for key in ("loss", "softmax", "center", "invariant", "center_dist_mean"):
            assert abs(x[key] - y[key]) < 1e-5, key


def test_shard_classes_needs_ranks(pack, tmp_path):
    with pytest.raises(UsageError, match="--shard-classes"):
        fit(_cfg(shard_classes=True), ShardDataset(pack), tmp_path / "r", show_progress=False)
    with pytest.raises(UsageError, match="needs >= 8 classes"):
        check_shard_classes(_cfg(shard_classes=True), 8, 4)


def test_cli_shard_classes_without_ranks_is_a_usage_error(pack, tmp_path):
    from typer.testing import CliRunner

    from facecl.cli import app

    out = tmp_path / "r"
    args = ["train", str(pack), "-o", str(out), "--arch", "tiny", "--shard-classes"]
    r = CliRunner().invoke(app, [*args, "--steps", "2", "--batch-size", "8", "--no-progress"])
    assert r.exit_code == 2 and "--ddp N" in r.output and "Traceback" not in r.output
    assert not out.exists() and not (tmp_path / "r.partial").exists()


def test_sample_rate_draws_positives_and_normalises_over_the_drawn_classes(tmp_path):
    """--sample-rate 0.3 on 2 ranks: each rank draws its batch classes plus random others
    (max(int(0.3 * 20), positives) of its 20), the softmax term is one process's cross
    entropy over the union of the drawn classes, and the rows not drawn move by weight
    decay alone (no softmax gradient reaches them)."""
    ranks = spawn_sampled(2, tmp_path)
    labels = batches()[1][0]
    drawn = torch.cat([r["drawn"] for r in ranks])
    for rank, r in enumerate(ranks):
        lo, hi = rank * 20, (rank + 1) * 20
        mine = labels[(labels >= lo) & (labels < hi)].unique()
        assert len(r["drawn"]) == max(6, len(mine)) < 20
        assert set(mine.tolist()) <= set(r["drawn"].tolist())
        assert r["terms"]["softmax"] == pytest.approx(ranks[0]["terms"]["softmax"], abs=0)
        cfg = sampled_config()
        kept = torch.ones(20, dtype=torch.bool)
        kept[r["drawn"] - lo] = False  # the rows not drawn
        decayed = r["before"][kept] * (1 - cfg.lr * cfg.weight_decay)
        assert torch.allclose(r["after"][kept], decayed, atol=1e-7)
        assert not torch.allclose(r["after"][~kept], r["before"][~kept] * (1 - 0.005 * 5e-4))
    assert ranks[0]["terms"]["softmax"] == pytest.approx(sampled_reference(drawn), abs=1e-5)


def test_sample_rate_checks(pack, tmp_path):
    with pytest.raises(UsageError, match="sample_rate must be in"):
        _cfg(sample_rate=0.0)
    with pytest.raises(UsageError, match="--sample-rate 0.5 samples the classes"):
        fit(_cfg(sample_rate=0.5), ShardDataset(pack), tmp_path / "r", show_progress=False)
