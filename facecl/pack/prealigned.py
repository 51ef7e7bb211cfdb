"""A folder of crops that are already aligned, ``ROOT/<identity>/<image>``, as a pack input
(``facecl pack ROOT --prealigned``), without running align.

Every crop must have one size, 112x96 (the center-loss template) or 112x112 (insightface's
ArcFace template); the pack records that template as its geometry. Sizes are read from the
image headers before anything is written, and a crop of another size is an error naming the
file. Files that are not images, and files outside an identity folder, are recorded in
``skipped.csv``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facecl.align.transform import SIZES
from facecl.errors import InputError
from facecl.models.input_spec import InputSpec
from facecl.pack.inputs import PREALIGNED, Item, PackInput, SkipItem, skip_row

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})


def _image_size(path: Path) -> tuple[int, int] | None:
    """(H, W) from the file's header, or None when it is not a readable image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
    except (UnidentifiedImageError, OSError):
        return None
    return h, w


def _check_size(file: Path, size: tuple[int, int], first: tuple[Path, tuple[int, int]] | None):
    h, w = size
    if first is None:
        if f"{h}x{w}" not in SIZES:
            raise InputError(
                f"crop {file} is {h}x{w} (height x width)",
                f"pre-aligned crops must be {' or '.join(SIZES)}; align raw photos with "
                "'facecl align' instead",
            )
        return
    if size != first[1]:
        raise InputError(
            f"crop {file} is {h}x{w} but {first[0]} is {first[1][0]}x{first[1][1]}",
            "all pre-aligned crops must share one size",
        )


def load_crop(item: Item) -> np.ndarray:
    """A crop as uint8 (H, W, 3) RGB; an undecodable file is skipped, not fatal."""
    import cv2

    bgr = cv2.imread(str(item.file), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SkipItem("undecodable", str(item.file))
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)  # far cheaper than a strided ::-1 copy


def prealigned_input(root: Path) -> PackInput:
    """The crops under ``root/<identity>/``, in sorted order."""
    items: list[Item] = []
    skipped: list[dict[str, str]] = []
    first: tuple[Path, tuple[int, int]] | None = None
    keys: dict[str, Path] = {}
    for entry in sorted(root.iterdir()):
        if not entry.is_dir():
            skipped.append(skip_row(str(entry), "", "not_in_identity_folder", str(root)))
            continue
        for file in sorted(entry.iterdir()):
            if file.is_dir() or file.suffix.lower() not in IMAGE_SUFFIXES:
                skipped.append(skip_row(str(file), entry.name, "not_image", file.suffix or "-"))
                continue
            size = _image_size(file)
            if size is None:
                skipped.append(skip_row(str(file), entry.name, "undecodable", "no image header"))
                continue
            _check_size(file, size, first)
            first = first or (file, size)
            key = f"{entry.name}/{file.stem}"
            if key in keys:
                raise InputError(
                    f"{entry / file.stem}.* appears twice ({keys[key].name}, {file.name})",
                    "keep one file per image name",
                )
            keys[key] = file
            items.append(Item(key=key, identity=entry.name, file=file, source=str(file)))
    if first is None:
        raise InputError(
            f"{root} holds no crops in identity folders", "lay crops out as ROOT/<identity>/<image>"
        )
    template = f"{first[1][0]}x{first[1][1]}"
    return PackInput(
        kind=PREALIGNED,
        items=items,
        skipped=skipped,
        rows=len(items) + len(skipped),
        spec=InputSpec.for_template(template),
        load=load_crop,
        source={"format": "prealigned", "template": template},
    )
