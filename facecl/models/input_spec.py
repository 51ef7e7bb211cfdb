"""What a backbone's input is: the one home of the pixel normalisation and the crop geometry.

Every network in facecl takes RGB (or grey, MNIST) crops normalised as ``(x - MEAN) / SCALE``
in NCHW float32. The crop geometry (size and 5-point template) is the align stage's
(``facecl.align.transform``); an :class:`InputSpec` records which one a model was trained on
so that it travels with the model: the pack artifact records it, ``facecl train`` writes it
into the checkpoint (``input_spec``), ``facecl embed`` aligns raw photos with it and
``facecl export`` writes it into the ONNX metadata.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

MEAN = 127.5
"""Subtracted from uint8 pixels (the center-loss / SphereFace caffe models' mean)."""

SCALE = 128.0
"""Pixels are divided by this after the mean is subtracted (so inputs lie in [-1, 1))."""

COLOR = "RGB"
LAYOUT = "NCHW"
NORMALISATION = f"(x - {MEAN:g}) / {SCALE:g}, {COLOR}, {LAYOUT}"
"""Human-readable form, recorded in manifests and the ONNX metadata."""


@dataclass(frozen=True)
class InputSpec:
    """The crop geometry and normalisation of a model's input."""

    size: tuple[int, int]
    """(height, width) of the crop, e.g. (112, 96)."""

    template: str = ""
    """The align crop template (``facecl.align.transform.SIZES`` key, e.g. ``112x96``);
    empty for inputs that are not aligned faces (MNIST)."""

    landmarks: tuple[tuple[float, float], ...] = field(default_factory=tuple)
    """The template's five (x, y) points in crop pixels (empty without a template)."""

    color: str = COLOR
    channels: int = 3
    mean: float = MEAN
    scale: float = SCALE

    def __post_init__(self) -> None:
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError(f"input size must be (height, width), got {self.size}")

    @property
    def size_text(self) -> str:
        """``"HxW"``, e.g. ``"112x96"``."""
        return f"{self.size[0]}x{self.size[1]}"

    @property
    def normalisation(self) -> str:
        return f"(x - {self.mean:g}) / {self.scale:g}, {self.color}, {LAYOUT}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["size"] = list(self.size)
        d["landmarks"] = [list(p) for p in self.landmarks]
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputSpec:
        return cls(
            size=(int(data["size"][0]), int(data["size"][1])),
            template=str(data.get("template", "")),
            landmarks=tuple((float(x), float(y)) for x, y in data.get("landmarks", ())),
            color=str(data.get("color", COLOR)),
            channels=int(data.get("channels", 3)),
            mean=float(data.get("mean", MEAN)),
            scale=float(data.get("scale", SCALE)),
        )

    @classmethod
    def for_template(cls, template: str) -> InputSpec:
        """The spec of crops made by ``facecl align --size TEMPLATE``."""
        from facecl.align.transform import parse_size, template_for

        pts = template_for(template)
        return cls(
            size=parse_size(template),
            template=template,
            landmarks=tuple((round(float(x), 4), round(float(y), 4)) for x, y in pts),
        )

    def normalise(self, images: np.ndarray) -> np.ndarray:
        """uint8 ``(B, H, W, C)`` -> float32 ``(B, C, H, W)``, ``(x - mean) / scale``."""
        return normalise(images, self.mean, self.scale)


def normalise(images: np.ndarray, mean: float = MEAN, scale: float = SCALE) -> np.ndarray:
    """uint8 ``(..., H, W, C)`` -> float32 ``(..., C, H, W)``, ``(x - mean) / scale``, in one
    fused pass (subtract into a float32 buffer, then scale in place)."""
    chw = np.moveaxis(np.asarray(images), -1, -3)
    x = np.empty(chw.shape, np.float32)
    np.subtract(chw, np.float32(mean), out=x, dtype=np.float32)
    x *= np.float32(1.0 / scale)  # exact for scale = 128 (a power of two)
    return x
