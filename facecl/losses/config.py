"""Defaults of the center-loss family and of the heads: the only home of these numbers.

``CenterLossConfig`` holds every constructor argument of a center loss (each variant reads
the fields it needs); ``HeadConfig`` those of the heads, with one preset per registered head
name in ``HEAD_PRESETS``; ``MarginConfig`` the margin parameters a run may set on top of its
head's preset (``None`` = the preset's value). The train config nests ``CenterLossConfig``
and ``MarginConfig`` (``TrainConfig.center`` / ``.margin``), so these defaults are declared
here only. The loss weight lambda lives in the train config (it multiplies the center term
outside the loss module).

This module imports nothing heavy (no torch): the train config and the CLI read it at startup.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class CenterLossConfig:
    """Constructor arguments of every center loss (``create_center_loss(name, C, D, **kw)``)."""

    alpha: float = 0.5
    """Center learning rate of ECCV Alg. 1 line 6, c_j <- c_j - alpha * Delta c_j, in [0, 1].
    ECCV 2016 Sec. 4.2 uses 0.5. Also the rate of the ACL gamma updates (Eq. 7-8)."""

    alpha_decay: float = 1.0
    """mu in (0, 1]: the center rate at step t is alpha * mu^t (``--alpha-decay``; 1 = a
    constant alpha, ECCV). IJCV Alg. 1 line 6 and caffe-face move the centers with the
    decaying rate mu^t; e.g. 0.9999 halves alpha every ~6.9K steps."""

    rho: float = 0.0
    """Radius of the generalized center (IJCV Eq. 9-10); 0 is the plain point center.
    IJCV Table 5 / Fig. 5 use 5..25 (faces) and 5 (MNIST)."""

    count_offset: float = 1.0
    """Added to the per-class count in the denominators of Eq. 4 (centers) and Eq. 7 (ACL
    gammas): 1 as in ECCV Eq. 4 (IJCV prints a tiny epsilon instead, which makes a class
    seen once jump straight onto its feature when alpha = 1)."""

    gamma_eps: float = 1e-5
    """Epsilon of the ACL-gamma update denominator (IJCV Eq. 8, a sum of squared weight norms,
    not a count, so it keeps the paper's small epsilon)."""

    gamma_init: float = 1.0
    """Initial value of the ACL / ACL-gamma center scales gamma_j (c_j = gamma_j w_j). The
    paper does not state one; the Eq. 7-8 moving average makes it forgotten in a few steps."""

    gamma: float = 1e-3
    """Weight of the center invariant term of CIL (Wu 2018 Eq. 9; gamma = 0.001 for faces in
    Sec. 4.4, 5e-7..1e-5 for the MNIST toy of Sec. 4.2). Absolute weight: it is NOT multiplied
    by lambda (Wu Eq. 9: L_s + gamma L_I + lambda L_c)."""

    center_init: str = "xavier"
    """Initial centers: ``xavier`` (caffe-face's filler, U(-sqrt(3/D), sqrt(3/D))), ``gaussian``
    (N(0, 0.01^2)) or ``zeros``. IJCV Sec. 3.2 found no difference between options."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1] (ECCV Eq. 4), got {self.alpha}")
        if not 0.0 < self.alpha_decay <= 1.0:
            raise ValueError(f"alpha_decay must be in (0, 1], got {self.alpha_decay}")
        if self.rho < 0:
            raise ValueError(f"rho must be >= 0, got {self.rho}")
        if self.count_offset < 0 or self.gamma_eps < 0 or self.gamma < 0:
            raise ValueError("count_offset, gamma_eps and gamma must be >= 0")
        if self.center_init not in ("xavier", "gaussian", "zeros"):
            raise ValueError(
                f"center_init must be xavier, gaussian or zeros, got {self.center_init!r}"
            )

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


@dataclass(frozen=True)
class HeadConfig:
    """One parametrised margin head: target logit s * (cos(m1*theta + m2) - m3).

    ``s = None`` uses the feature norm ||x|| as the scale (SphereFace's A-softmax, weights
    normalised, features not). SphereFace's annealing blends the target logit as
    (lam * cos + psi) / (1 + lam) with lam = max(lambda_min, lambda_base *
    (1 + lambda_gamma * step) ** -lambda_power); ``lambda_base = 0`` disables it.
    """

    s: float | None = None
    """Scale; None = ||x|| (A-softmax)."""

    m1: float = 1.0
    """Multiplicative angular margin (SphereFace m = 4)."""

    m2: float = 0.0
    """Additive angular margin (ArcFace 0.5)."""

    m3: float = 0.0
    """Additive cosine margin (CosFace / AM-softmax 0.35)."""

    lambda_base: float = 0.0
    """SphereFace annealing base (1000 in the released sphereface prototxt); 0 = no annealing."""

    lambda_gamma: float = 0.12
    lambda_power: float = 1.0
    lambda_min: float = 5.0
    """Final lambda of the annealing (5 in the released sphereface_model.prototxt, m = 4)."""

    def __post_init__(self) -> None:
        if self.m1 < 1:
            raise ValueError(f"m1 must be >= 1, got {self.m1}")
        if self.s is not None and self.s <= 0:
            raise ValueError(f"s must be > 0 or None, got {self.s}")
        if self.m2 < 0 or self.m3 < 0 or self.lambda_base < 0 or self.lambda_min < 0:
            raise ValueError("m2, m3, lambda_base and lambda_min must be >= 0")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


HEAD_PRESETS: dict[str, HeadConfig] = {
    # SphereFace (Liu et al. 2017): m = 4, ||x|| scale, lambda annealed 1000 -> 5.
    "sphereface": HeadConfig(s=None, m1=4.0, lambda_base=1000.0),
    # CosFace (Wang et al. 2018): s = 64, m = 0.35 (AM-softmax uses s = 30).
    "cosface": HeadConfig(s=64.0, m3=0.35),
    # ArcFace (Deng et al. 2019): s = 64, m = 0.5.
    "arcface": HeadConfig(s=64.0, m2=0.5),
}


@dataclass(frozen=True)
class MarginConfig:
    """The margin parameters of a run's head, each ``None`` = the head preset's value.

    Applied on top of ``HEAD_PRESETS[head]`` (``apply``); the plain ``softmax`` head has no
    margin, so a run with ``head = "softmax"`` and any of these set is rejected. A margin
    config cannot switch a head to the feature-norm scale (``HeadConfig.s = None``): that is
    the ``sphereface`` preset.
    """

    s: float | None = None
    """Scale s of the target logit s * (cos(m1 theta + m2) - m3); None = the preset's
    (64 for cosface and arcface, ||x|| for sphereface). AM-softmax uses 30."""

    m1: float | None = None
    """Multiplicative angular margin, >= 1; None = the preset's (sphereface 4, others 1)."""

    m2: float | None = None
    """Additive angular margin, >= 0; None = the preset's (arcface 0.5, others 0)."""

    m3: float | None = None
    """Additive cosine margin, >= 0; None = the preset's (cosface 0.35, others 0)."""

    def __post_init__(self) -> None:
        if self.s is not None and self.s <= 0:
            raise ValueError(f"margin s must be > 0, got {self.s}")
        if self.m1 is not None and self.m1 < 1:
            raise ValueError(f"margin m1 must be >= 1, got {self.m1}")
        for name in ("m2", "m3"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"margin {name} must be >= 0, got {value}")

    def given(self) -> dict[str, float]:
        """The parameters that were set (``HeadConfig`` field -> value), for ``create_head``."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    def apply(self, preset: HeadConfig) -> HeadConfig:
        """``preset`` with the given parameters replaced."""
        from dataclasses import replace

        return replace(preset, **self.given())

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]
