"""Center-loss family, softmax and margin heads, selected by name from two registries.

Use::

    head = create_head("softmax", feature_dim, num_classes)        # or sphereface/cosface/arcface
    center = create_center_loss("cl", num_classes, feature_dim, alpha=0.5, rho=0.0)
    # cil also needs class_counts=COUNTS, the training set's images per class (C,)
    logits = head(x, y)                                              # (B, C)
    extra, parts = center.objective(x, y, head, lam)                 # lam * L_C + CIL's gamma L_I
    loss = F.cross_entropy(logits, y) + extra
    loss.backward()
    center.update_centers(x.detach(), y, head)                       # paper's rule, no optimiser
    optimizer.step()                                                 # after the centers
    head.set_step(step)                                              # SphereFace annealing

The order is ECCV Alg. 1's: the centers move with this step's features (and, for ACL, the
head's weight W^t) BEFORE the optimiser step (line 6, then line 7), as
``facecl.train.loop.train_step`` does.

``center(x, y, head)`` (forward) returns L_C alone (the lambda-weighted term). ``cil`` also
has an absolutely weighted term gamma * L_I (Wu 2018 Eq. 9): use ``objective`` (or ``terms``)
so it is not dropped. Centers are buffers (in ``state_dict``), not parameters: do not give
them to the optimiser. ``acl`` / ``acl-gamma`` read ``head.weight``: pass the head.

This package imports torch only when one of those names is first used (PEP 562
``__getattr__``), so ``facecl.losses.config`` (the defaults, read by the train config and the
CLI at startup) stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

from facecl.losses.config import HEAD_PRESETS, CenterLossConfig, HeadConfig, MarginConfig

_LAZY = {
    "CENTER_LOSSES": "facecl.losses.factory",
    "HEADS": "facecl.losses.factory",
    "create_center_loss": "facecl.losses.factory",
    "create_head": "facecl.losses.factory",
    "list_center_losses": "facecl.losses.factory",
    "list_heads": "facecl.losses.factory",
    "restore_center_loss": "facecl.losses.factory",
    "AdvancedCenterLoss": "facecl.losses.center",
    "CenterInvariantLoss": "facecl.losses.center",
    "CenterLoss": "facecl.losses.center",
    "CenterLossBase": "facecl.losses.center",
    "NoCenterLoss": "facecl.losses.center",
    "SharedGammaCenterLoss": "facecl.losses.center",
    "dynamic_center": "facecl.losses.center",
    "MarginHead": "facecl.losses.heads",
    "SoftmaxHead": "facecl.losses.heads",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'facecl.losses' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "CENTER_LOSSES",
    "HEADS",
    "HEAD_PRESETS",
    "AdvancedCenterLoss",
    "CenterInvariantLoss",
    "CenterLoss",
    "CenterLossBase",
    "CenterLossConfig",
    "HeadConfig",
    "MarginConfig",
    "MarginHead",
    "NoCenterLoss",
    "SharedGammaCenterLoss",
    "SoftmaxHead",
    "create_center_loss",
    "create_head",
    "dynamic_center",
    "list_center_losses",
    "list_heads",
    "restore_center_loss",
]
