"""A RecordIO folder (``facecl.pack.recordio``) as a pack input.

Every face record whose header is readable and whose label agrees with the identity ranges
becomes an :class:`~facecl.pack.inputs.Item`; the others are recorded in ``skipped.csv`` with
the reason (``bad_magic``, ``truncated``, ``bad_header``, ``bad_label``, ``label_mismatch``,
...). JPEGs are decoded while the shards are written, so an undecodable one is recorded there
(``undecodable``), as is one of another size (``wrong_size``).

Identities are class ids; their names are the zero-padded ids (``00042``), so sorted names
keep the ids' order. ``--names FILE`` (``ID<TAB>NAME`` per line) names them, and only then can
``--exclude`` remove identities by name.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from facecl.align.transform import SIZES
from facecl.columns import LazySequence
from facecl.errors import InputError
from facecl.models.input_spec import InputSpec
from facecl.pack.inputs import RECORDIO, Item, PackInput, SkipItem, skip_row
from facecl.pack.recordio import (
    IDX_FILE,
    PROPERTY_FILE,
    REC_FILE,
    BadRecord,
    FaceRecord,
    RecordFile,
    Scan,
    decode_image,
    read_property,
    scan,
    unpack,
)
from facecl.textio import read_text


def read_names(path: str | os.PathLike) -> dict[int, str]:
    """``class id -> name`` from a file of ``ID<TAB>NAME`` (or ``ID NAME``) lines."""
    out: dict[int, str] = {}
    owner: dict[str, int] = {}
    p = Path(path)
    if not p.is_file():
        raise InputError(f"names file {p} not found", "pass a file of 'ID<TAB>NAME' lines")
    for n, line in enumerate(read_text(p).splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.strip().split(None, 1)
        if len(parts) != 2 or not parts[0].isdigit():
            raise InputError(
                f"{p}:{n}: expected 'ID<TAB>NAME', got {line.strip()[:60]!r}", "fix the line"
            )
        cid, name = int(parts[0]), parts[1].strip()
        if cid in out or name in owner:
            raise InputError(
                f"{p}:{n}: class {cid} / name {name!r} is given twice",
                "each class id needs its own name",
            )
        out[cid], owner[name] = name, cid
    return out


class RecordItems(LazySequence[Item]):
    """The faces of a RecordIO set as columns (record key, offset, label: 20 bytes a face)
    rather than an :class:`Item` per face; ``items[i]`` makes face ``i``'s Item on demand."""

    def __init__(
        self, rec: Path, faces: Sequence[FaceRecord], name_of: Callable[[int], str], width: int
    ):
        n = len(faces)
        self.rec, self.width = rec, width
        self.keys = np.fromiter((f.key for f in faces), np.int64, n)
        self.offsets = np.fromiter((f.offset for f in faces), np.int64, n)
        self.labels = np.fromiter((f.label for f in faces), np.int32, n)
        self.names = {int(lab): name_of(int(lab)) for lab in np.unique(self.labels)}

    def __len__(self) -> int:
        return len(self.keys)

    def _item(self, i: int) -> Item:
        key, name = int(self.keys[i]), self.names[int(self.labels[i])]
        return Item(
            key=f"{name}/{key:0{self.width}d}",
            identity=name,
            file=self.rec,
            source=f"{REC_FILE}#{key}",
            offset=int(self.offsets[i]),
        )


class RecordLoader:
    """Item -> uint8 (H, W, 3) RGB from its record; one file, shared by the decode threads."""

    def __init__(self, rec: Path, size: tuple[int, int]):
        self.file = RecordFile(rec)
        self.size = size

    def __call__(self, item: Item) -> np.ndarray:
        try:
            img = decode_image(unpack(self.file.read(item.offset))[1])
        except BadRecord as e:
            raise SkipItem(e.reason, e.detail) from None
        if img.shape[:2] != self.size:
            h, w = img.shape[:2]
            raise SkipItem("wrong_size", f"{h}x{w}, the set is {self.size[0]}x{self.size[1]}")
        return img


def _crop_size(folder: Path, found: Scan) -> tuple[int, int]:
    """(H, W) from ``property``, else from the first face that decodes."""
    prop = read_property(folder / PROPERTY_FILE)
    if prop is not None:
        return prop[1], prop[2]
    with RecordFile(folder / REC_FILE) as rec:
        for face in found.faces:
            try:
                h, w = decode_image(unpack(rec.read(face.offset))[1]).shape[:2]
                return h, w
            except BadRecord:
                continue
    raise InputError(f"no record of {folder / REC_FILE} decodes", "the .rec file is damaged")


def _spec(size: tuple[int, int]) -> InputSpec:
    template = f"{size[0]}x{size[1]}"
    return InputSpec.for_template(template) if template in SIZES else InputSpec(size)


def recordio_input(folder: Path, names_file: str = "") -> PackInput:
    """The faces of a RecordIO folder, labelled by their headers (checked against the identity
    ranges when the index has them)."""
    found = scan(folder)
    names = read_names(names_file) if names_file else None
    labels = sorted({f.label for f in found.faces})
    width = len(str(labels[-1])) if labels else 1
    if names is not None:
        missing = [lab for lab in labels if lab not in names]
        if missing:
            raise InputError(
                f"names file {names_file} has no name for class {missing[0]} "
                f"({len(missing)} classes unnamed)",
                "give every class id of the RecordIO set a name",
            )

    cache: dict[int, str] = {-1: ""}  # one string per identity, shared by its items

    def name_of(label: int) -> str:
        if label not in cache:
            given = names.get(label) if names is not None else None
            cache[label] = given if given is not None else f"{label:0{width}d}"
        return cache[label]

    key_width = len(str(max((f.key for f in found.faces), default=0)))
    rec = folder / REC_FILE
    items = RecordItems(rec, found.faces, name_of, key_width)
    skipped = [
        skip_row(f"{REC_FILE}#{key}", name_of(label), reason, detail)
        for key, label, reason, detail in found.problems
    ]
    size = _crop_size(folder, found)
    loader = RecordLoader(rec, size)
    prop = read_property(folder / PROPERTY_FILE)
    source = {
        "format": "recordio",
        "files": [REC_FILE, IDX_FILE] + ([PROPERTY_FILE] if prop else []),
        "layout": found.layout,
        "faces": len(found.faces),
        "identities": found.identities,
        "label_mismatches": found.label_mismatches,
        "property": list(prop) if prop else None,
        "names": str(Path(names_file).resolve()) if names_file else None,
    }
    return PackInput(
        kind=RECORDIO,
        items=items,
        skipped=skipped,
        rows=len(items) + len(skipped),
        spec=_spec(size),
        load=loader,
        names_known=names is not None,
        source=source,
        close=loader.file.close,
    )
