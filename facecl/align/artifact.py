"""The align artifact's layout: the one home of its file names, ``faces.csv`` columns, row
type, writer and reader. Consumers (pack, embed, test fixtures) import these.

Layout (``facecl.align/2``)::

    OUT/manifest.json
    OUT/faces.csv                      one row per face (or per image without a crop)
    OUT/crops.sha256                   one line ``<sha256>  <output>`` per crop
    OUT/aligned/<identity>/<stem>.png  RGB crops, lossless

The manifest's ``extra.files`` holds the sha256 of ``faces.csv`` and of ``crops.sha256``;
each crop's hash is a line of ``crops.sha256``, in ``faces.csv`` order (``sha256sum -c
crops.sha256`` checks them from the artifact root). Schema 1 (still read) listed every
crop's hash in ``extra.files``, which made the manifest grow ~100 B a crop.

``faces.csv`` columns, in this order (new columns are only ever added at the end):
``source, identity, output, status, reason, face_index, x1, y1, x2, y2, score,
lm_x1, lm_y1 .. lm_x5, lm_y5, n_faces, width, height, index, detail, notes``.
Box coordinates are written with 2 decimals, the score with 5 and landmarks with 3 (pixels
of the upright original image); empty cells mean "none" (no box, no landmarks, unknown
size). Writing the rows read from a file gives the same bytes back.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from facecl.align.io import safe_component
from facecl.errors import InputError, IntegrityError

FACES_CSV = "faces.csv"
"""The per-face table, at the artifact root."""

ALIGNED = "aligned"
"""Folder of the crops: ``aligned/<identity>/<stem>.png``."""

CROPS_SHA256 = "crops.sha256"
"""The crops' hashes: ``<sha256>  <output>`` lines, in ``faces.csv`` order (schema 2)."""

STATUSES = ("ok", "landmarks", "center", "skipped")
"""``ok``: detected face; ``landmarks``/``center``: a fallback crop; ``skipped``: no crop."""

BOX_COLUMNS = ("x1", "y1", "x2", "y2")
LM_COLUMNS = tuple(f"lm_{a}{i}" for i in range(1, 6) for a in "xy")
COLUMNS = (
    "source",
    "identity",
    "output",
    "status",
    "reason",
    "face_index",
    *BOX_COLUMNS,
    "score",
    *LM_COLUMNS,
    "n_faces",
    "width",
    "height",
    "index",
    "detail",
    "notes",
)

Box = tuple[float, float, float, float]
Points = tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class FaceRow:
    """One row of ``faces.csv``: one face of one image, or one image that gave no crop."""

    source: str
    """The image as listed by the align input (relative to its tree, or as in the list)."""
    identity: str
    output: str
    """The crop's path relative to the artifact (``aligned/...png``); empty without a crop."""
    status: str
    """One of :data:`STATUSES`."""
    reason: str = ""
    """Empty for ``ok``; why a fallback or a skip happened (``facecl.align.io.SKIP_REASONS``)."""
    face_index: int = 0
    """Rank of this face in its image (0: the one kept by default)."""
    box: Box | None = None
    """x1, y1, x2, y2 in original-image pixels."""
    score: float | None = None
    landmarks: Points | None = None
    """Five (x, y) points in original-image pixels."""
    n_faces: int = 0
    """Faces detected in the image."""
    width: int = 0
    """Original image width (0: unknown, written empty)."""
    height: int = 0
    index: int = 0
    """Position of the image in the align input's sorted listing."""
    detail: str = ""
    notes: tuple[str, ...] = ()
    """Decode notes (e.g. ``reduced``)."""

    def landmarks_array(self) -> np.ndarray | None:
        """The landmarks as float64 (5, 2), or None."""
        return None if self.landmarks is None else np.asarray(self.landmarks, np.float64)

    def record(self) -> dict[str, str]:
        """The row's cells as ``faces.csv`` writes them, by column name."""
        r = dict.fromkeys(COLUMNS, "")
        r.update(
            source=self.source,
            identity=self.identity,
            output=self.output,
            status=self.status,
            reason=self.reason,
            face_index=str(self.face_index),
            n_faces=str(self.n_faces),
            width=str(self.width) if self.width else "",
            height=str(self.height) if self.height else "",
            index=str(self.index),
            detail=self.detail,
            notes=" ".join(self.notes),
        )
        if self.box is not None:
            r.update(zip(BOX_COLUMNS, (f"{v:.2f}" for v in self.box), strict=True))
        if self.score is not None:
            r["score"] = f"{self.score:.5f}"
        if self.landmarks is not None:
            flat = [v for pt in self.landmarks for v in pt]
            r.update(zip(LM_COLUMNS, (f"{v:.3f}" for v in flat), strict=True))
        return r


def faces_text(rows: Iterable[FaceRow]) -> str:
    """The ``faces.csv`` text of ``rows`` (header included)."""
    buf = io.StringIO()
    _write_rows(buf, rows)
    return buf.getvalue()


def _write_rows(f: IO[str], rows: Iterable[FaceRow]) -> None:
    w = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r.record())


def write_faces(path: str | os.PathLike, rows: Iterable[FaceRow]) -> None:
    """Write ``rows`` as a ``faces.csv``-format file at ``path`` (atomically, streamed: the
    rows may be a generator)."""
    from facecl.artifacts import atomic_open

    with atomic_open(path, "w") as f:
        _write_rows(f, rows)


def concat_faces(path: str | os.PathLike, parts: Iterable[str | os.PathLike]) -> None:
    """Write the ``faces.csv``-format files ``parts`` as one file at ``path`` (atomically):
    the same bytes as ``write_faces`` of all their rows, without parsing or holding them."""
    from facecl.artifacts import atomic_open

    header = faces_text([])
    with atomic_open(path, "w") as out:
        out.write(header)
        for part in parts:
            with open(part, encoding="utf-8", newline="") as f:
                if f.readline() != header:
                    raise InputError(f"{part} has not the faces.csv header", "re-run align")
                while block := f.read(1 << 20):
                    out.write(block)


def _checked_faces(artifact: str | os.PathLike) -> Path:
    """``faces.csv`` of a complete align artifact, checked against its manifest hash."""
    from facecl.artifacts import read_manifest

    path = Path(artifact) / FACES_CSV
    _check_listed(read_manifest(artifact, stage="align").extra, Path(artifact), FACES_CSV)
    return path


def _check_listed(extra: object, root: Path, name: str) -> None:
    """Raise ``IntegrityError`` when ``root/name`` does not hash to the manifest's entry
    (nothing to check when the manifest records none, or the file is missing: its reader
    says so)."""
    from facecl.artifacts import sha256_file

    files = extra.get("files", {}) if isinstance(extra, dict) else {}
    expected = files.get(name) if isinstance(files, dict) else None
    path = root / name
    if expected and path.is_file() and sha256_file(path) != expected:
        raise IntegrityError(
            f"{path} was changed after align wrote it (its sha256 is not the manifest's)",
            "restore it or re-run 'facecl align' with --force",
        )


def read_faces(artifact: str | os.PathLike) -> list[FaceRow]:
    """The rows of a complete align artifact's ``faces.csv``, in file order.

    Raises ``ArtifactError`` when ``artifact`` is not a finished align artifact and
    ``InputError`` (naming the line and column) for a missing or malformed ``faces.csv``.
    """
    return list(iter_faces_file(_checked_faces(artifact)))


def iter_faces(artifact: str | os.PathLike) -> Iterator[FaceRow]:
    """:func:`read_faces`, one row at a time (the manifest and hash are checked first)."""
    return iter_faces_file(_checked_faces(artifact))


def write_crop_hashes(work: Path, outputs: Iterable[str]) -> int:
    """Hash each crop ``work/<output>`` and write ``crops.sha256`` (atomically, streamed);
    returns the number of crops."""
    from facecl.artifacts import atomic_open, sha256_file

    n = 0
    with atomic_open(work / CROPS_SHA256, "w") as f:
        for out in outputs:
            f.write(f"{sha256_file(work / out)}  {out}\n")
            n += 1
    return n


def iter_crop_hashes(artifact: str | os.PathLike) -> Iterator[tuple[str, str]]:
    """``(output, sha256)`` of every crop as align recorded it: the lines of
    ``crops.sha256`` in ``faces.csv`` order (the file checked against the manifest) or, for
    a schema-1 artifact, the manifest's ``extra.files`` (sorted by path). Empty for an
    artifact that records none."""
    root = Path(artifact)
    listed = _manifest_crops(root)
    if listed is not None:
        return iter(listed.items())
    return _read_crop_hashes(root / CROPS_SHA256)


def _manifest_crops(root: Path) -> dict[str, str] | None:
    """Schema 1's ``{output: sha256}`` from the manifest; None when the crops are in
    ``crops.sha256`` (checked against the manifest here)."""
    from facecl.artifacts import read_manifest

    m = read_manifest(root, stage="align")
    files = m.extra.get("files", {}) if isinstance(m.extra, dict) else {}
    files = files if isinstance(files, dict) else {}
    if CROPS_SHA256 not in files:
        return {k: v for k, v in files.items() if k != FACES_CSV}
    _check_listed(m.extra, root, CROPS_SHA256)
    return None


def _read_crop_hashes(path: Path) -> Iterator[tuple[str, str]]:
    hint = "the align artifact is damaged; re-run 'facecl align' with --force"
    try:
        with open(path, encoding="utf-8", newline="\n") as f:
            for n, line in enumerate(f, 1):
                digest, sep, out = line.rstrip("\n").partition("  ")
                if not sep or len(digest) != 64 or not _is_hex(digest):
                    raise InputError(f"{path}:{n}: expected '<sha256>  <output>'", hint)
                check_output(out, f"{path}:{n}", hint)
                yield out, digest
    except FileNotFoundError:
        raise InputError(f"{path} is missing", hint) from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read {path}: {e}", hint) from None


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


def faces_with_hashes(artifact: str | os.PathLike) -> Iterator[tuple[FaceRow, str]]:
    """Each row of ``faces.csv`` with its crop's recorded sha256 ("" without a crop, or
    when the artifact records none), streamed. Raises ``IntegrityError`` when
    ``crops.sha256`` does not list the crops of ``faces.csv`` in order."""
    root = Path(artifact)
    listed = _manifest_crops(root)
    if listed is not None:  # schema 1 (small: the manifest held them all)
        return ((r, listed.get(r.output, "") if r.output else "") for r in iter_faces(root))
    return _zip_hashes(root, iter_faces(root), _read_crop_hashes(root / CROPS_SHA256))


def _zip_hashes(
    root: Path, rows: Iterator[FaceRow], hashes: Iterator[tuple[str, str]]
) -> Iterator[tuple[FaceRow, str]]:
    def mismatch(what: str) -> IntegrityError:
        return IntegrityError(
            f"{root / CROPS_SHA256} {what} (it and faces.csv do not belong together)",
            "restore them or re-run 'facecl align' with --force",
        )

    for row in rows:
        if not row.output:
            yield row, ""
            continue
        listed = next(hashes, None)
        if listed is None or listed[0] != row.output:
            raise mismatch(f"does not list {row.output} where faces.csv has it")
        yield row, listed[1]
    extra = next(hashes, None)
    if extra is not None:
        raise mismatch(f"lists {extra[0]}, which faces.csv has not")


def crop_hashes(artifact: str | os.PathLike) -> dict[str, str]:
    """``{output: sha256}`` of the crops as align records them (small artifacts and
    tests; the stages stream :func:`faces_with_hashes` instead)."""
    return dict(iter_crop_hashes(artifact))


def verify_crops(artifact: str | os.PathLike) -> int:
    """Check every crop listed in ``crops.sha256`` (``inspect --verify``; schema 1's
    crops are in the manifest and checked with it); returns how many were checked."""
    from facecl.artifacts import verify_file

    root = Path(artifact)
    if _manifest_crops(root) is not None:
        return 0
    n = 0
    for out, digest in _read_crop_hashes(root / CROPS_SHA256):
        verify_file(root / out, digest, CROPS_SHA256)
        n += 1
    return n


def check_crop(path: str | os.PathLike, data: bytes, sha256: str) -> None:
    """Raise ``IntegrityError`` when a crop's bytes do not hash to ``sha256`` (its manifest
    entry; "" = not recorded, nothing to check)."""
    from facecl.artifacts import sha256_bytes

    if sha256 and sha256_bytes(data) != sha256:
        raise IntegrityError(
            f"aligned crop {path} was changed after align wrote it (sha256 mismatch)",
            "restore it or re-run 'facecl align' with --force",
        )


def check_output(output: str, where: str, hint: str) -> None:
    """Raise unless ``output`` is empty or ``aligned/<name>/.../<name>.png`` (relative, no
    ``..``, no separators or control characters in a name): a row can never make a reader
    open a file outside the artifact."""
    parts = output.split("/")
    if output and not (
        parts[0] == ALIGNED
        and len(parts) >= 3
        and output.endswith(".png")
        and all(safe_component(p) for p in parts)
    ):
        raise InputError(
            f"{where}: column output: {output!r} is not a path {ALIGNED}/<identity>/<name>.png "
            "inside the artifact",
            hint,
        )


def read_faces_file(path: str | os.PathLike) -> list[FaceRow]:
    """The rows of one ``faces.csv``-format file (no manifest check: for the align stage's
    own work in progress)."""
    return list(iter_faces_file(path))


def iter_faces_file(path: str | os.PathLike) -> Iterator[FaceRow]:
    """:func:`read_faces_file`, one row at a time (errors are raised when reached)."""
    path = Path(path)
    hint = "the align artifact is damaged or not written by 'facecl align'; re-run align"
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            missing = [c for c in COLUMNS if c not in header]
            if missing:
                raise InputError(f"{path} lacks column(s) {', '.join(missing)}", hint)
            for rec in reader:
                if None in rec or None in rec.values():
                    n = sum(v is not None for k, v in rec.items() if k is not None)
                    n += len(rec.get(None) or [])
                    raise InputError(
                        f"{path}:{reader.line_num}: {n} fields, the header has {len(header)}",
                        hint,
                    )
                yield _parse(rec, f"{path}:{reader.line_num}", hint)
    except FileNotFoundError:
        raise InputError(f"{path} is missing", hint) from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"cannot read {path}: {e}", hint) from None


def _int(rec: dict[str, str], col: str, where: str, hint: str, empty: int | None = None) -> int:
    text = rec[col]
    if text == "" and empty is not None:
        return empty
    try:
        return int(text)
    except ValueError:
        raise InputError(f"{where}: column {col}: {text!r} is not an integer", hint) from None


def _floats(rec: dict[str, str], cols: Iterable[str], where: str, hint: str) -> list[float] | None:
    """The values of ``cols`` as floats, or None when all of them are empty."""
    cols = list(cols)
    if all(rec[c] == "" for c in cols):
        return None
    out = []
    for c in cols:
        try:
            out.append(float(rec[c]))
        except ValueError:
            raise InputError(f"{where}: column {c}: {rec[c]!r} is not a number", hint) from None
    return out


def _parse(rec: dict[str, str], where: str, hint: str) -> FaceRow:
    if rec["status"] not in STATUSES:
        raise InputError(
            f"{where}: column status: {rec['status']!r} is not one of {', '.join(STATUSES)}",
            hint,
        )
    check_output(rec["output"], where, hint)
    box = _floats(rec, BOX_COLUMNS, where, hint)
    score = _floats(rec, ("score",), where, hint)
    lm = _floats(rec, LM_COLUMNS, where, hint)
    return FaceRow(
        source=rec["source"],
        identity=rec["identity"],
        output=rec["output"],
        status=rec["status"],
        reason=rec["reason"],
        face_index=_int(rec, "face_index", where, hint),
        box=None if box is None else (box[0], box[1], box[2], box[3]),
        score=None if score is None else score[0],
        landmarks=None if lm is None else tuple(zip(lm[0::2], lm[1::2], strict=True)),
        n_faces=_int(rec, "n_faces", where, hint),
        width=_int(rec, "width", where, hint, empty=0),
        height=_int(rec, "height", where, hint, empty=0),
        index=_int(rec, "index", where, hint),
        detail=rec["detail"],
        notes=tuple(rec["notes"].split()),
    )
