"""Center losses against hand-written float64 oracles of the papers' equations.

ECCV = Wen 2016, IJCV = Wen 2019, Wu = Wu 2018 (see docs/losses.md). Every oracle below is a
plain Python loop over samples, written from the printed equation, not from our code.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from facecl.errors import ConfigError, UnknownNameError
from facecl.losses import (
    CenterLossConfig,
    create_center_loss,
    create_head,
    dynamic_center,
    list_center_losses,
    list_heads,
)

torch.set_num_threads(1)
TOL = dict(rtol=1e-12, atol=1e-14)


def _batch(seed: int, m: int = 12, d: int = 6, c: int = 4):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, d, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, c, (m,), generator=g)
    return x, y


def _oracle_center_term(x, y, centers, rho):
    """IJCV Eq. 2 with the generalized center of Eq. 9-10: 1/(2m) sum max(d_i - rho, 0)^2 and
    its gradient (1 - kappa_i)(x_i - c_{y_i}) / m, kappa_i = min(rho / d_i, 1)."""
    m = x.shape[0]
    value = 0.0
    grad = torch.zeros_like(x)
    for i in range(m):
        diff = [float(a) - float(b) for a, b in zip(x[i], centers[int(y[i])], strict=True)]
        d = math.sqrt(sum(v * v for v in diff))
        kappa = min(rho / d, 1.0) if d > 0 else (0.0 if rho == 0 else 1.0)
        value += 0.5 * ((1 - kappa) * d) ** 2 / m
        for k, v in enumerate(diff):
            grad[i, k] = (1 - kappa) * v / m
    return value, grad


def _counts(c: int) -> torch.Tensor:
    """Training-set images per class for CIL (uneven, unlike any test batch)."""
    return torch.arange(c, dtype=torch.float64) * 7 + 5


def _loss(name: str, c: int, d: int, **kw):
    """``create_center_loss`` with training-set counts where the variant needs them (cil)."""
    counts = _counts(c) if name == "cil" else None
    return create_center_loss(name, c, d, class_counts=counts, **kw)


def _value_and_grad(loss, x, y, head=None, key="center"):
    x = x.clone().requires_grad_(True)
    out = loss.terms(x, y, head)[key]
    out.backward()
    return float(out.detach()), x.grad


# ---- every registered loss x head -------------------------------------------------------------
@pytest.mark.parametrize("head_name", list_heads())
@pytest.mark.parametrize("loss_name", list_center_losses())
def test_every_loss_and_head_forward_backward_update_no_nan(loss_name, head_name):
    torch.manual_seed(0)
    head = create_head(head_name, 8, 5)
    loss = _loss(loss_name, 5, 8, rho=0.5)
    x = torch.randn(16, 8, requires_grad=True)
    y = torch.randint(0, 5, (16,))
    head.set_step(10)
    extra, parts = loss.objective(x, y, head, 0.01)
    total = F.cross_entropy(head(x, y), y) + extra
    total.backward()
    assert torch.isfinite(total) and all(math.isfinite(v) for v in parts.values())
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(torch.isfinite(p.grad).all() for p in head.parameters())
    before = {k: v.clone() for k, v in loss.state_dict().items()}
    loss.update_centers(x.detach(), y, head)
    for k, v in loss.state_dict().items():
        moved = k != "class_counts"  # CIL's training-set counts are data, not state
        assert torch.isfinite(v).all() and torch.equal(v, before[k]) != moved
    assert list(loss.parameters()) == []  # centers are buffers, never optimiser parameters
    assert all(math.isfinite(v) for v in loss.stats(x, y, head).values())


@pytest.mark.parametrize("loss_name", list_center_losses())
def test_half_precision_input_and_empty_batch(loss_name):
    head = create_head("softmax", 4, 3)
    loss = _loss(loss_name, 3, 4)
    x = torch.randn(6, 4).half()
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    assert loss(x, y, head).dtype == torch.float32
    empty = torch.zeros(0, 4, requires_grad=True)
    out, _ = loss.objective(empty, torch.zeros(0, dtype=torch.long), head, 0.1)
    assert float(out.detach()) == 0.0
    out.backward()
    loss.update_centers(empty.detach(), torch.zeros(0, dtype=torch.long), head)


# ---- CL: ECCV Eq. 2-4 / IJCV Eq. 2-3 --------------------------------------------------------
@pytest.mark.parametrize("rho", [0.0, 1.5, 4.0])
def test_cl_value_and_gradient_match_oracle(rho):
    x, y = _batch(1)
    loss = create_center_loss("cl", 4, 6, rho=rho).double()
    value, grad = _value_and_grad(loss, x, y)
    want_value, want_grad = _oracle_center_term(x, y, loss.centers, rho)
    assert value == pytest.approx(want_value, rel=1e-12)
    torch.testing.assert_close(grad, want_grad, **TOL)
    if rho == 4.0:  # some features inside the ball: no penalty, no gradient
        inside = (x - loss.centers[y]).norm(dim=1) <= rho
        assert inside.any() and (grad[inside] == 0).all()


def test_cl_plain_gradient_is_paper_eq3():
    # IJCV Eq. 3: dL_C/dx_i = (x_i - c_{y_i}) / m (ECCV Eq. 3 without the 1/m).
    x, y = _batch(2)
    loss = create_center_loss("cl", 4, 6).double()
    _, grad = _value_and_grad(loss, x, y)
    torch.testing.assert_close(grad, (x - loss.centers[y]) / x.shape[0], **TOL)


@pytest.mark.parametrize("name", ["cl", "acl", "acl-gamma", "cil"])
def test_rho_zero_is_exactly_the_plain_loss(name):
    x, y = _batch(3)
    head = create_head("softmax", 6, 4).double()
    plain = _loss(name, 4, 6).double()
    general = _loss(name, 4, 6, rho=0.0).double()
    general.load_state_dict(plain.state_dict())
    # the plain point-center formula, written without the generalized center
    c = plain.centers_for(y, head)
    xa = x.clone().requires_grad_(True)
    direct = 0.5 * (xa - c).pow(2).sum() / x.shape[0]
    direct.backward()
    xb = x.clone().requires_grad_(True)
    ours = general(xb, y, head)
    ours.backward()
    assert torch.equal(ours.detach(), direct.detach())
    assert torch.equal(xb.grad, xa.grad)


def test_dynamic_center_is_nearest_point_of_the_sphere():
    g = torch.Generator().manual_seed(4)
    c = torch.randn(5, 3, generator=g, dtype=torch.float64)
    x = c + 10 * F.normalize(torch.randn(5, 3, generator=g, dtype=torch.float64), dim=1)
    rho = 2.5  # all x are at distance 10 > rho
    cp = dynamic_center(x, c, rho)
    d = (x - c).norm(dim=1)
    torch.testing.assert_close((cp - c).norm(dim=1), torch.full((5,), rho, dtype=c.dtype))
    torch.testing.assert_close((x - cp).norm(dim=1), d - rho)  # the nearest distance
    # no point of the sphere is nearer (dense random sample of the sphere)
    dirs = F.normalize(torch.randn(4000, 3, generator=g, dtype=torch.float64), dim=1)
    for i in range(5):
        others = c[i] + rho * dirs
        assert (x[i] - others).norm(dim=1).min() >= (x[i] - cp[i]).norm() - 1e-12
    # the formula printed after IJCV Eq. 9, c - rho (x - c)/d, is the FAR point: d + rho
    printed = c - rho * (x - c) / d.unsqueeze(1)
    torch.testing.assert_close((x - printed).norm(dim=1), d + rho)
    # inside the ball the dynamic center is x itself
    near = c + 0.5 * (x - c) / d.unsqueeze(1)
    torch.testing.assert_close(dynamic_center(near, c, rho), near)


# ---- the center update rule, step by step by hand (ECCV Eq. 4, Alg. 1 line 6) ----------------
def test_cl_center_update_three_classes_by_hand():
    loss = create_center_loss("cl", 3, 2, alpha=0.5).double()
    loss.centers.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]]))
    # step 1: classes 0, 0, 1 (class 2 absent: unchanged)
    x = torch.tensor([[2.0, 0.0], [0.0, 4.0], [3.0, 1.0]], dtype=torch.float64)
    loss.update_centers(x, torch.tensor([0, 0, 1]))
    # Delta c0 = ((0-2, 0-0) + (0-0, 0-4)) / (1 + 2) = (-2/3, -4/3); c0 = 0 - 0.5 Delta
    # Delta c1 = (1-3, 1-1) / (1 + 1) = (-1, 0);                    c1 = (1, 1) - 0.5 Delta
    want = torch.tensor([[1 / 3, 2 / 3], [1.5, 1.0], [5.0, 5.0]], dtype=torch.float64)
    torch.testing.assert_close(loss.centers, want, **TOL)
    # step 2: classes 2, 2, 1
    x = torch.tensor([[4.0, 1.0], [0.0, 0.0], [1.5, 3.0]], dtype=torch.float64)
    loss.update_centers(x, torch.tensor([2, 2, 1]))
    # Delta c2 = ((5-4, 5-1) + (5-0, 5-0)) / 3 = (2, 3);  c2 = (5, 5) - 0.5 (2, 3) = (4, 3.5)
    # Delta c1 = (1.5-1.5, 1-3) / 2 = (0, -1);            c1 = (1.5, 1) - 0.5 (0, -1)
    want = torch.tensor([[1 / 3, 2 / 3], [1.5, 1.5], [4.0, 3.5]], dtype=torch.float64)
    torch.testing.assert_close(loss.centers, want, **TOL)


def test_center_update_does_not_depend_on_the_loss_value_or_gradients():
    # Centers move by the moving-average rule only: no optimiser, no gradient into them.
    loss = create_center_loss("cl", 3, 2)
    x = torch.randn(5, 2, requires_grad=True)
    loss(x, torch.tensor([0, 1, 2, 0, 1])).backward()
    assert loss.centers.grad is None and not loss.centers.requires_grad


# ---- ACL / ACL-gamma (IJCV Eq. 6-8) ----------------------------------------------------------
def _head_with_weight(w):
    head = create_head("softmax", w.shape[1], w.shape[0]).double()
    with torch.no_grad():
        head.weight.copy_(w)
    return head


@pytest.mark.parametrize("rho", [0.0, 1.0])
def test_acl_value_gradient_and_no_gradient_into_w(rho):
    x, y = _batch(5)
    head = _head_with_weight(torch.randn(4, 6, dtype=torch.float64))
    loss = create_center_loss("acl", 4, 6, rho=rho).double()
    loss.gammas.copy_(torch.tensor([0.5, 2.0, -1.0, 3.0]))
    centers = [loss.gammas[j] * head.weight[j].detach() for j in range(4)]  # c_j = gamma_j w_j
    value, grad = _value_and_grad(loss, x, y, head)
    want_value, want_grad = _oracle_center_term(x, y, centers, rho)
    assert value == pytest.approx(want_value, rel=1e-12)
    torch.testing.assert_close(grad, want_grad, **TOL)
    assert head.weight.grad is None  # IJCV Alg. 1 line 5: w is updated by L_S only


def test_acl_gamma_value_and_gradient():
    x, y = _batch(6)
    head = _head_with_weight(torch.randn(4, 6, dtype=torch.float64))
    loss = create_center_loss("acl-gamma", 4, 6).double()
    loss.gamma.fill_(1.7)
    centers = [1.7 * head.weight[j].detach() for j in range(4)]
    value, grad = _value_and_grad(loss, x, y, head)
    want_value, want_grad = _oracle_center_term(x, y, centers, 0.0)
    assert value == pytest.approx(want_value, rel=1e-12)
    torch.testing.assert_close(grad, want_grad, **TOL)


def test_acl_gamma_updates_by_hand():
    w = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], dtype=torch.float64)
    head = _head_with_weight(w)
    x = torch.tensor([[3.0, 1.0], [1.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1])
    acl = create_center_loss("acl", 3, 2, alpha=0.5).double()  # gammas start at 1
    acl.update_centers(x, y, head)
    # projections x.w_y / w_y.w_y: 3, 1, 2/4
    # Delta gamma0 = ((1-3) + (1-1)) / (1+2) = -2/3 -> 1 + 1/3; Delta gamma1 = (1-0.5)/2 = 1/4
    torch.testing.assert_close(
        acl.gammas, torch.tensor([4 / 3, 1 - 0.125, 1.0], dtype=torch.float64), **TOL
    )
    shared = create_center_loss("acl-gamma", 3, 2, alpha=0.5, gamma_init=2.0).double()
    shared.update_centers(x, y, head)
    # Eq. 8: sum x.w_y = 3 + 1 + 2 = 6, sum w_y.w_y = 1 + 1 + 4 = 6
    # Delta gamma = 2 - 6 / (1e-5 + 6); gamma = 2 - 0.5 Delta
    want = 2 - 0.5 * (2 - 6 / (1e-5 + 6))
    assert float(shared.gamma) == pytest.approx(want, rel=1e-14)


@pytest.mark.parametrize("name", ["acl", "acl-gamma"])
@pytest.mark.parametrize("head_name", ["sphereface", "cosface", "arcface"])
def test_acl_on_a_normalising_head_uses_the_normalised_weight(name, head_name):
    """IJCV Table 2: with a margin head the logits use w~ = w/||w||, so ACL's centers are
    gamma_j w~_j and its updates project on w~: the raw weight's norm does not matter."""
    x, y = _batch(8)
    head = create_head(head_name, 6, 4).double()
    loss = create_center_loss(name, 4, 6, rho=0.5).double()
    scales = torch.tensor([0.5, 2.0, 1.5, 3.0], dtype=torch.float64)
    if name == "acl":
        loss.gammas.copy_(scales)
    else:
        loss.gamma.fill_(1.7)
    gam = scales if name == "acl" else torch.full((4,), 1.7, dtype=torch.float64)
    w = head.weight.detach()
    unit = [w[j] / math.sqrt(sum(float(v) ** 2 for v in w[j])) for j in range(4)]  # w~_j
    centers = [gam[j] * unit[j] for j in range(4)]
    value, grad = _value_and_grad(loss, x, y, head)
    want_value, want_grad = _oracle_center_term(x, y, centers, 0.5)
    assert value == pytest.approx(want_value, rel=1e-12)
    torch.testing.assert_close(grad, want_grad, **TOL)
    # the update projects on w~ too: rescaling the raw rows changes nothing
    twin = create_center_loss(name, 4, 6, rho=0.5).double()
    twin.load_state_dict(loss.state_dict())
    loss.update_centers(x, y, head)
    with torch.no_grad():
        head.weight.mul_(torch.tensor([[3.0], [0.2], [1.0], [7.0]], dtype=torch.float64))
    twin.update_centers(x, y, head)
    for key, value_ in loss.state_dict().items():
        torch.testing.assert_close(twin.state_dict()[key], value_, **TOL)
    # the softmax head's logits use the raw w: ACL keeps it there
    soft = _head_with_weight(w * 3)
    torch.testing.assert_close(loss.centers_for(y, soft)[0], _scale(loss, y[0]) * w[y[0]] * 3)


def _scale(loss, j):
    return loss.gammas[j] if loss.name == "acl" else loss.gamma


def test_acl_needs_the_head():
    loss = create_center_loss("acl", 3, 2)
    with pytest.raises(ConfigError, match="shares the head"):
        loss(torch.randn(2, 2), torch.tensor([0, 1]), None)
    with pytest.raises(ConfigError, match="classes"):
        loss(torch.randn(2, 2), torch.tensor([0, 1]), create_head("softmax", 2, 5))


# ---- CIL (Wu 2018 Eq. 3, 9, 15-20) -----------------------------------------------------------
def test_cil_invariant_term_and_gradient_by_hand():
    loss = _loss("cil", 3, 2, gamma=1.0).double()  # training-set counts N = 5, 12, 19
    loss.centers.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]))
    x = torch.tensor([[0.3, 0.1], [2.0, -1.0], [0.5, 0.5]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1])
    value, grad = _value_and_grad(loss, x, y, key="invariant")
    # ||c||^2 = 1, 4, 2; tau = 7/3; excess: -4/3, -4/3, 5/3
    # value = gamma / (4m) sum excess^2 = 1/12 (16/9 + 16/9 + 25/9)
    assert value == pytest.approx((16 + 16 + 25) / 9 / 12, rel=1e-14)
    # Eq. 20 / m with Wu's layer's training-set count: gamma/m (1/N_y)(1 - 1/C)(excess) c_y
    # class 0 (N=5):  1/3 * 1/5  * 2/3 * (-4/3) * (1, 0) = (-8/135, 0)
    # class 1 (N=12): 1/3 * 1/12 * 2/3 * ( 5/3) * (0, 2) = (0, 5/81)
    want = torch.tensor([[-8 / 135, 0.0], [-8 / 135, 0.0], [0.0, 5 / 81]], dtype=torch.float64)
    torch.testing.assert_close(grad, want, **TOL)
    # the CL part of CIL is the plain center term
    value_c, grad_c = _value_and_grad(loss, x, y)
    want_value, want_grad = _oracle_center_term(x, y, loss.centers, 0.0)
    assert value_c == pytest.approx(want_value, rel=1e-12)
    torch.testing.assert_close(grad_c, want_grad, **TOL)


def _wu_layer(x, y, centers, num_data, gamma):
    """Wu's released layer (caffe-face center_loss_layer.cpp), loop by loop, in float64:
    tau = sum_j ||c_j||^2 / N; lambda_i = ||c_{y_i}||^2 - tau; top = sum lambda_i^2 / M / 4;
    bottom_diff_i = lambda_i (1 - 1/N) / num_data[y_i] * c_{y_i}, all scaled by top_diff / M
    (top_diff = the layer's loss_weight, gamma). N = classes, M = batch."""
    n_cls, m = len(centers), len(y)
    sq = [sum(float(v) ** 2 for v in centers[j]) for j in range(n_cls)]
    tau = sum(v / n_cls for v in sq)
    lam = [sq[int(y[i])] - tau for i in range(m)]
    top = sum(v * v for v in lam) / m / 4
    diff = torch.zeros_like(x)
    for i in range(m):
        j = int(y[i])
        scale = lam[i] * (1 - 1 / n_cls) / float(num_data[j])
        for k in range(x.shape[1]):
            diff[i, k] = scale * float(centers[j][k]) * gamma / m
    return gamma * top, diff


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cil_matches_wus_released_layer(seed):
    """The oracle is Wu's caffe layer (training-set counts), not the batch counts: on a batch
    whose class counts differ from the training set's, the two give different gradients."""
    g = torch.Generator().manual_seed(seed)
    c, d, m, gamma = 5, 3, 16, 0.3
    num_data = torch.tensor([600.0, 35.0, 6000.0, 200.0, 1.0], dtype=torch.float64)
    loss = create_center_loss("cil", c, d, gamma=gamma, class_counts=num_data).double()
    loss.centers.copy_(torch.randn(c, d, generator=g, dtype=torch.float64) * 2)
    x = torch.randn(m, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, c, (m,), generator=g)
    value, grad = _value_and_grad(loss, x, y, key="invariant")
    want_value, want_grad = _wu_layer(x, y, loss.centers, num_data, gamma)
    assert value == pytest.approx(want_value, rel=1e-12)
    torch.testing.assert_close(grad, want_grad, **TOL)
    assert torch.equal(loss.state_dict()["class_counts"], num_data)  # checkpoints carry them


def test_cil_push_per_sample_does_not_depend_on_the_batch():
    """With training-set counts a sample's gradient (times m) is the same in any batch it is
    in: the strength of gamma does not change with the batch size or the DDP split."""
    loss = _loss("cil", 4, 3, gamma=1.0).double()
    x, y = _batch(5, m=12, d=3, c=4)
    _, whole = _value_and_grad(loss, x, y, key="invariant")
    _, half = _value_and_grad(loss, x[:6], y[:6], key="invariant")
    torch.testing.assert_close(half * 6, whole[:6] * 12, **TOL)


def test_cil_without_counts_fails_clearly():
    with pytest.raises(ConfigError, match="needs the training set's images per class"):
        create_center_loss("cil", 3, 2)
    with pytest.raises(ConfigError, match="3 counts >= 0"):
        create_center_loss("cil", 3, 2, class_counts=[1, 2])
    assert create_center_loss("cl", 3, 2, class_counts=[1, 2, 3]).state_dict().keys() == {"centers"}


def test_old_cil_state_without_counts_is_refused():
    from facecl.errors import CheckpointError
    from facecl.losses import restore_center_loss

    old = {"centers": torch.zeros(3, 2)}  # a CIL loss_state from before the counts
    with pytest.raises(CheckpointError, match="no class_counts") as e:
        restore_center_loss("cil", 3, 2, CenterLossConfig(), old)
    assert "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match="no class_counts"):
        _loss("cil", 3, 2).load_state_dict(old)
    new = _loss("cil", 3, 2).state_dict()
    back = restore_center_loss("cil", 3, 2, CenterLossConfig(), new)
    assert torch.equal(back.class_counts, new["class_counts"])


def test_cil_objective_weights_invariant_term_absolutely():
    loss = _loss("cil", 3, 2, gamma=0.5).double()
    x, y = torch.randn(4, 2, dtype=torch.float64), torch.tensor([0, 1, 2, 1])
    total, parts = loss.objective(x, y, None, lam=0.25)
    center, invariant = float(parts["center"]), float(parts["invariant"])
    assert float(total) == pytest.approx(0.25 * center + invariant, rel=1e-12)
    # lambda = 0 keeps the invariant term (Wu Eq. 5 / 13: softmax or A-softmax + gamma L_I)
    total0, _ = loss.objective(x, y, None, lam=0.0)
    assert float(total0) == pytest.approx(invariant, rel=1e-12)
    # the values stay detached tensors on the device (read back at log steps only)
    assert all(isinstance(v, torch.Tensor) and not v.requires_grad for v in parts.values())


def test_cil_updates_centers_with_the_cl_rule():
    cl = create_center_loss("cl", 3, 2).double()
    cil = _loss("cil", 3, 2).double()
    cil.centers.copy_(cl.centers)
    x, y = torch.randn(6, 2, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 0, 1])
    cl.update_centers(x, y)
    cil.update_centers(x, y)
    assert torch.equal(cl.centers, cil.centers)


# ---- statistics, registry, options -----------------------------------------------------------
def test_stats_match_direct_computation():
    loss = create_center_loss("cl", 3, 2, rho=1.0).double()
    x, y = torch.randn(50, 2, dtype=torch.float64) * 2, torch.randint(0, 3, (50,))
    s = loss.stats(x, y)
    d = (x - loss.centers[y]).norm(dim=1)
    assert s["center_dist_mean"] == pytest.approx(float(d.mean()))
    assert s["center_dist_p50"] == pytest.approx(float(d.median()), abs=float(d.std()))
    assert s["center_dist_p50"] <= s["center_dist_p90"] <= s["center_dist_p99"] <= float(d.max())
    assert s["center_norm_mean"] == pytest.approx(float(loss.centers.norm(dim=1).mean()))
    assert s["within_rho_frac"] == pytest.approx(float((d <= 1.0).double().mean()))
    assert create_center_loss("none", 3, 2).stats(x, y) == {}


def test_unknown_names_and_options_list_the_valid_ones():
    with pytest.raises(UnknownNameError) as e:
        create_center_loss("acl-gama", 3, 2)
    msg = str(e.value)
    assert "did you mean 'acl-gamma'" in msg
    assert all(n in msg for n in ["none", "cl", "acl", "acl-gamma", "cil"])
    with pytest.raises(UnknownNameError) as e:
        create_head("arcfce", 2, 3)
    assert "did you mean 'arcface'" in str(e.value) and "sphereface" in str(e.value)
    with pytest.raises(ConfigError, match="did you mean 'alpha'"):
        create_center_loss("cl", 3, 2, alpah=0.5)
    with pytest.raises(ConfigError, match=r"alpha must be in \[0, 1\]"):
        create_center_loss("cl", 3, 2, alpha=2.0)
    with pytest.raises(ConfigError, match="did you mean 'm2'"):
        create_head("arcface", 2, 3, m22=0.1)


def test_registries_hold_the_documented_names():
    assert set(list_center_losses()) == {"none", "cl", "acl", "acl-gamma", "cil"}
    assert set(list_heads()) == {"softmax", "sphereface", "cosface", "arcface"}
    assert CenterLossConfig().alpha == 0.5


def test_repeated_updates_converge_to_the_class_means():
    # Eq. 4's fixed point is c_j = mean of class j's features (the center's definition).
    x = torch.tensor([[1.0, 2.0], [3.0, 2.0], [-4.0, 0.0], [0.0, 6.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 2, 2])
    loss = create_center_loss("cl", 3, 2, alpha=0.5).double()
    untouched = loss.centers[1].clone()
    for _ in range(200):
        loss.update_centers(x, y)
    want = torch.tensor([[2.0, 2.0], [-2.0, 3.0]], dtype=torch.float64)
    torch.testing.assert_close(loss.centers[[0, 2]], want)
    assert torch.equal(loss.centers[1], untouched)
    # ACL: gamma_j -> mean of x.w_j / w_j.w_j over class j: (1 + 3)/2 and (0/4 + 12/4)/2
    head = _head_with_weight(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 2.0]]))
    acl = create_center_loss("acl", 3, 2).double()
    for _ in range(200):
        acl.update_centers(x, y, head)
    torch.testing.assert_close(acl.gammas[[0, 2]], torch.tensor([2.0, 1.5], dtype=torch.float64))


def test_alpha_decay_scales_the_center_rate_by_mu_to_the_step():
    x = torch.tensor([[2.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    y = torch.tensor([0, 1])
    for name in ("cl", "acl", "acl-gamma"):
        head = _head_with_weight(torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64))
        plain = create_center_loss(name, 2, 2, alpha=0.5 * 0.8**3).double()
        decayed = create_center_loss(name, 2, 2, alpha=0.5, alpha_decay=0.8).double()
        decayed.load_state_dict(plain.state_dict())
        decayed.set_step(3)  # alpha * mu^3
        for loss in (plain, decayed):
            loss.update_centers(x, y, head)
        for key, value in plain.state_dict().items():
            torch.testing.assert_close(decayed.state_dict()[key], value, **TOL)
    with pytest.raises(ConfigError, match=r"alpha_decay must be in \(0, 1\]"):
        create_center_loss("cl", 2, 2, alpha_decay=0.0)
