"""The ``tiny`` test backbone. (The sphere nets are in ``sphere.py``, LeNet++ in ``lenet.py``.)"""

from __future__ import annotations

import torch
from torch import nn

from facecl.models import register_backbone


class TinyNet(nn.Module):
    """A very small CNN for tests and smoke runs: conv-PReLU x2, FC to ``feature_dim``."""

    def __init__(self, feature_dim: int = 16, input_size: tuple[int, int] = (112, 96)):
        super().__init__()
        self.feature_dim = feature_dim
        self.input_size = tuple(input_size)
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.PReLU(8),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.PReLU(16),
            nn.AdaptiveAvgPool2d((4, 4)),
        )
        self.fc1 = nn.Linear(16 * 4 * 4, feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B,3,H,W) -> (B,D)
        return self.fc1(self.body(x).flatten(1))


@register_backbone("tiny")
def tiny(feature_dim: int = 16, input_size: tuple[int, int] = (112, 96), **_: object) -> nn.Module:
    return TinyNet(feature_dim=feature_dim, input_size=input_size)
