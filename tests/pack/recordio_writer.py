"""A small RecordIO writer for tests and benchmarks (facecl itself only reads the format).

Written from the format description in ``facecl.pack.recordio``: records padded to 4 bytes,
data that holds the magic word at a 4-byte boundary split into parts (cflag 1, 2.., 3) with
the magic word removed, ``IRHeader`` ``<IfQQ`` then ``flag`` float32 labels when flag > 0.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from pathlib import Path

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)


def image_record(label: float | Sequence[float], key: int, payload: bytes = b"") -> bytes:
    """An image record's data: header (label as one float, or as flag floats) + payload."""
    if isinstance(label, (int, float)):
        return struct.pack("<IfQQ", 0, float(label), key, 0) + payload
    labels = list(label)
    head = struct.pack("<IfQQ", len(labels), 0.0, key, 0)
    return head + struct.pack(f"<{len(labels)}f", *labels) + payload


def frame(data: bytes) -> bytes:
    """``data`` as it lies in a .rec file, in parts where it holds the magic word."""
    out = bytearray()
    start = 0
    cuts = [i for i in range(0, len(data) - 3, 4) if data[i : i + 4] == _MAGIC_BYTES]
    for n, cut in enumerate(cuts):
        out += struct.pack("<II", MAGIC, ((1 if n == 0 else 2) << 29) | (cut - start))
        out += data[start:cut]
        start = cut + 4
    tail = data[start:]
    out += struct.pack("<II", MAGIC, ((3 if cuts else 0) << 29) | len(tail))
    out += tail + b"\0" * (-len(tail) % 4)
    return bytes(out)


def write_recordio(
    folder: Path, records: Iterable[tuple[int, bytes]], prop: str | None = None
) -> dict[int, int]:
    """Write ``train.rec`` / ``train.idx`` (and ``property``) from (key, data); returns the
    offsets."""
    folder.mkdir(parents=True, exist_ok=True)
    offsets: dict[int, int] = {}
    with open(folder / "train.rec", "wb") as rec, open(folder / "train.idx", "w") as idx:
        for key, data in records:
            offsets[key] = rec.tell()
            idx.write(f"{key}\t{offsets[key]}\n")
            rec.write(frame(data))
    if prop is not None:
        (folder / "property").write_text(prop)
    return offsets


def insightface_layout(
    faces: Sequence[tuple[int, bytes]],
) -> list[tuple[int, bytes]]:
    """(key, data) of an insightface-style set from (label, jpeg) faces sorted by label:
    record 0 = [first identity record, end), faces 1..N, identities N+1..N+C."""
    n = len(faces)
    labels = sorted({lab for lab, _ in faces})
    assert labels == list(range(len(labels))), "labels must be 0..C-1"
    first, end = n + 1, n + 1 + len(labels)
    out = [(0, image_record([float(first), float(end)], 0))]
    ranges: dict[int, list[int]] = {}
    for i, (lab, jpeg) in enumerate(faces, 1):
        out.append((i, image_record(float(lab), i, jpeg)))
        ranges.setdefault(lab, [i, i + 1])[1] = i + 1
    for lab in labels:
        lo, hi = ranges[lab]
        out.append((first + lab, image_record([float(lo), float(hi)], first + lab)))
    return out
