"""The one device type and resolver of every stage (align, train, embed).

``Device`` is the choice a user makes (``--device``, a config file); ``resolve_device`` turns
it into what torch runs on. torch is imported only when resolving, so configs stay cheap.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal, get_args

from facecl.errors import ConfigError, UsageError

Device = Literal["auto", "cpu", "cuda"]
"""``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda``."""

DEVICES: tuple[str, ...] = get_args(Device)


def check_device(name: str) -> None:
    """Fail with the valid names unless ``name`` is a ``Device``."""
    if name not in DEVICES:
        raise ConfigError(f"unknown device {name!r}", f"choose one of: {', '.join(DEVICES)}")


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda`` without a GPU fails
    with the fix. Returns a torch device string (``"cpu"`` or ``"cuda"``)."""
    check_device(name)
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError(
            "--device cuda, but CUDA is not available (torch finds no CUDA device)",
            "use --device cpu, or --device auto to use a GPU only when there is one",
        )
    return name


CPU_BF16_ENV = "FACECL_CPU_BF16"
"""``0`` or ``1``: overrides :func:`cpu_native_bf16` (tests pin it to 0, so that what they
compare does not depend on the machine; also for a CPU whose check torch gets wrong)."""


@lru_cache(maxsize=1)
def cpu_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AMX tiles or AVX512-BF16), as torch's
    CPU capability check reports it (or ``$FACECL_CPU_BF16``); detected once per process.
    Without it bfloat16 is emulated and slower than float32."""
    import os

    forced = os.environ.get(CPU_BF16_ENV, "")
    if forced in ("0", "1"):
        return forced == "1"
    import torch

    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)
