"""Mixed precision of a train step: the autocast context and the grad scaler's inf check,
for the one-process step (``loop.train_step``) and the class-sharded one
(``shard_classes.sharded_train_step``) alike."""

from __future__ import annotations

import contextlib

import torch


def autocast(device_type: str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to ``dtype`` on ``device_type``, or no context when ``dtype`` is
    None (float32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=dtype)


def found_inf_flags(
    scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer
) -> list[torch.Tensor]:
    """After ``scaler.unscale_(optimizer)``: the scaler's per-device inf/NaN flags (1-element
    float tensors, nonzero where a gradient overflowed; ``scaler.step`` reads them)."""
    per_device = scaler._per_optimizer_states[id(optimizer)]["found_inf_per_device"]
    flags = list(per_device.values())
    if not flags:
        raise RuntimeError("found_inf() before scaler.unscale_(optimizer)")
    return flags


def found_inf(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """After ``scaler.unscale_(optimizer)``: a 0-d bool tensor, True when the gradients hold
    an inf/NaN (``scaler.step`` will skip this step). Stays on the device: no host sync."""
    flags = found_inf_flags(scaler, optimizer)
    total = flags[0]
    for flag in flags[1:]:
        total = total + flag.to(total.device, non_blocking=True)
    return total > 0
