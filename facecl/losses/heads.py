"""Classification heads: softmax (FC + bias) and one parametrised margin head.

``forward(x (B, D), y (B,)) -> logits (B, C)``; the loss is ``cross_entropy(logits, y)``.
The margin is applied to the target logits only in training mode with labels given; in
eval mode (or ``y=None``) the heads return the plain (scaled) cosine logits. A label of -1
gets no margin: under ``--shard-classes`` a head holds one rank's classes and the labels are
local to them (``facecl.losses.sharded``).

``MarginHead`` covers SphereFace, CosFace/AM-softmax and ArcFace, like insightface's
``CombinedMarginLoss``: with theta_y the angle between x and w_y, the target logit is

    s * psi(theta_y),   psi(theta) = (-1)^k cos(m1 theta + m2) - 2k - m3,
    k = floor((m1 theta + m2) / pi)

i.e. cos(m1 theta + m2) - m3 extended monotonically past pi as SphereFace does (A-softmax's
psi for m2 = m3 = 0). Non-target logits are s * cos(theta_j). ``s = None`` uses ||x||
(A-softmax: weights normalised, features not). SphereFace's annealing replaces psi by
(lam cos + psi) / (1 + lam), lam = max(lambda_min, base * (1 + gamma * step)^-power), with
``set_step(step)`` called by the train loop.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from facecl.losses.center import upcast
from facecl.losses.config import HeadConfig


class SoftmaxHead(nn.Module):
    """Plain softmax classifier W^T x + b (ECCV Eq. 1); ``weight`` is (C, D)."""

    normalizes_weight: ClassVar[bool] = False
    """Whether the logits use w_j / ||w_j|| (ACL's centers then do too)."""

    class_rows: ClassVar[tuple[str, ...]] = ("fc.weight", "fc.bias")
    """The ``state_dict`` keys whose first dimension is the class (``--shard-classes``: a
    rank's head holds rows ``[lo, hi)`` of them)."""

    def __init__(self, feature_dim: int, num_classes: int, bias: bool = True):
        super().__init__()
        self.feature_dim = int(feature_dim)
        self.num_classes = int(num_classes)
        self.fc = nn.Linear(feature_dim, num_classes, bias=bias)

    @property
    def weight(self) -> torch.Tensor:  # (C, D)
        return self.fc.weight

    @property
    def bias(self) -> torch.Tensor | None:  # (C,)
        return self.fc.bias

    def set_step(self, step: int) -> None:
        """No schedule (same interface as ``MarginHead``)."""

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None = None, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits (B, C); ``rows`` (K,): only those classes' logits (B, K) (``--sample-rate``)."""
        if rows is None:
            return self.fc(x)  # (B, C)
        bias = None if self.fc.bias is None else self.fc.bias[rows]
        return F.linear(x, self.fc.weight[rows], bias)  # (B, K)


def chebyshev_cos(c: torch.Tensor, m: int) -> torch.Tensor:
    """cos(m theta) from c = cos(theta) by the Chebyshev recurrence (SphereFace's way)."""
    t_prev, t = torch.ones_like(c), c
    if m == 0:
        return t_prev
    for _ in range(m - 1):
        t_prev, t = t, 2 * c * t - t_prev
    return t


class _CosineLogits(torch.autograd.Function):
    """(x_n @ W^T) / ||w_j|| without the normalised (C, D) copy of W and its gradient."""

    @staticmethod
    def forward(ctx, xn: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        norm = torch.linalg.vector_norm(weight, dim=1)  # (C,)
        inv = 1.0 / norm.clamp_min(_NORM_EPS)  # F.normalize's eps
        cos = (xn @ weight.t()).mul_(inv)  # (B, C)
        ctx.save_for_backward(xn, weight, inv, cos, norm > _NORM_EPS)
        return cos

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xn, weight, inv, cos, live = ctx.saved_tensors
        g = grad * inv  # (B, C) dL/d(x_n . w_j) / ||w_j||
        dx = g @ weight  # (B, D)
        # dL/dw_j = sum_i g_ij x_i / ||w_j|| - (sum_i g_ij cos_ij) w_j / ||w_j||^2
        dw = g.t() @ xn  # (C, D), the only (C, D) temporary
        coef = (grad * cos).sum(0) * inv * inv * live  # (C,)
        dw.addcmul_(weight, coef.unsqueeze(1), value=-1.0)
        return dx, dw


_NORM_EPS = 1e-12


def cosine_logits(xn: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """cos(theta_ij) = x_n_i . w_j / ||w_j|| for unit features ``xn`` (B, D) and the raw
    weight (C, D): ``xn @ F.normalize(weight).t()`` with the gradient written out, so neither
    the normalised weight nor its gradient is held (two (C, D) copies fewer: 4 GiB at
    C = 1M x 512-d)."""
    return _CosineLogits.apply(xn, weight)


class MarginHead(nn.Module):
    """Normalised-weight head with the combined margin s * (cos(m1 theta + m2) - m3)."""

    normalizes_weight: ClassVar[bool] = True
    """The logits use w_j / ||w_j||, so ACL's centers are gamma_j w_j / ||w_j|| (IJCV Table 2)."""

    class_rows: ClassVar[tuple[str, ...]] = ("weight",)

    def __init__(self, feature_dim: int, num_classes: int, config: HeadConfig | None = None):
        super().__init__()
        self.feature_dim = int(feature_dim)
        self.num_classes = int(num_classes)
        self.config = config if config is not None else HeadConfig()
        self.weight = nn.Parameter(torch.empty(num_classes, feature_dim))  # (C, D)
        nn.init.xavier_uniform_(self.weight)
        self.step = 0

    # ---- margin ------------------------------------------------------------------------------
    def annealing_lambda(self, step: int | None = None) -> float:
        """SphereFace's lambda at ``step`` (0 when annealing is off)."""
        cfg = self.config
        if cfg.lambda_base <= 0:
            return 0.0
        step = self.step if step is None else step
        decayed = cfg.lambda_base * (1 + cfg.lambda_gamma * step) ** -cfg.lambda_power
        return max(cfg.lambda_min, decayed)

    def set_step(self, step: int) -> None:
        """Set the training step that drives the annealing schedule."""
        self.step = int(step)

    def psi(self, cos: torch.Tensor) -> torch.Tensor:
        """The target-logit function psi(theta) (before scale and annealing), from cos(theta)."""
        m1, m2, m3 = self.config.m1, self.config.m2, self.config.m3
        if m1 == 1 and m2 == 0:  # CosFace / AM-softmax (and plain cosine when m3 = 0)
            return cos - m3
        if m1 == 1:  # ArcFace: cos(theta + m2) = c cos m2 - sin(theta) sin m2
            sin = (1 - cos * cos).clamp_min(1e-12).sqrt()
            shifted = cos * math.cos(m2) - sin * math.sin(m2)
            beyond = cos < -math.cos(m2)  # theta + m2 > pi: k = 1 branch
            return torch.where(beyond, -shifted - 2, shifted) - m3
        eps = 1e-7
        theta = torch.acos(cos.clamp(-1 + eps, 1 - eps))
        k = torch.floor((m1 * theta + m2) / math.pi).detach()
        sign = 1 - 2 * torch.remainder(k, 2)
        if m2 == 0 and float(m1).is_integer():  # SphereFace: Chebyshev, smooth gradient
            cos_m = chebyshev_cos(cos, int(m1))
        else:
            cos_m = torch.cos(m1 * theta + m2)
        return sign * cos_m - 2 * k - m3

    # ---- forward -----------------------------------------------------------------------------
    def cosine(self, x: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """cos(theta_j) between each feature and each class weight: (B, D) -> (B, C), or
        (B, K) for the classes ``rows`` (K,)."""
        weight = self.weight if rows is None else self.weight[rows]
        return cosine_logits(F.normalize(upcast(x), dim=1), upcast(weight))

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None = None, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits (B, C); ``rows`` (K,): only those classes (B, K), ``y`` then indexes
        ``rows`` (``--sample-rate``, Partial FC's sampled classes)."""
        # angles in half precision are too coarse for the margins: float32 even under autocast
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self._logits(x, y, rows)

    def _logits(
        self, x: torch.Tensor, y: torch.Tensor | None, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        cos = self.cosine(x, rows)  # (B, C) or (B, K)
        if self.config.s is None:
            scale = upcast(x).norm(dim=1, keepdim=True)  # (B, 1) A-softmax: ||x||
        else:
            scale = self.config.s
        if y is None or not self.training:
            return scale * cos
        # y = -1: the sample's class is in another rank's shard (--shard-classes), no margin
        here = y.view(-1, 1) >= 0  # (B, 1)
        idx = y.view(-1, 1).clamp_min(0)
        target = cos.gather(1, idx)  # (B, 1)
        psi = self.psi(target)
        lam = self.annealing_lambda()
        if lam > 0:
            psi = (lam * target + psi) / (1 + lam)
        return scale * cos.scatter(1, idx, torch.where(here, psi, target))  # (B, C)

    def extra_repr(self) -> str:
        return f"feature_dim={self.feature_dim}, num_classes={self.num_classes}, {self.config}"
