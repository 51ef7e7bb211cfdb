"""A native reader of MXNet RecordIO, the format insightface distributes its training sets in
(MS1M-ArcFace, Glint360K, WebFace, CASIA-WebFace 112x112), without mxnet.

A folder holds ``train.rec`` (the records), ``train.idx`` (one ``key<TAB>offset`` line per
record) and optionally ``property`` (``classes,height,width``). Each record is::

    uint32 magic 0xced7230a | uint32 lrecord (cflag = top 3 bits, length = low 29 bits)
    | length bytes of data | zero padding to a multiple of 4

A record whose data contains the magic word at a 4-byte boundary is written in parts
(cflag 1 = first, 2 = middle, 3 = last, 0 = whole); the reader joins the parts with the magic
word between them. The data of an image record starts with the image header ``IRHeader``
(``<IfQQ``: flag, label, id, id2); ``flag > 0`` means ``flag`` float32 labels follow it and
``label`` is unused. The rest is the JPEG.

Two index layouts exist. In insightface's, record 0 has ``flag > 0`` and labels
``[first, end)``: records ``1 .. first-1`` are faces and records ``first .. end-1`` are the
identities, in class order, each with labels ``[first image, last image + 1)``. Otherwise
(plain keys) every record is a face whose header label is its class.
"""

from __future__ import annotations

import bisect
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facecl.errors import InputError

MAGIC = 0xCED7230A
REC_FILE = "train.rec"
IDX_FILE = "train.idx"
PROPERTY_FILE = "property"

_LREC = struct.Struct("<II")  # magic, lrecord
_HEADER = struct.Struct("<IfQQ")  # flag, label, id, id2
_LENGTH_MASK = (1 << 29) - 1

RANGES = "identity_ranges"
PLAIN = "plain_keys"


class BadRecord(Exception):
    """A record that cannot be read; ``reason`` is a short skip reason, ``detail`` says why."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _lrecord(head: bytes, offset: int) -> int:
    """The lrecord word (part flag and length) of the record header at the start of ``head``,
    read at byte ``offset``; raises ``BadRecord`` for a short read or a wrong magic word."""
    if len(head) < _LREC.size:
        raise BadRecord("truncated", f"record header at byte {offset} past the end")
    magic, lrec = _LREC.unpack_from(head)
    if magic != MAGIC:
        raise BadRecord("bad_magic", f"0x{magic:08x} at byte {offset}")
    return int(lrec)


def is_recordio_dir(path: str | os.PathLike) -> bool:
    """True for a folder holding ``train.rec`` and ``train.idx``."""
    p = Path(path)
    return (p / REC_FILE).is_file() and (p / IDX_FILE).is_file()


def read_index(path: str | os.PathLike) -> dict[int, int]:
    """``key -> offset`` of a ``.idx`` file, in file order; raises ``InputError`` naming the
    line for a malformed or repeated entry."""
    out: dict[int, int] = {}
    with open(path, encoding="ascii", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split()
            try:
                key, offset = int(parts[0]), int(parts[1])
                if len(parts) != 2 or key < 0 or offset < 0:
                    raise ValueError
            except (ValueError, IndexError):
                raise InputError(
                    f"{path}:{n}: expected 'key<TAB>offset', got {line.strip()[:60]!r}",
                    "the index is damaged; rebuild it from the .rec file",
                ) from None
            if key in out:
                raise InputError(f"{path}:{n}: key {key} appears twice", "the index is damaged")
            out[key] = offset
    return out


def read_property(path: str | os.PathLike) -> tuple[int, int, int] | None:
    """``(classes, height, width)`` from a ``property`` file, or None when there is none."""
    p = Path(path)
    if not p.is_file():
        return None
    text = p.read_text(encoding="ascii", errors="replace").strip()
    try:
        c, h, w = (int(v) for v in text.split(","))
    except ValueError:
        raise InputError(
            f"{p}: expected 'classes,height,width', got {text[:60]!r}", "fix or delete the file"
        ) from None
    return c, h, w


@dataclass(frozen=True)
class Header:
    """An image record's header (``IRHeader``) with its labels as a tuple."""

    flag: int
    labels: tuple[float, ...]  # (label,) when flag == 0, else the flag floats after the header
    id: int
    id2: int

    @property
    def label(self) -> float:
        """The class label as insightface reads it: the first label."""
        return self.labels[0] if self.labels else float("nan")


def unpack(record: bytes) -> tuple[Header, bytes]:
    """An image record's data -> (header, payload)."""
    if len(record) < _HEADER.size:
        raise BadRecord("bad_header", f"{len(record)} bytes, shorter than the image header")
    flag, label, id1, id2 = _HEADER.unpack_from(record)
    start = _HEADER.size + 4 * flag
    if flag > 0:
        if len(record) < start:
            raise BadRecord("bad_header", f"flag {flag} but only {len(record)} bytes")
        labels = tuple(float(v) for v in np.frombuffer(record, "<f4", flag, _HEADER.size))
    else:
        labels = (float(label),)
    return Header(flag, labels, id1, id2), record[start:]


class RecordFile:
    """Random access to the records of a ``.rec`` file; safe to share between threads
    (reads use ``os.pread``, no shared file position)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_RDONLY)
        self.size = os.fstat(self._fd).st_size

    def _part(self, offset: int) -> tuple[int, bytes, int]:
        """(cflag, data, next offset) of the record part at ``offset``."""
        lrec = _lrecord(os.pread(self._fd, _LREC.size, offset), offset)
        length = lrec & _LENGTH_MASK
        data = os.pread(self._fd, length, offset + _LREC.size)
        if len(data) < length:
            raise BadRecord(
                "truncated", f"record at byte {offset} needs {length} bytes, {len(data)} left"
            )
        return lrec >> 29, data, offset + _LREC.size + ((length + 3) & ~3)

    def read(self, offset: int) -> bytes:
        """The data of the record at ``offset``, its parts joined."""
        cflag, data, nxt = self._part(offset)
        if cflag == 0:
            return data
        if cflag != 1:
            raise BadRecord("bad_record", f"record at byte {offset} starts with part flag {cflag}")
        parts = [data]
        while cflag != 3:
            cflag, data, nxt = self._part(nxt)
            if cflag not in (2, 3):
                raise BadRecord("bad_record", f"record at byte {offset}: part flag {cflag}")
            parts.append(data)
        return MAGIC.to_bytes(4, "little").join(parts)

    def read_head(self, offset: int, size: int = _HEADER.size) -> bytes:
        """The first bytes of a record's data (its image header and labels) without reading
        the image; checks the magic word and that the record fits in the file."""
        head = os.pread(self._fd, _LREC.size + size, offset)
        lrec = _lrecord(head, offset)
        length = lrec & _LENGTH_MASK
        if lrec >> 29 != 0:  # a record in parts: read it whole
            return self.read(offset)
        if offset + _LREC.size + length > self.size:
            raise BadRecord(
                "truncated",
                f"record at byte {offset} needs {length} bytes, "
                f"{self.size - offset - _LREC.size} left",
            )
        data = head[_LREC.size : _LREC.size + length]
        if len(data) >= _HEADER.size:
            need = min(_HEADER.size + 4 * _HEADER.unpack_from(data)[0], length)
            if need > size:
                return self.read_head(offset, need)
        return data

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> RecordFile:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def decode_image(payload: bytes) -> np.ndarray:
    """A record's JPEG (or PNG) payload -> uint8 (H, W, 3) RGB."""
    import cv2

    rgb_flag = getattr(cv2, "IMREAD_COLOR_RGB", None)  # OpenCV >= 4.10 decodes into RGB
    buf = np.frombuffer(payload, np.uint8)
    img = cv2.imdecode(buf, rgb_flag if rgb_flag is not None else cv2.IMREAD_COLOR)
    if img is None:
        raise BadRecord("undecodable", f"{len(payload)} bytes that are not a JPEG/PNG image")
    return img if rgb_flag is not None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


# --------------------------------------------------------------------------- scanning


@dataclass(frozen=True, slots=True)
class FaceRecord:
    key: int
    offset: int
    label: int


@dataclass
class Scan:
    """The faces of a RecordIO folder and what was wrong with the other records."""

    layout: str  # RANGES or PLAIN
    faces: list[FaceRecord]
    problems: list[tuple[int, int, str, str]] = field(default_factory=list)
    # (key, label or -1, reason, detail)
    identities: int = 0  # identity records (RANGES) or distinct labels (PLAIN)
    label_mismatches: int = 0


def _label_of(header: Header) -> int:
    value = header.label
    if not np.isfinite(value) or value < 0 or value != int(value):
        raise BadRecord("bad_label", f"label {value!r} is not a class id")
    return int(value)


class Ranges:
    """The identity records' ``[first image, end)`` ranges, looked up by bisection (a dict of
    every image key would cost ~100 bytes per image at MS1M's 5.8M)."""

    def __init__(self, ranges: list[tuple[int, int, int]]):  # (lo, hi, class)
        ranges = sorted(ranges)
        self.starts = [lo for lo, _, _ in ranges]
        self.ends = [hi for _, hi, _ in ranges]
        self.classes = [c for _, _, c in ranges]

    def owner(self, key: int) -> int | None:
        """The class whose range holds ``key``, or None."""
        i = bisect.bisect_right(self.starts, key) - 1
        return self.classes[i] if i >= 0 and key < self.ends[i] else None


def _identity_ranges(
    rec: RecordFile, index: dict[int, int], first: int, end: int, problems: list
) -> Ranges:
    """The ranges of the identity records ``first .. end-1`` (record ``first + c`` is class c)."""
    ranges: list[tuple[int, int, int]] = []
    for cls, key in enumerate(range(first, end)):
        try:
            if key not in index:
                raise BadRecord("bad_identity_record", f"identity record {key} is not indexed")
            header, _ = unpack(rec.read(index[key]))
            lo, hi = (int(v) for v in header.labels[:2])
            if header.flag < 2 or not 0 < lo <= hi <= first:
                raise BadRecord("bad_identity_record", f"range {header.labels} of class {cls}")
        except BadRecord as e:
            problems.append((key, cls, "bad_identity_record", e.detail))
            continue
        ranges.append((lo, hi, cls))
        problems += [
            (k, cls, "not_indexed", f"in the range of class {cls}, not in the index")
            for k in range(lo, hi)
            if k not in index
        ]
    return Ranges(ranges)


def scan(folder: str | os.PathLike) -> Scan:
    """Read the index and every face header (not the images) of a RecordIO folder."""
    folder = Path(folder)
    index = read_index(folder / IDX_FILE)
    if not index:
        raise InputError(f"{folder / IDX_FILE} lists no records", "pass a RecordIO training set")
    with RecordFile(folder / REC_FILE) as rec:
        problems: list[tuple[int, int, str, str]] = []
        layout, keys, owner, n_ids = PLAIN, sorted(index), None, 0
        first_header = _first_header(rec, index)
        if first_header is not None and first_header.flag > 0:
            first, end = (int(v) for v in first_header.labels[:2])
            layout, owner = RANGES, _identity_ranges(rec, index, first, end, problems)
            n_ids = end - first
            keys = [k for k in keys if 0 < k < first]
            problems += [
                (
                    k,
                    -1,
                    "outside_layout",
                    f"key {k} is neither a face (1..{first - 1}) nor an "
                    f"identity ({first}..{end - 1})",
                )
                for k in sorted(index)
                if k >= end
            ]
        faces, mismatches = _scan_faces(rec, index, keys, owner, problems)
    if owner is None:
        n_ids = len({f.label for f in faces})
    return Scan(layout, faces, problems, n_ids, mismatches)


def _first_header(rec: RecordFile, index: dict[int, int]) -> Header | None:
    if 0 not in index:
        return None
    try:
        return unpack(rec.read(index[0]))[0]
    except BadRecord as e:
        raise InputError(
            f"{rec.path}: record 0 cannot be read ({e})", "the .rec file is damaged"
        ) from None


def _scan_faces(
    rec: RecordFile,
    index: dict[int, int],
    keys: list[int],
    owner: Ranges | None,
    problems: list[tuple[int, int, str, str]],
) -> tuple[list[FaceRecord], int]:
    faces: list[FaceRecord] = []
    mismatches = 0
    for key in keys:
        offset = index[key]
        try:
            label = _label_of(unpack(rec.read_head(offset))[0])
        except BadRecord as e:
            problems.append((key, -1, e.reason, e.detail))
            continue
        want = owner.owner(key) if owner is not None else label
        if want != label:
            mismatches += 1
            where = "in no identity range" if want is None else f"in the range of class {want}"
            problems.append((key, label, "label_mismatch", f"header label {label}, {where}"))
            continue
        faces.append(FaceRecord(key, offset, label))
    return faces, mismatches


def iter_records(folder: str | os.PathLike) -> Iterator[tuple[int, bytes]]:
    """Every indexed record as (key, data), in key order (for tools and benchmarks)."""
    folder = Path(folder)
    index = read_index(folder / IDX_FILE)
    with RecordFile(folder / REC_FILE) as rec:
        for key in sorted(index):
            yield key, rec.read(index[key])
