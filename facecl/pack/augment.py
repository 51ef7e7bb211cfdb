"""Training augmentation: the presets behind ``--augment none|light|strong`` and the text
form of one albumentations transform.

``TrainConfig.augment`` is a list of strings (``--augment`` repeated, or a list in
``--config``). Each is a preset name, or one albumentations transform written as a call
with literal keyword arguments::

    augment = ["light", "GaussNoise(p=0.2)", "CLAHE(clip_limit=2.0, p=0.1)"]

The arguments are read with :func:`ast.literal_eval` (numbers, strings, tuples, lists,
True/False/None): nothing is evaluated. The presets are for aligned face crops, where
geometry must stay close to the template:

* ``light``: random resized crop (scale 0.9-1, aspect 0.95-1.05, p 0.5), colour jitter
  (brightness/contrast/saturation 0.8-1.2, no hue, p 0.5), grayscale (p 0.05);
* ``strong``: random resized crop (scale 0.75-1, aspect 0.9-1.1, p 0.8), colour jitter
  (0.6-1.4, hue +-0.05, p 0.8), Gaussian blur (kernel 3-5, p 0.2), downscale to 25-50 %
  and back (low-resolution probes, p 0.2), grayscale (p 0.1).

The transforms run in the DataLoader workers, on uint8 RGB crops, before the flip and the
normalisation; their random state is seeded from torch's per-worker seed
(``facecl.pack.dataset``), itself derived from ``TrainConfig.seed``.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Sequence
from typing import Any

from facecl.errors import ConfigError

Spec = tuple[str, dict[str, Any]]
"""(albumentations class name, keyword arguments)."""


def _light(h: int, w: int) -> list[Spec]:
    return [
        ("RandomResizedCrop", {"size": (h, w), "scale": (0.9, 1.0), "ratio": _ratio(h, w, 0.05),
                               "p": 0.5}),
        ("ColorJitter", {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.0,
                         "p": 0.5}),
        ("ToGray", {"p": 0.05}),
    ]  # fmt: skip


def _strong(h: int, w: int) -> list[Spec]:
    return [
        ("RandomResizedCrop", {"size": (h, w), "scale": (0.75, 1.0), "ratio": _ratio(h, w, 0.1),
                               "p": 0.8}),
        ("ColorJitter", {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.05,
                         "p": 0.8}),
        ("GaussianBlur", {"blur_limit": (3, 5), "p": 0.2}),
        ("Downscale", {"scale_range": (0.25, 0.5), "p": 0.2}),
        ("ToGray", {"p": 0.1}),
    ]  # fmt: skip


def _ratio(h: int, w: int, spread: float) -> tuple[float, float]:
    """Aspect ratios (width / height) around the crop's own."""
    r = w / h
    return (r * (1 - spread), r * (1 + spread))


PRESETS: dict[str, Callable[[int, int], list[Spec]]] = {
    "none": lambda h, w: [],
    "light": _light,
    "strong": _strong,
}


def parse_transform(text: str) -> Spec:
    """``"GaussianBlur(blur_limit=(3, 5), p=0.2)"`` -> ``("GaussianBlur", {...})``; a bare
    name has no arguments. Raises ``ConfigError`` for anything but a call with literal
    keyword arguments."""
    hint = "write a transform as Name or Name(arg=literal, ...), e.g. GaussianBlur(p=0.2)"
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        raise ConfigError(f"cannot read augment {text!r}", hint) from None
    if isinstance(node, ast.Name):
        return node.id, {}
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name) or node.args:
        raise ConfigError(f"augment {text!r} is not Name(keyword=value, ...)", hint)
    kwargs: dict[str, Any] = {}
    for kw in node.keywords:
        if kw.arg is None:
            raise ConfigError(f"augment {text!r}: ** is not allowed", hint)
        try:
            kwargs[kw.arg] = ast.literal_eval(kw.value)
        except ValueError:
            raise ConfigError(
                f"augment {text!r}: the value of {kw.arg} is not a literal", hint
            ) from None
    return node.func.id, kwargs


def expand(augment: Sequence[Any], size: tuple[int, int]) -> list[Any]:
    """Preset names replaced by their transforms for crops of ``size`` (H, W), call strings
    parsed; other specs (dicts, tuples) pass through for ``build_augment``."""
    out: list[Any] = []
    for item in augment:
        if isinstance(item, str) and item.strip() in PRESETS:
            out += PRESETS[item.strip()](*size)
        elif isinstance(item, str):
            out.append(parse_transform(item))
        else:
            out.append(item)
    return out


__all__ = ["PRESETS", "expand", "parse_transform"]
