"""What `facecl pack` reads: align artifacts, a RecordIO folder, or a folder of pre-aligned crops.

Each kind becomes one :class:`PackInput`: the images to pack (:class:`Item`), the rows it
could not use (already counted and recorded for ``skipped.csv``), the crop geometry, and the
``load`` function that turns an item into pixels. ``load`` raises :class:`SkipItem` for an
image that turns out to be unreadable while writing (a corrupt record): the stage counts and
records it instead of failing. The stage (``facecl.pack.stage``) does the rest the same way for
every kind.
"""

from __future__ import annotations

import os
from array import array
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facecl.align.artifact import ALIGNED, check_crop, faces_with_hashes
from facecl.artifacts import input_ref, is_artifact, read_manifest
from facecl.columns import HashColumn, LazySequence, StringColumn, shared_hashes
from facecl.errors import InputError, UsageError
from facecl.models.input_spec import InputSpec

ALIGN, RECORDIO, PREALIGNED = "align", "recordio", "prealigned"


@dataclass(frozen=True, slots=True)
class Item:
    """One crop to pack."""

    key: str  # "<identity>/<stem>", unique in the pack
    identity: str
    file: Path  # the crop image, or the .rec file holding it
    source: str  # where the crop came from (the align stage's source, a record, a file)
    offset: int = -1  # byte offset of its record in ``file`` (RecordIO), else -1
    sha256: str = ""  # the crop's hash in its align manifest ("" when not recorded)


class SkipItem(Exception):
    """Raised by a loader for an image to skip (counted and recorded), not to fail on."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


Loader = Callable[[Item], np.ndarray]
"""Item -> uint8 (H, W, 3) RGB; raises SkipItem or InputError."""


def skip_row(key: str, identity: str, reason: str, detail: str) -> dict[str, str]:
    """One ``skipped.csv`` row."""
    return {"key": key, "identity": identity, "reason": reason, "detail": detail}


@dataclass
class PackInput:
    kind: str  # ALIGN, RECORDIO or PREALIGNED
    items: Sequence[Item]  # a list, or columns that make each Item on demand (RecordIO)
    skipped: list[dict[str, str]]  # rows of skipped.csv
    rows: int  # everything read, packed or not
    spec: InputSpec
    load: Loader
    names_known: bool = True
    """False when identities are class ids only (RecordIO without --names): the overlap
    filter cannot run."""
    source: dict[str, Any] = field(default_factory=dict)
    """Facts about the input for the manifest's ``extra.source``."""
    close: Callable[[], None] = lambda: None


def input_kind(paths: Sequence[Path], prealigned: bool) -> str:
    """Which kind of input ``paths`` are (raises ``InputError`` for a wrong mix)."""
    from facecl.pack.recordio import is_recordio_dir

    if prealigned:
        if len(paths) != 1 or not paths[0].is_dir():
            raise InputError(
                "--prealigned takes one folder of crops, ROOT/<identity>/<image>",
                f"got {', '.join(map(str, paths))}",
            )
        return PREALIGNED
    rec = [p for p in paths if is_recordio_dir(p)]
    if rec:
        if len(paths) != 1:
            raise InputError(
                f"a RecordIO folder ({rec[0]}) must be packed on its own",
                "pack one RecordIO folder per call",
            )
        return RECORDIO
    for p in paths:
        if p.is_dir() and not is_artifact(p) and any(p.glob("*.rec")):
            raise InputError(
                f"{p} holds .rec files but not train.rec + train.idx",
                "name the record file train.rec and its index train.idx",
            )
    return ALIGN


# --------------------------------------------------------------------------- align artifacts


class AlignItems(LazySequence[Item]):
    """The crops of align artifacts as columns (~100 B a crop: its key and source as
    :class:`~facecl.columns.StringColumn` entries, its identity's code, its artifact and its
    32-byte sha256) rather than an :class:`Item` per crop; ``items[i]`` makes it on demand.
    The crop's file is ``<artifact>/aligned/<key>.png`` (``check_output``'s layout)."""

    def __init__(self) -> None:
        self.artifacts: list[Path] = []
        self._keys, self._sources = StringColumn(), StringColumn()
        self._ident, self._art = array("i"), array("H")
        self._names: list[str] = []
        self._code: dict[str, int] = {}
        self._sha = HashColumn()

    def add(self, artifact: int, key: str, identity: str, source: str, sha256: str) -> None:
        self._keys.append(key)
        self._sources.append(source)
        self._ident.append(self._code.setdefault(identity, len(self._code)))
        if len(self._names) < len(self._code):
            self._names.append(identity)
        self._art.append(artifact)
        self._sha.append(sha256)

    def __len__(self) -> int:
        return len(self._keys)

    def _item(self, i: int) -> Item:
        key = self._keys[i]
        return Item(
            key,
            self._names[self._ident[i]],
            self.artifacts[self._art[i]] / ALIGNED / f"{key}.png",
            self._sources[i],
            sha256=self._sha[i],
        )

    def repeated_key(self) -> tuple[int, int] | None:
        """(first holder, first repeat) of the first key listed twice, or None: the keys
        that share a hash are the only ones compared."""
        seen: dict[str, int] = {}
        keys = (self._keys[i] for i in range(len(self)))
        for i in shared_hashes(keys, len(self)):
            first = seen.setdefault(self._keys[i], i)
            if first != i:
                return first, i
        return None


def read_align_rows(artifact: Path, items: AlignItems, skipped: list[dict[str, str]]) -> None:
    """Add the packable crops of one align artifact to ``items`` and the rows it did not
    crop to ``skipped`` (``faces.csv`` and ``crops.sha256`` streamed)."""
    art = len(items.artifacts)
    items.artifacts.append(artifact)
    for row, sha in faces_with_hashes(artifact):
        output = row.output.strip()
        status = row.status.strip()
        if not output or status == "skipped":
            reason = row.reason.strip() or status or "no_crop"
            skipped.append(skip_row(row.source, row.identity, f"align:{reason}", str(artifact)))
            continue
        key = output[len(ALIGNED) + 1 : -len(".png")]  # aligned/<identity>/<stem>.png
        items.add(art, key, row.identity, row.source, sha)


def align_input_spec(artifacts: Sequence[Path]) -> InputSpec:
    """The crop geometry shared by the align artifacts (their ``size``); raises unless they
    were all aligned with the same ``--size``."""
    sizes: dict[str, list[Path]] = defaultdict(list)
    for a in artifacts:
        size = read_manifest(a, stage="align").config.get("size")
        if not isinstance(size, str) or not size:
            raise InputError(
                f"align artifact {a} records no crop size", "pass an output of 'facecl align'"
            )
        sizes[size].append(a)
    if len(sizes) > 1:
        seen = ", ".join(f"{s} ({', '.join(p.name for p in ps)})" for s, ps in sizes.items())
        raise InputError(
            f"the align artifacts have different crop sizes: {seen}",
            "all packed crops must share one size; align them with the same --size",
        )
    return InputSpec.for_template(next(iter(sizes)))


def read_rgb(path: Path, sha256: str = "") -> np.ndarray:
    """A crop as uint8 (H, W, 3) RGB, checked against its manifest hash when given."""
    import cv2

    from facecl.align.io import PNG_MAGIC, png_problem

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(
            f"aligned crop {path} is missing", "the align artifact is damaged"
        ) from None
    except OSError as e:
        raise InputError(f"cannot read aligned crop {path}: {e.strerror}", "check it") from None
    check_crop(path, data, sha256)
    problem = png_problem(data) if data.startswith(PNG_MAGIC) else ""
    bgr = None if problem else cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(
            f"cannot decode aligned crop {path}{': ' + problem if problem else ''}",
            "the align artifact is damaged; re-run 'facecl align'",
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)  # far cheaper than a strided ::-1 copy


def align_input(artifacts: Sequence[Path]) -> PackInput:
    """The crops of align artifacts (an image listed twice is an error)."""
    spec = align_input_spec(artifacts)
    items = AlignItems()
    skipped: list[dict[str, str]] = []
    for art in artifacts:
        read_align_rows(art, items, skipped)
    twice = items.repeated_key()
    if twice is not None:
        first, again = items[twice[0]], items[twice[1]]
        raise InputError(
            f"image {again.key!r} appears twice ({first.file} and {again.file})",
            "pass each align artifact once; artifacts must not overlap",
        )
    rows = len(items) + len(skipped)
    return PackInput(ALIGN, items, skipped, rows, spec, lambda it: read_rgb(it.file, it.sha256))


def input_refs(paths: Sequence[Path], names: str) -> list[dict[str, str]]:
    """The manifest ``inputs`` of the pack's inputs (cheap: no image is read)."""
    refs = [input_ref(p) for p in paths]
    if names:
        refs.append(input_ref(names))
    return refs


def open_input(kind: str, paths: Sequence[Path], names: str = "") -> PackInput:
    """Read what is to be packed (headers and lists, not pixels)."""
    if kind == RECORDIO:
        from facecl.pack.recordio_input import recordio_input

        return recordio_input(paths[0], names)
    if names:
        raise UsageError(
            "--names maps the class ids of a RecordIO input to names",
            "drop --names: align artifacts and crop folders are named by their folders",
        )
    if kind == PREALIGNED:
        from facecl.pack.prealigned import prealigned_input

        return prealigned_input(paths[0])
    return align_input(paths)


def path_list(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Resolved input paths, each once."""
    out = [Path(p).resolve() for p in paths]
    if len(set(out)) != len(out):
        raise InputError("an input is given twice", "pass each input once")
    return out
