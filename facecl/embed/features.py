"""Face features as the center-loss papers define them: FC1(image) fused with FC1(hflip(image)).

Wen et al. (ECCV 2016, IJCV 2019) and SphereFace use "the concatenation of the FC1 features of
the original image and of its horizontally flipped version" as the face representation. This
module holds that computation, independent of files and backends:

* :func:`preprocess` turns uint8 RGB crops ``(B, H, W, 3)`` into the network input
  ``(B, 3, H, W)`` float32, ``(x - mean) / scale`` with the model's
  :class:`~facecl.models.input_spec.InputSpec` (numpy, shared by the torch and ONNX paths).
* ``FUSIONS`` names how the two FC1 vectors ``a`` (image) and ``b`` (flip) become one:
  ``concat`` ``[a, b]`` (2D, the papers' default), ``sum`` ``a + b``, ``mean`` ``(a + b) / 2``,
  ``none`` ``a`` (no flip pass at all).
* :func:`flip_features` runs a backbone on a batch and its flip and fuses; :class:`FlipFusion`
  is the same thing as an ``nn.Module`` (what ``facecl export --with-flip`` exports).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import numpy as np
import torch
from torch import nn

from facecl.models.input_spec import InputSpec, normalise
from facecl.registry import Registry

FusionFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
FUSIONS: Registry[FusionFn] = Registry("fusion")


@FUSIONS.register("concat")
def _concat(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # (B,D),(B,D) -> (B,2D)
    return torch.cat([a, b], dim=1)


@FUSIONS.register("sum")
def _sum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # (B,D),(B,D) -> (B,D)
    return a + b


@FUSIONS.register("mean")
def _mean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # (B,D),(B,D) -> (B,D)
    return (a + b) * 0.5


@FUSIONS.register("none")
def _none(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # (B,D) -> (B,D); b is unused
    return a


def uses_flip(fusion: str) -> bool:
    """Whether a fusion needs the flipped pass (all but ``none``)."""
    FUSIONS.get(fusion)
    return fusion != "none"


def fused_dim(feature_dim: int, fusion: str) -> int:
    """Length of the fused vector for a backbone with ``feature_dim`` FC1 outputs."""
    FUSIONS.get(fusion)
    return 2 * feature_dim if fusion == "concat" else feature_dim


def preprocess(images: np.ndarray, spec: InputSpec | None = None) -> np.ndarray:
    """uint8 RGB ``(B, H, W, 3)`` -> float32 ``(B, 3, H, W)``, ``(x - mean) / scale`` of
    ``spec`` (``facecl.models.input_spec.MEAN``/``SCALE`` without one)."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected (B, H, W, 3) RGB images, got shape {images.shape}")
    return spec.normalise(images) if spec is not None else normalise(images)


def fuse(a: torch.Tensor, b: torch.Tensor | None, fusion: str) -> torch.Tensor:
    """Fuse FC1 features of images ``a`` (B,D) and of their flips ``b`` (B,D)."""
    fn = FUSIONS.get(fusion)
    if b is None:
        if uses_flip(fusion):
            raise ValueError(f"fusion {fusion!r} needs the features of the flipped images")
        b = a
    return fn(a, b)


def l2_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Rows scaled to unit L2 norm: (B,D) -> (B,D)."""
    return x / x.norm(dim=1, keepdim=True).clamp_min(eps)


def flip_features(
    features: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    fusion: str = "concat",
    l2: bool = False,
) -> torch.Tensor:
    """Fused features of a normalised batch ``x`` (B,3,H,W) -> (B,D') with ``features`` = FC1.

    Image and flip go through ``features`` as one batch of 2B, so the backbone runs once.
    """
    if uses_flip(fusion):
        both = features(torch.cat([x, x.flip(3)], dim=0))  # (2B,D)
        a, b = both[: x.shape[0]], both[x.shape[0] :]
        out = fuse(a, b, fusion)
    else:
        out = fuse(features(x), None, fusion)
    return l2_normalize(out) if l2 else out


class FlipFusion(nn.Module):
    """A backbone wrapped to output fused features: (B,3,H,W) -> (B,D')."""

    def __init__(self, backbone: nn.Module, fusion: str = "concat", l2: bool = False):
        super().__init__()
        FUSIONS.get(fusion)
        self.backbone = backbone
        self.fusion = fusion
        self.l2 = l2
        # nn.Module attributes type as Tensor | Module: these are the backbone's plain ints.
        self.feature_dim = fused_dim(int(cast(int, backbone.feature_dim)), fusion)
        self.input_size = tuple(cast(tuple[int, int], backbone.input_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B,3,H,W) -> (B,D')
        return flip_features(self.backbone, x, self.fusion, self.l2)
