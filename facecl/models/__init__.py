"""Backbones, selected by name from ``BACKBONES``.

Contract of every backbone: ``nn.Module`` taking ``(B, 3, H, W)`` float input already
normalised as ``(x - 127.5) / 128`` (RGB), returning the ``(B, feature_dim)`` FC1 feature.
Attributes: ``feature_dim`` (int) and ``input_size`` ((H, W), e.g. (112, 96)).
Built in: ``tiny`` (tests), ``sphere4/10/20/36/64`` (IJCV Table 4, 112x96, 512-d) and
``lenetpp`` (IJCV Table 1, MNIST: ``in_channels=1`` and 28x28 by default, 2-d feature).
Register with ``@register_backbone("name")`` on a factory ``f(**kwargs) -> nn.Module``.
"""

from __future__ import annotations

from facecl.registry import Registry

BACKBONES: Registry = Registry("backbone")


def register_backbone(name: str):
    return BACKBONES.register(name)


def create_backbone(name: str, **kwargs):
    _load_builtin()
    return BACKBONES.create(name, **kwargs)


def list_backbones() -> list[str]:
    _load_builtin()
    return BACKBONES.names()


def _load_builtin() -> None:
    # Importing the modules registers their backbones (once).
    import facecl.models.backbones  # noqa: F401
    import facecl.models.lenet  # noqa: F401
    import facecl.models.sphere  # noqa: F401
