"""A verification ``.bin`` as an embed :class:`~facecl.embed.sources.Source`: its crops fitted
to the model's input geometry.

The published sets hold 112x112 crops aligned to insightface's ArcFace template. A model of
that size takes them as stored. A model trained on the 112x96 template of the center-loss
papers takes columns 8..104: the ArcFace template is the 112x96 one shifted 8 px right
(``facecl.align.transform``), so that window *is* a 112x96 template crop, with no resampling.
Any other pairing of sizes is reported per image (the row keeps a NaN vector and the
reason), never resized silently. How the crops were fitted goes into the manifest.

Keys are ``<set>/<NNNNNN>`` (``agedb_30/000000``): the 0-based index of the image in the
file, so pair ``i`` is the rows of keys ``2i`` and ``2i+1``; the identity is unknown (empty).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from facecl.artifacts import input_ref
from facecl.embed.binset import read_bin
from facecl.embed.sources import ImageOrReason, Item, Source
from facecl.models.input_spec import InputSpec

ARCFACE_SIZE = (112, 112)


def template_offset(template: str) -> tuple[int, int] | None:
    """(dy, dx) of the window of a 112x112 ArcFace crop that is a crop of ``template``, or
    None when no integer shift of the ArcFace template gives it."""
    from facecl.align.transform import ARCFACE_TEMPLATE, SIZES, template_for

    if template not in SIZES:
        return None
    shift = ARCFACE_TEMPLATE.astype(np.float64) - template_for(template)  # (5, 2) x, y
    dx, dy = round(float(shift[0, 0])), round(float(shift[0, 1]))
    if not np.allclose(shift, [dx, dy], atol=1e-3):
        return None
    return dy, dx


def fit_description(spec: InputSpec | None) -> tuple[tuple[int, int, int, int] | None, str]:
    """The window (top, left, height, width) a 112x112 crop is cut to for ``spec`` (None:
    taken as stored), and the sentence the manifest records."""
    if spec is None or spec.size == ARCFACE_SIZE:
        return None, "as stored (112x112 ArcFace-aligned crops)"
    off = template_offset(spec.template) if spec.template else None
    h, w = spec.size
    if off is None or off[0] + h > ARCFACE_SIZE[0] or off[1] + w > ARCFACE_SIZE[1]:
        return None, f"not fitted: the model takes {spec.size_text} crops of no ArcFace window"
    top, left = off
    return (top, left, h, w), (
        f"rows {top}..{top + h}, columns {left}..{left + w} of each 112x112 ArcFace crop "
        f"(= the {spec.template} template, no resampling)"
    )


def _decode(data: bytes) -> ImageOrReason:
    import cv2

    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if img is None:
        return "unreadable image in .bin"
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def fit(img: ImageOrReason, window: tuple[int, int, int, int] | None) -> ImageOrReason:
    """A decoded .bin crop cut to ``window`` (or the reason it cannot be)."""
    if isinstance(img, str) or window is None:
        return img
    top, left, h, w = window
    if img.shape[:2] != ARCFACE_SIZE:
        return f"bin crop is {img.shape[0]}x{img.shape[1]}, not 112x112: cannot cut {h}x{w}"
    return np.ascontiguousarray(img[top : top + h, left : left + w])


def bin_source(path: Path, spec: InputSpec | None) -> Source:
    """A verification ``.bin``: one item per image, in file order; pairs kept as ``issame``."""
    bs = read_bin(path)
    digits = max(6, len(str(len(bs.images))))
    items = [Item(f"{bs.name}/{i:0{digits}d}", f"{path}#{i}", "") for i in range(len(bs.images))]
    window, how = fit_description(spec)

    def images(start: int) -> Iterator[ImageOrReason]:
        for data in bs.images[start:]:
            yield fit(_decode(data), window)

    notes: dict[str, object] = {"bin_set": bs.name, "bin_pairs": bs.n_pairs, "bin_fit": how}
    return Source("bin", items, input_ref(path), images, notes, issame=bs.issame)


__all__ = ["bin_source", "fit", "fit_description", "template_offset"]
