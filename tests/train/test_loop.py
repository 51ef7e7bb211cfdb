"""The loop's pieces: batch order, one step against ECCV Alg. 1, determinism, checkpoints."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from facecl.losses.config import CenterLossConfig
from facecl.pack.dataset import ShardDataset
from facecl.train.checkpoint import build_backbone, load_checkpoint
from facecl.train.config import TrainConfig, load_train_config
from facecl.train.loop import train, train_step
from facecl.train.metrics import read_metrics
from facecl.train.sampler import StepBatchSampler, flip_mask
from facecl.train.state import build_state


def test_batches_cover_each_epoch_once_and_ranks_split_the_global_batch():
    n, gb, steps = 10, 4, 10  # 40 samples = 4 epochs
    one = StepBatchSampler(n, gb, steps, seed=7)
    stream = [i for b in one for i in b]
    for e in range(4):
        assert sorted(stream[e * n : (e + 1) * n]) == list(range(n))
    r0 = StepBatchSampler(n, gb, steps, seed=7, rank=0, world=2)
    r1 = StepBatchSampler(n, gb, steps, seed=7, rank=1, world=2)
    for b, b0, b1 in zip(one, r0, r1, strict=True):
        assert b == b0 + b1  # rank order = single-process order (what gather_batch assumes)
    later = StepBatchSampler(n, gb, steps, seed=7, start=6)
    assert list(later) == list(one)[6:]  # resuming at step 6 sees the same batches
    assert list(StepBatchSampler(n, gb, steps, seed=8)) != list(one)


def test_balanced_sampler_draws_classes_evenly():
    labels = np.array([0] * 90 + [1] * 10)
    weights = 1.0 / np.bincount(labels)[labels]
    s = StepBatchSampler(100, 50, 40, seed=0, weights=weights)
    counts = Counter(labels[i] for b in s for i in b)
    assert abs(counts[0] - counts[1]) / 2000 < 0.05  # 1000 each in expectation


def test_batch_must_split_over_processes():
    with pytest.raises(Exception, match="does not split"):
        StepBatchSampler(10, 5, 3, seed=0, world=2)


def test_flip_mask_is_a_function_of_seed_and_step():
    assert torch.equal(flip_mask(0, 3, 64), flip_mask(0, 3, 64))
    assert not torch.equal(flip_mask(0, 3, 64), flip_mask(0, 4, 64))
    assert 10 < int(flip_mask(1, 0, 64).sum()) < 54


@pytest.mark.parametrize("head", ["softmax", "cosface"])
def test_acl_updates_with_the_head_weight_before_the_sgd_step(head):
    """Pins ECCV Alg. 1's order (line 6 before line 7): the center state moves with this
    step's features and the head's W^t, then the optimiser moves W to W^{t+1}."""
    cfg = TrainConfig(
        arch="tiny", loss="acl", head=head, lam=0.5, center=CenterLossConfig(alpha=0.5), lr=0.5
    )
    state = build_state(cfg, 3, {"input_size": [16, 16], "feature_dim": 4}, torch.device("cpu"))
    torch.manual_seed(2)
    images = torch.randn(6, 3, 16, 16)
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    g0 = state.center.gammas.clone()
    w_before = state.net.head.weight.detach().clone()
    with torch.no_grad():
        x = state.net.backbone(images)
    train_step(state.net, state.net.head, state.center, state.optimizer, images, labels, lam=0.5)
    w_after = state.net.head.weight.detach()
    assert (w_after - w_before).abs().max() > 1e-3  # the SGD step moved W

    def eq7(w):  # IJCV Eq. 7 with the weight as the head's logits use it
        if head != "softmax":
            w = w / w.norm(dim=1, keepdim=True)
        want = g0.clone()
        for j in range(3):
            sel = labels == j
            proj = (x[sel] * w[j]).sum(1) / (w[j] * w[j]).sum()
            want[j] -= 0.5 * (g0[j] - proj).sum() / (1 + sel.sum())
        return want

    assert torch.allclose(state.center.gammas, eq7(w_before), atol=1e-6)
    assert not torch.allclose(state.center.gammas, eq7(w_after), atol=1e-5)


def test_one_step_follows_algorithm_1():
    """Centers move by ECCV Eq. 4 with the features of the forward pass (before the SGD
    step), and the backbone by SGD on L_S + lambda L_C."""
    cfg = TrainConfig(
        arch="tiny", loss="cl", lam=0.5, center=CenterLossConfig(alpha=0.5), weight_decay=0.0
    )
    state = build_state(cfg, 3, {"input_size": [16, 16], "feature_dim": 4}, torch.device("cpu"))
    torch.manual_seed(1)
    images = torch.randn(6, 3, 16, 16)
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    c0 = state.center.centers.clone()
    with torch.no_grad():
        x = state.net.backbone(images)  # (6, 4) features before the step
    terms, feats = train_step(
        state.net, state.net.head, state.center, state.optimizer, images, labels, lam=cfg.lam
    )
    assert torch.allclose(feats, x)
    want = c0.clone()
    for j in range(3):
        sel = labels == j
        want[j] -= cfg.center.alpha * (c0[j] - x[sel]).sum(0) / (1 + sel.sum())
    assert torch.allclose(state.center.centers, want, atol=1e-6)
    lc = 0.5 * (x - c0[labels]).pow(2).sum() / 6
    assert float(terms["center"]) == pytest.approx(float(lc), rel=1e-5)
    assert float(terms["loss"]) == pytest.approx(
        float(terms["softmax"]) + cfg.lam * float(lc), rel=1e-5
    )


def _run(pack, tmp, **kw):
    base = {"arch": "tiny", "steps": 6, "batch_size": 8, "workers": 0, "log_every": 2}
    cfg = load_train_config(None, {**base, "checkpoint_every": 3, "lr": 0.05, **kw})
    summary = train(cfg, ShardDataset(pack), tmp)
    return cfg, summary, load_checkpoint(tmp / "model.pt")


def test_same_seed_same_weights(pack, tmp_path):
    _, _, a = _run(pack, tmp_path / "a")
    _, _, b = _run(pack, tmp_path / "b")
    _, _, c = _run(pack, tmp_path / "c", seed=1)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert torch.equal(a["loss_state"]["centers"], b["loss_state"]["centers"])
    assert any(not torch.equal(a["model"][k], c["model"][k]) for k in a["model"])


def test_metrics_and_self_describing_checkpoint(pack, tmp_path):
    cfg, summary, ckpt = _run(pack, tmp_path, loss="acl", head="sphereface")
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [2, 4, 6]
    for r in records:
        for key in ("loss", "softmax", "center", "lr", "images_per_s", "loader_wait_share"):
            assert np.isfinite(r[key]), key
        assert r["center_dist_mean"] > 0 and r["center_norm_mean"] > 0
    assert summary["final"]["step"] == 6
    assert (ckpt["arch"], ckpt["loss"], ckpt["head"]) == ("tiny", "acl", "sphereface")
    assert ckpt["input_size"] == [24, 20] and ckpt["step"] == 6 and ckpt["num_classes"] == 4
    assert ckpt["config"]["steps"] == 6 and "gammas" in ckpt["loss_state"]
    model = build_backbone(ckpt)
    assert model(torch.zeros(2, 3, 24, 20)).shape == (2, ckpt["feature_dim"])
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert last["optimizer"]["state"] and last["step"] == 6


def test_device_choice():
    from facecl.errors import UsageError
    from facecl.train.loop import resolve_device

    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(UsageError, match="CUDA is not available"):
            resolve_device("cuda")


def test_balanced_sampler_run(pack, tmp_path):
    # s = 64 margin heads need a small lr on a net without batch norm
    kw = {"sampler": "balanced", "loss": "acl-gamma", "head": "arcface", "lr": 0.001}
    _, summary, ckpt = _run(pack, tmp_path, **kw)
    assert summary["final"]["step"] == 6 and ckpt["loss_state"]["gamma"].numel() == 1


@pytest.mark.parametrize(
    "loss, kw",
    [("cl", {"lam": 0.0}), ("acl", {"lam": 0.0}), ("cil", {"lam": 0.0, "gamma": 0.0})],
)
def test_center_terms_at_zero_weight_train_exactly_like_softmax(pack, tmp_path, loss, kw):
    # The centers are still tracked (and updated), but with lambda = gamma = 0 nothing may
    # reach the network: the weights must be bit-identical to softmax alone. (This is what
    # lets the imbalanced-MNIST CIL runs of docs/toy.md differ from softmax only by the term.)
    _, _, ref = _run(pack, tmp_path / "softmax", loss="none")
    _, _, got = _run(pack, tmp_path / loss, loss=loss, **kw)
    for key in ref["model"]:
        assert torch.equal(ref["model"][key], got["model"][key]), key
    # ... and with the weight on, the same seed trains to different weights.
    _, _, on = _run(pack, tmp_path / f"{loss}-on", loss=loss, lam=0.5, gamma=0.5)
    assert any(not torch.equal(ref["model"][k], on["model"][k]) for k in ref["model"])


def test_the_loop_decays_the_center_rate_each_step(pack, tmp_path):
    """alpha_decay = mu: step t moves the centers at alpha mu^t; with mu ~ 0 only step 0
    moves them, so 1 and 3 steps end on the same centers (and mu = 1 does not)."""
    ends = {}
    for mu, steps in ((1e-12, 1), (1e-12, 3), (1.0, 3)):
        _, _, ckpt = _run(pack, tmp_path / f"{mu}-{steps}", steps=steps, alpha_decay=mu)
        ends[mu, steps] = ckpt["loss_state"]["centers"]
    torch.testing.assert_close(ends[1e-12, 3], ends[1e-12, 1], rtol=0, atol=1e-6)
    assert (ends[1.0, 3] - ends[1e-12, 1]).abs().max() > 1e-3
