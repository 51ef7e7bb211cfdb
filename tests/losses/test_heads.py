"""Heads against oracles of their papers' target-logit formulas (float64, per sample loops)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from facecl.losses import HEAD_PRESETS, create_head
from facecl.losses.heads import MarginHead

torch.set_num_threads(1)


def _data(seed=0, m=10, d=5, c=7):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(m, d, generator=g, dtype=torch.float64) * 4,
        torch.randint(0, c, (m,), generator=g),
    )


def _cos_table(x, w):
    """cos(theta_ij) by the definition x.w / (|x||w|), one pair at a time."""
    out = torch.empty(x.shape[0], w.shape[0], dtype=torch.float64)
    for i in range(x.shape[0]):
        for j in range(w.shape[0]):
            out[i, j] = float(x[i] @ w[j]) / (float(x[i].norm()) * float(w[j].norm()))
    return out


def _sphere_psi(theta, m):
    """SphereFace (Liu 2017) psi: (-1)^k cos(m theta) - 2k for theta in [k pi/m, (k+1) pi/m]."""
    k = min(int(theta * m / math.pi), m - 1)
    return (-1) ** k * math.cos(m * theta) - 2 * k


def test_softmax_head_is_linear_with_bias():
    x, y = _data()
    head = create_head("softmax", 5, 7).double().requires_grad_(False)
    logits = head(x, y).detach()
    for i in range(x.shape[0]):
        for j in range(7):
            want = float(head.weight[j] @ x[i] + head.bias[j])
            assert float(logits[i, j]) == pytest.approx(want, rel=1e-12)
    assert head.weight.shape == (7, 5)


def test_cosface_target_logit():
    x, y = _data(1)
    head = create_head("cosface", 5, 7, s=30.0, m3=0.35).double().train()
    cos = _cos_table(x, head.weight.detach())
    logits = head(x, y).detach()
    for i in range(x.shape[0]):
        for j in range(7):
            want = 30.0 * (cos[i, j] - (0.35 if j == int(y[i]) else 0.0))
            assert float(logits[i, j]) == pytest.approx(float(want), rel=1e-10, abs=1e-10)


def test_arcface_target_logit_and_monotone_extension():
    x, y = _data(2)
    head = create_head("arcface", 5, 7).double().train()
    s, m = HEAD_PRESETS["arcface"].s, HEAD_PRESETS["arcface"].m2
    cos = _cos_table(x, head.weight.detach())
    logits = head(x, y).detach()
    for i in range(x.shape[0]):
        for j in range(7):
            theta = math.acos(float(cos[i, j]))
            if j == int(y[i]):
                assert theta + m <= math.pi  # random data stays in the printed range
                want = s * math.cos(theta + m)
            else:
                want = s * float(cos[i, j])
            assert float(logits[i, j]) == pytest.approx(want, rel=1e-9, abs=1e-9)
    # past theta = pi - m the target logit keeps decreasing, continuously
    thetas = torch.linspace(0, math.pi, 2001, dtype=torch.float64)
    psi = head.psi(torch.cos(thetas))
    assert (psi[1:] < psi[:-1]).all()
    assert (psi[1:] - psi[:-1]).abs().max() < 0.01


def test_sphereface_psi_matches_paper_piecewise_definition():
    head = create_head("sphereface", 5, 7).double()
    thetas = torch.linspace(0.01, math.pi - 0.01, 301, dtype=torch.float64)
    psi = head.psi(torch.cos(thetas))
    for t, p in zip(thetas.tolist(), psi.tolist(), strict=True):
        assert p == pytest.approx(_sphere_psi(t, 4), abs=1e-9)
    assert (psi[1:] < psi[:-1]).all()  # monotone decreasing in theta


def test_sphereface_annealing_schedule_and_blended_logit():
    x, y = _data(3)
    head = create_head("sphereface", 5, 7).double().train()
    cfg = head.config
    assert head.annealing_lambda(0) == 1000.0
    assert head.annealing_lambda(100) == pytest.approx(1000.0 / (1 + 0.12 * 100))
    assert head.annealing_lambda(10**6) == cfg.lambda_min == 5.0
    head.set_step(50)
    lam = 1000.0 / (1 + 0.12 * 50)
    cos = _cos_table(x, head.weight.detach())
    logits = head(x, y).detach()
    for i in range(x.shape[0]):
        norm = float(x[i].norm())  # A-softmax: ||x|| scale, normalised weights, no bias
        for j in range(7):
            c = float(cos[i, j])
            if j == int(y[i]):
                want = norm * (lam * c + _sphere_psi(math.acos(c), 4)) / (1 + lam)
            else:
                want = norm * c
            assert float(logits[i, j]) == pytest.approx(want, rel=1e-9, abs=1e-9)


def test_eval_mode_and_missing_labels_give_plain_scaled_cosines():
    x, y = _data(4)
    for name in ["cosface", "arcface", "sphereface"]:
        head = create_head(name, 5, 7).double()
        plain = head.cosine(x)
        scale = x.norm(dim=1, keepdim=True) if head.config.s is None else head.config.s
        torch.testing.assert_close(head.eval()(x, y), scale * plain)
        torch.testing.assert_close(head.train()(x, None), scale * plain)


def test_margin_makes_the_loss_larger_than_no_margin():
    x, y = _data(5)
    for name in ["cosface", "arcface", "sphereface"]:
        head = create_head(name, 5, 7).double().train()
        head.set_step(10**6)
        no_margin = MarginHead(5, 7, head.config.__class__(s=head.config.s)).double()
        no_margin.weight.data.copy_(head.weight.data)
        assert F.cross_entropy(head(x, y), y) > F.cross_entropy(no_margin(x, y), y)


def test_sphereface_gradient_is_finite_at_the_poles():
    head = create_head("sphereface", 3, 2).train()
    x = head.weight.detach()[[0, 1]].clone().requires_grad_(True)  # theta = 0 exactly
    F.cross_entropy(head(x, torch.tensor([0, 1])), torch.tensor([0, 1])).backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(head.weight.grad).all()


def test_margin_heads_compute_in_float32_under_autocast():
    x, y = torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    for name in ["cosface", "arcface", "sphereface"]:
        head = create_head(name, 5, 7).train()
        want = head(x, y)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = head(x.bfloat16(), y)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, head(x.bfloat16(), y))
        assert (got - want).abs().max() < 0.1 * want.abs().max()


def test_cosine_logits_gradient_is_the_normalised_matmuls():
    """The written-out backward of ``cosine_logits`` (no normalised weight copy) against
    autograd through ``F.normalize``, and torch's numerical gradcheck, in float64."""
    from facecl.losses.heads import cosine_logits

    g = torch.Generator().manual_seed(1)
    xn = F.normalize(torch.randn(5, 4, generator=g, dtype=torch.float64), dim=1)
    w = torch.randn(7, 4, generator=g, dtype=torch.float64) * 3
    assert torch.autograd.gradcheck(cosine_logits, (xn.requires_grad_(), w.requires_grad_()))
    w = w.detach().clone()
    w[2] = 0.0  # a dead row: F.normalize's eps clamp, no gradient through the norm
    w.requires_grad_()
    up = torch.randn(5, 7, generator=g, dtype=torch.float64)
    ours = torch.autograd.grad((cosine_logits(xn, w) * up).sum(), (xn, w))
    ref = torch.autograd.grad((xn @ F.normalize(w, dim=1).t() * up).sum(), (xn, w))
    for a, b in zip(ours, ref, strict=True):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
