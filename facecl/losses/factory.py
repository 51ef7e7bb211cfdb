"""The two registries (center losses, heads) and their factories; see ``facecl.losses``.

Imported on first use of a name that needs torch (``facecl.losses.__getattr__``).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from typing import Any

from torch import nn

from facecl.errors import ConfigError
from facecl.losses.center import CENTER_LOSS_CLASSES, CenterLossBase
from facecl.losses.config import HEAD_PRESETS, CenterLossConfig, HeadConfig
from facecl.losses.heads import MarginHead, SoftmaxHead
from facecl.registry import Registry

CENTER_LOSSES: Registry = Registry("center loss")
"""name -> CenterLossBase subclass, built as cls(num_classes, feature_dim, config)."""

HEADS: Registry = Registry("head")
"""name -> factory(feature_dim, num_classes, **kw) -> nn.Module with forward(x, y) -> logits."""

for _cls in CENTER_LOSS_CLASSES:
    CENTER_LOSSES.register(_cls.name, _cls)


def _check_kwargs(kw: dict[str, Any], valid: list[str], what: str) -> None:
    for key in kw:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"unknown {what} option {key!r}", f"{hint}valid: {', '.join(valid)}")


def _softmax(feature_dim: int, num_classes: int, bias: bool = True) -> nn.Module:
    return SoftmaxHead(feature_dim, num_classes, bias=bias)


HEADS.register("softmax", _softmax)


def _margin_factory(preset: HeadConfig) -> Callable[..., nn.Module]:
    def make(feature_dim: int, num_classes: int, **kw: Any) -> nn.Module:
        _check_kwargs(kw, HeadConfig.field_names(), "head")
        try:
            config = dataclasses.replace(preset, **kw)
        except ValueError as exc:
            raise ConfigError(f"invalid head option: {exc}") from None
        return MarginHead(feature_dim, num_classes, config)

    return make


for _name, _preset in HEAD_PRESETS.items():
    HEADS.register(_name, _margin_factory(_preset))


def create_center_loss(
    name: str,
    num_classes: int,
    feature_dim: int,
    *,
    class_counts: Any = None,
    **kw: object,
) -> CenterLossBase:
    """Build a registered center loss; ``kw`` are ``CenterLossConfig`` fields (or ``config=``).

    ``class_counts``: the training set's images per class, (C,) in label order; ``cil``
    needs them (Wu's layer divides its gradient by them) and fails without, the others
    ignore them. ``facecl train`` passes the pack's ``classes.json`` counts."""
    cls = CENTER_LOSSES.get(name)
    config = kw.pop("config", None)
    if config is None:
        _check_kwargs(kw, CenterLossConfig.field_names(), "center loss")
        try:
            config = CenterLossConfig(**kw)  # type: ignore[arg-type]
        except ValueError as exc:
            raise ConfigError(f"invalid center loss option: {exc}") from None
    elif kw:
        raise ConfigError("pass either config= or keyword options, not both")
    return cls(num_classes, feature_dim, config, class_counts=class_counts)


def restore_center_loss(
    name: str,
    num_classes: int,
    feature_dim: int,
    config: CenterLossConfig,
    state: dict[str, Any],
) -> CenterLossBase:
    """A registered center loss rebuilt from a checkpoint's ``loss_state`` (CIL's counts
    travel in it; a CIL state written before they did is refused, ``CheckpointError``)."""
    cls = CENTER_LOSSES.get(name)
    return cls.from_state(num_classes, feature_dim, config, state)


def create_head(name: str, feature_dim: int, num_classes: int, **kw: object) -> nn.Module:
    """Build a registered head; margin heads take ``HeadConfig`` fields as overrides."""
    factory = HEADS.get(name)
    if name == "softmax":
        _check_kwargs(kw, ["bias"], "head")
    return factory(feature_dim, num_classes, **kw)


def list_center_losses() -> list[str]:
    return CENTER_LOSSES.names()


def list_heads() -> list[str]:
    return HEADS.names()
