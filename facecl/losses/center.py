"""The center-loss family: one base class, one small override per variant.

References (equation numbers as in the papers, see docs/losses.md):
  ECCV  Wen et al. 2016, "A Discriminative Feature Learning Approach for Deep Face Recognition"
  IJCV  Wen et al. 2019, "A Comprehensive Study on Center Loss for Deep Face Recognition"
  Wu    Wu et al. 2018, "Deep face recognition with center invariant loss"

Every variant computes the same center term (IJCV Eq. 2 / 6 / 8 with the generalized center
of Eq. 9)::

    L_C = 1/(2m) * sum_i ||x_i - c'_{y_i}||^2,   c'_{y_i} = c_{y_i} + kappa_i (x_i - c_{y_i}),
    kappa_i = min(rho / d_i, 1),                  d_i = ||x_i - c_{y_i}||

and differs only in where the center c_{y_i} comes from (``centers_for``) and how its
state is updated (``_apply_update``): CL keeps a (C, D) buffer of centers, ACL a (C,) buffer of
scales gamma_j with c_j = gamma_j w_j (w = the head's weight), ACL-gamma one shared scale.
CIL adds Wu's center invariant term (``extra_terms``). Centers are buffers, never optimiser
parameters: ``update_centers`` applies the papers' moving-average rules under ``no_grad``.

Gradients: dL_C/dx_i = (x_i - c'_{y_i}) / m = (1 - kappa_i)(x_i - c_{y_i}) / m (IJCV Eq. 3 with
the generalized center), computed by treating c' as a constant, which is exact because c' is
the nearest point of the ball to x_i. Nothing flows into the centers, gammas or w from L_C.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from facecl.errors import CheckpointError, ConfigError
from facecl.losses.config import CenterLossConfig
from facecl.losses.distributed import ClassRange, gather_batch, sum_over_shards


def dynamic_center(x: torch.Tensor, c: torch.Tensor, rho: float) -> torch.Tensor:
    """The generalized center (IJCV Eq. 9): the point of the ball B(c, rho) nearest to x.

    x, c: (B, D). Returns c + kappa (x - c) with kappa = min(rho / ||x - c||, 1): on the sphere
    towards x when x is outside, x itself when inside. (The text after Eq. 9 prints
    ``c - rho (x - c)/||x - c||``, the far side of the sphere; Eq. 9 itself is right.)
    rho = 0 gives kappa = 0 and returns c exactly (``c + 0 * (x - c)``).
    """
    diff = x - c  # (B, D)
    d = diff.norm(dim=1, keepdim=True)  # (B, 1)
    kappa = (rho / d.clamp_min(torch.finfo(d.dtype).tiny)).clamp(max=1.0)  # (B, 1)
    return c + kappa * diff


def upcast(t: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 -> float32; float32 and float64 unchanged (losses never run in half)."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def _head_weight(
    head: nn.Module | None, who: str, num_classes: int, rows: torch.Tensor | None = None
) -> torch.Tensor:
    """The head's (C, D) weight as its logits use it, detached (the center term sends no
    gradient into w): w_j / ||w_j|| when the head normalises (``normalizes_weight``, the
    margin heads; IJCV Table 2 pairs ACL with the normalised w~), else the raw w_j.
    ``rows`` (N,): only those rows, (N, D) (no normalised (C, D) copy)."""
    weight = getattr(head, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise ConfigError(
            f"center loss {who!r} shares the head's weights (c_j = gamma_j w_j)",
            "pass the classification head (with a (C, D) .weight) to forward/update_centers",
        )
    if weight.shape[0] != num_classes:
        raise ConfigError(
            f"head weight has {weight.shape[0]} classes, center loss {who!r} {num_classes}",
            "build the head and the center loss with the same num_classes",
        )
    w = upcast(weight.detach() if rows is None else weight.detach()[rows])
    return F.normalize(w, dim=1) if getattr(head, "normalizes_weight", False) else w


class CenterLossBase(nn.Module):
    """Base of every center loss. Subclasses override the small hooks below, nothing else.

    ``forward(x (B,D), y (B,), head) -> scalar``: the center term L_C (the train loop
    multiplies it by lambda). ``terms`` / ``objective`` also return any extra term that has
    its own absolute weight (CIL's gamma L_I). ``update_centers(x, y, head)``: the paper's
    update of the center state with this step's features, before the optimiser step (ECCV
    Alg. 1 line 6 before line 7; ACL reads the head's W^t; all-gathers the batch under DDP).
    """

    name: ClassVar[str] = "base"
    class_rows: ClassVar[tuple[str, ...]] = ()
    """The ``state_dict`` keys whose first dimension is the class (a class shard holds rows
    ``[lo, hi)`` of them); the other keys are the same on every rank."""

    def __init__(
        self,
        num_classes: int,
        feature_dim: int,
        config: CenterLossConfig | None = None,
        class_counts: torch.Tensor | None = None,
    ):
        """``class_counts``: the training set's images per class (C,); only ``cil`` uses
        them (Wu's ``num_data``), the others accept and ignore them."""
        super().__init__()
        if num_classes < 1 or feature_dim < 1:
            raise ValueError(f"need num_classes, feature_dim >= 1: {num_classes}, {feature_dim}")
        self.num_classes = int(num_classes)
        self.feature_dim = int(feature_dim)
        self.config = config if config is not None else CenterLossConfig()
        self.rate = float(self.config.alpha)  # alpha * alpha_decay^step (``set_step``)
        self.class_range = ClassRange.full(self.num_classes)
        """The classes this module holds: all of them, or under ``--shard-classes`` one
        rank's range ``[lo, hi)`` (then ``num_classes`` is the range's size and the buffers
        hold its rows; ``facecl.train.shard_classes`` sets it)."""
        self._init_state()

    # ---- hooks -------------------------------------------------------------------------------
    def _init_state(self) -> None:
        """Register the buffers of this variant."""

    def centers_for(self, y: torch.Tensor, head: nn.Module | None) -> torch.Tensor:
        """c_{y_i} for each sample: (B,) -> (B, D), no grad."""
        raise NotImplementedError

    def all_centers(self, head: nn.Module | None) -> torch.Tensor:
        """All centers (C, D), no grad (for statistics)."""
        raise NotImplementedError

    def _apply_update(self, x: torch.Tensor, y: torch.Tensor, head: nn.Module | None) -> None:
        """Update the state from the (global) batch x (N, D), y (N,). Runs under no_grad."""
        raise NotImplementedError

    def extra_terms(
        self, x: torch.Tensor, y: torch.Tensor, head: nn.Module | None
    ) -> dict[str, torch.Tensor]:
        """Terms with their own absolute weight, added to the objective as they are."""
        return {}

    # ---- shared behaviour --------------------------------------------------------------------
    def set_step(self, step: int) -> None:
        """The center rate of step ``step``: alpha * alpha_decay^step (the train loop calls
        it before each step, like the heads' ``set_step``)."""
        self.rate = float(self.config.alpha * self.config.alpha_decay ** int(step))

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, head: nn.Module | None = None
    ) -> torch.Tensor:
        x32 = upcast(x)  # (B, D); the center term is computed in float32 (float64 stays)
        m = x32.shape[0]
        if m == 0:
            return x32.sum() * 0.0
        with torch.no_grad():
            c = self.centers_for(y, head).to(x32)  # (B, D) on x's device, in its dtype
            c = dynamic_center(x32.detach(), c, self.config.rho)  # (B, D), = c when rho = 0
        # 1/(2m) sum ||x - c'||^2 (IJCV Eq. 2/6/8/10); gradient (x - c')/m.
        return 0.5 * (x32 - c).pow(2).sum() / m

    def terms(
        self, x: torch.Tensor, y: torch.Tensor, head: nn.Module | None = None
    ) -> dict[str, torch.Tensor]:
        """``{"center": L_C, **extra}``: L_C is to be weighted by lambda, the others as they are."""
        return {"center": self(x, y, head), **self.extra_terms(x, y, head)}

    def objective(
        self, x: torch.Tensor, y: torch.Tensor, head: nn.Module | None, lam: float
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """lambda * L_C + extra terms (the part of the loss this module owns) and their values
        (detached 0-d tensors, left on the device: ``float()`` them when logging)."""
        parts = self.terms(x, y, head)
        total = lam * parts["center"]
        for key, value in parts.items():
            if key != "center":
                total = total + value
        return total, {k: v.detach() for k, v in parts.items()}

    @torch.no_grad()
    def update_centers(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        head: nn.Module | None = None,
        *,
        keep: torch.Tensor | None = None,
        same_size: bool = False,
    ) -> None:
        """Apply the paper's update rule with the batch (global batch under torch.distributed).

        ``keep``: a 0-d bool tensor; where False the state stays as it was (a step the AMP
        grad scaler skips), selected on the device without a host sync. ``same_size``: every
        rank holds the same batch size (no size all-gather).
        """
        x, y = gather_batch(upcast(x.detach()), y.detach(), same_size=same_size)
        if x.shape[0]:
            self.apply_update(x, y, head, keep=keep)

    @torch.no_grad()
    def apply_update(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        head: nn.Module | None = None,
        *,
        keep: torch.Tensor | None = None,
    ) -> None:
        """The update with the batch as given (no gather): ``update_centers``'s second half.
        A class shard calls it on every rank with the samples of its classes (labels local
        to its range), also with none: ACL-gamma sums over the shards."""
        if keep is None:
            self._apply_update(x, y, head)
            return
        before = [b.clone() for b in self.buffers(recurse=False)]
        self._apply_update(x, y, head)
        for buf, old in zip(self.buffers(recurse=False), before, strict=True):
            buf.copy_(torch.where(keep, buf, old))

    @torch.no_grad()
    def stats(
        self, x: torch.Tensor, y: torch.Tensor, head: nn.Module | None = None
    ) -> dict[str, float]:
        """Mean / percentiles of the feature-to-center distance d_i, and center norms."""
        x32 = upcast(x.detach())
        if x32.shape[0] == 0:
            return {}
        return distance_stats(self.distances(x32, y, head), self.center_norms(head), self.config)

    @torch.no_grad()
    def distances(self, x: torch.Tensor, y: torch.Tensor, head: nn.Module | None) -> torch.Tensor:
        """d_i = ||x_i - c_{y_i}||: (B, D), (B,) -> (B,)."""
        x32 = upcast(x.detach())
        return (x32 - self.centers_for(y, head).to(x32)).norm(dim=1)

    @torch.no_grad()
    def center_norms(self, head: nn.Module | None) -> torch.Tensor:
        """||c_j|| of every center this module holds: (C,)."""
        return self.all_centers(head).norm(dim=1)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, feature_dim={self.feature_dim}, {self.config}"

    @classmethod
    def from_state(
        cls,
        num_classes: int,
        feature_dim: int,
        config: CenterLossConfig,
        state: dict[str, torch.Tensor],
    ) -> CenterLossBase:
        """Rebuild from a checkpoint's ``loss_state`` (what the state holds, e.g. CIL's
        counts, comes from it)."""
        cls._check_state(state)
        loss = cls(num_classes, feature_dim, config, class_counts=state.get("class_counts"))
        loss.load_state_dict(state)
        return loss

    @classmethod
    def _check_state(cls, state: dict[str, torch.Tensor]) -> None:
        """Refuse a ``loss_state`` this variant cannot use (a one-line FaceclError)."""


def class_counts(y: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """n_j, the batch's samples of each class: (N,) labels -> (C,) counts of ``dtype``.

    A dense ``index_add_``: no data-dependent shape, so no host sync on CUDA (``torch.unique``
    and CUDA ``bincount`` wait for the device to learn their output size)."""
    ones = torch.ones(y.shape, dtype=dtype, device=y.device)
    return torch.zeros(num_classes, dtype=dtype, device=y.device).index_add_(0, y, ones)


def distance_stats(d: torch.Tensor, norms: torch.Tensor, config: CenterLossConfig) -> dict:
    """The logged statistics of the feature-to-center distances d (N,) and the center norms
    (C,): mean and percentiles of d, mean and std of the norms, the share within rho."""
    q = torch.quantile(d, torch.tensor([0.5, 0.9, 0.99], dtype=d.dtype, device=d.device))
    out = {
        "center_dist_mean": float(d.mean()),
        "center_dist_p50": float(q[0]),
        "center_dist_p90": float(q[1]),
        "center_dist_p99": float(q[2]),
        "center_norm_mean": float(norms.mean()),
        "center_norm_std": float(norms.std()) if norms.numel() > 1 else 0.0,
    }
    if config.rho > 0:
        out["within_rho_frac"] = float((d <= config.rho).float().mean())
    return out


class NoCenterLoss(CenterLossBase):
    """``none``: softmax / margin head only. The term is 0 and there is no state."""

    name = "none"

    def forward(self, x, y, head=None):
        x32 = upcast(x)
        return x32.new_zeros(()) + x32.sum() * 0.0  # +0.0, still attached to the graph

    def centers_for(self, y, head):
        raise NotImplementedError("the 'none' center loss has no centers")

    def all_centers(self, head):
        raise NotImplementedError("the 'none' center loss has no centers")

    def _apply_update(self, x, y, head) -> None:
        return None

    @torch.no_grad()
    def update_centers(self, x, y, head=None, *, keep=None, same_size=False) -> None:
        return None

    def stats(self, x, y, head=None) -> dict[str, float]:
        return {}


class CenterLoss(CenterLossBase):
    """``cl``: ECCV Eq. 2-4 / IJCV Eq. 2-4; centers are a (C, D) buffer."""

    name = "cl"
    class_rows: ClassVar[tuple[str, ...]] = ("centers",)
    centers: torch.Tensor

    def _init_state(self) -> None:
        c = torch.empty(self.num_classes, self.feature_dim)
        kind = self.config.center_init
        if kind == "xavier":  # caffe's xavier filler: U(-a, a), a = sqrt(3 / fan_in), fan_in = D
            bound = (3.0 / self.feature_dim) ** 0.5
            nn.init.uniform_(c, -bound, bound)
        elif kind == "gaussian":
            nn.init.normal_(c, 0.0, 0.01)
        else:
            c.zero_()
        self.register_buffer("centers", c)  # (C, D)

    def centers_for(self, y, head):
        return self.centers[y]

    def all_centers(self, head):
        return self.centers

    def _apply_update(self, x, y, head) -> None:
        # ECCV Eq. 4: Delta c_j = sum_{i: y_i = j} (c_j - x_i) / (1 + n_j); c_j -= alpha Delta c_j
        cfg = self.config
        _alpha_step(self.centers, self.centers[y] - x, y, cfg.count_offset, self.rate)


def _alpha_step(
    buf: torch.Tensor, diff: torch.Tensor, y: torch.Tensor, offset: float, alpha: float
) -> None:
    """The papers' per-class rule on a (C, ...) buffer: for each class j in the batch,
    Delta_j = sum_{i: y_i = j} diff_i / (offset + n_j), then buf_j -= alpha * Delta_j.

    ``diff`` is (N,) or (N, D); ECCV Eq. 4 (centers) and IJCV Eq. 7 (gammas) both use it.
    """
    n_y = class_counts(y, buf.shape[0], diff.dtype)[y]  # (N,) n_{y_i}
    denom = (offset + n_y).view(-1, *([1] * (diff.dim() - 1)))
    # sum_i diff_i / (offset + n_j), accumulated per sample: O(N D), whatever C is
    buf.index_add_(0, y, (diff / denom).to(buf.dtype), alpha=-alpha)


class AdvancedCenterLoss(CenterLossBase):
    """``acl``: IJCV Eq. 6-7, c_j = gamma_j w_j with a (C,) buffer of gammas."""

    name = "acl"
    class_rows: ClassVar[tuple[str, ...]] = ("gammas",)
    gammas: torch.Tensor

    def _init_state(self) -> None:
        self.register_buffer("gammas", torch.full((self.num_classes,), self.config.gamma_init))

    def centers_for(self, y, head):
        w = _head_weight(head, self.name, self.num_classes, y)  # (B, D)
        return self.gammas[y].to(w).unsqueeze(1) * w

    def all_centers(self, head):
        w = _head_weight(head, self.name, self.num_classes)
        return self.gammas.to(w).unsqueeze(1) * w

    def _apply_update(self, x, y, head) -> None:
        # IJCV Eq. 7: Delta gamma_j = sum_{i: y_i = j} (gamma_j - x_i.w_j / w_j.w_j) / (eps + n_j)
        w = _head_weight(head, self.name, self.num_classes, y).to(x)  # (N, D)
        proj = (x * w).sum(1) / (w * w).sum(1).clamp_min(torch.finfo(x.dtype).tiny)  # (N,)
        cfg = self.config
        _alpha_step(self.gammas, self.gammas[y].to(x) - proj, y, cfg.count_offset, self.rate)


class SharedGammaCenterLoss(CenterLossBase):
    """``acl-gamma``: IJCV Eq. 8, c_j = gamma w_j with one shared scalar gamma."""

    name = "acl-gamma"
    gamma: torch.Tensor

    def _init_state(self) -> None:
        self.register_buffer("gamma", torch.tensor(float(self.config.gamma_init)))

    def centers_for(self, y, head):
        w = _head_weight(head, self.name, self.num_classes, y)
        return self.gamma.to(w) * w

    def all_centers(self, head):
        w = _head_weight(head, self.name, self.num_classes)
        return self.gamma.to(w) * w

    def _apply_update(self, x, y, head) -> None:
        # IJCV Eq. 8: Delta gamma = gamma - sum_i x_i.w_{y_i} / (eps + sum_i w_{y_i}.w_{y_i})
        w = _head_weight(head, self.name, self.num_classes, y).to(x)  # (N, D)
        # both sums run over the whole batch: over every rank's classes under --shard-classes
        sums = sum_over_shards(torch.stack([(x * w).sum(), (w * w).sum()]), self.class_range)
        target = sums[0] / (self.config.gamma_eps + sums[1])
        delta = self.gamma.to(x) - target
        self.gamma.sub_((self.rate * delta).to(self.gamma.dtype))


def _old_cil_state() -> CheckpointError:
    return CheckpointError(
        "this 'cil' checkpoint has no class_counts: it was written before CIL used the "
        "training set's per-class counts as Wu's layer does (its gamma meant another strength)",
        "retrain the run with this facecl (facecl train --force)",
    )


def _check_counts(counts: object, num_classes: int) -> torch.Tensor:
    """The (C,) float tensor of per-class training counts, or a ConfigError saying why not."""
    if counts is None:
        raise ConfigError(
            "center loss 'cil' needs the training set's images per class (Wu's num_data)",
            "pass class_counts=COUNTS (C,) to create_center_loss; facecl train reads them "
            "from the pack's classes.json",
        )
    t = torch.as_tensor(counts).detach().to("cpu", torch.float64).reshape(-1)
    if t.numel() != num_classes or not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
        raise ConfigError(
            f"class_counts must be {num_classes} counts >= 0 (one per class), got "
            f"{t.numel()} values",
            "pass the training set's images per class, in label order",
        )
    return t.float()


class CenterInvariantLoss(CenterLoss):
    """``cil``: CL plus Wu 2018's center invariant term gamma/4 (||c_y||^2 - tau)^2 (Eq. 3, 9)
    as Wu's released layer computes it (caffe-face ``center_loss_layer.cpp``).

    tau = mean_k ||c_k||^2 over all C centers (Eq. 15). The term is averaged over the batch
    (forward ``sum_i (||c_{y_i}||^2 - tau)^2 / (4m)``) and weighted by ``config.gamma``
    (absolute, not times lambda). Its gradient w.r.t. x_i is Wu Eq. 20 divided by m:
    gamma/m (1/N_y)(1 - 1/C)(||c_y||^2 - tau) c_y, where N_y is class y's image count in the
    **whole training set** (the layer's ``num_data[label]``, read from the label counts; the
    paper's n_y), buffer ``class_counts``, so a sample's push does not depend on the batch
    size nor on the DDP split. Centers are updated by the CL rule (ECCV Eq. 4).
    """

    name = "cil"
    class_rows: ClassVar[tuple[str, ...]] = ("centers", "class_counts")
    class_counts: torch.Tensor

    def __init__(
        self,
        num_classes: int,
        feature_dim: int,
        config: CenterLossConfig | None = None,
        class_counts: torch.Tensor | None = None,
    ):
        counts = _check_counts(class_counts, int(num_classes))
        super().__init__(num_classes, feature_dim, config)
        self.register_buffer("class_counts", counts)  # (C,) N_j, saved in checkpoints

    @classmethod
    def _check_state(cls, state: dict[str, torch.Tensor]) -> None:
        if "class_counts" not in state:
            raise _old_cil_state()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if prefix + "centers" in state_dict and prefix + "class_counts" not in state_dict:
            raise _old_cil_state()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_terms(self, x, y, head):
        x32 = upcast(x)
        m = x32.shape[0]
        with torch.no_grad():
            c = self.centers.to(x32)  # (C, D)
            norms2 = torch.linalg.vector_norm(c, dim=1).square()  # (C,) fused, no (C, D) temp
            total = self.class_range.num_classes  # C (all shards)
            # tau over every shard's centers (each rank calls this, also with m = 0)
            tau = sum_over_shards(norms2.sum(), self.class_range) / total
        if m == 0:
            return {"invariant": x32.sum() * 0.0}
        with torch.no_grad():
            excess = norms2[y] - tau  # (B,) ||c_y||^2 - tau
            value = self.config.gamma / (4 * m) * excess.pow(2).sum()
            n_y = self.class_counts.to(x32)[y].clamp_min(1.0)  # (B,) N_{y_i}, training set
            coef = self.config.gamma / m * (1 - 1 / total) * excess / n_y  # (B,)
            grad = coef.unsqueeze(1) * c[y]  # (B, D) Wu Eq. 20, Wu's layer's num_data
        # value exactly `value`, gradient w.r.t. x exactly `grad`
        surrogate = (x32 * grad).sum()
        return {"invariant": value + (surrogate - surrogate.detach())}


CENTER_LOSS_CLASSES: tuple[type[CenterLossBase], ...] = (
    NoCenterLoss,
    CenterLoss,
    AdvancedCenterLoss,
    SharedGammaCenterLoss,
    CenterInvariantLoss,
)

__all__ = [
    "CENTER_LOSS_CLASSES",
    "AdvancedCenterLoss",
    "CenterInvariantLoss",
    "CenterLoss",
    "CenterLossBase",
    "NoCenterLoss",
    "SharedGammaCenterLoss",
    "dynamic_center",
]
