"""The embed artifact's layout: the only home of its file name, datasets, writer and reader.

A ``facecl embed`` output directory (schema ``facecl.embed/1``)::

    EMB/manifest.json   model reference (train run + model file), fusion, l2, input spec, counts
    EMB/embeddings.h5   one row per input item:

* ``embeddings``  float32 (N, D)
* ``keys``        utf-8 ``<identity>/<stem>``, e.g. ``Abel_Pacheco/Abel_Pacheco_0001``
* ``paths``       utf-8, the source image paths
* ``identities``  utf-8 identity names
* ``status``      utf-8, ``ok`` or the reason the item has no embedding (its row is NaN)
* ``issame``      bool (N/2,), only for a verification ``.bin`` input: pair ``i`` is rows
  ``2i`` and ``2i+1``, in the file's order (``facecl verify --protocol bin`` scores them)

:class:`EmbeddingsWriter` writes it block by block (:func:`write_embeddings` from arrays),
:func:`read_embeddings` reads an artifact directory back as
:class:`Embeddings`; :func:`read_datasets` and :func:`embeddings_from_arrays` are the same reader
for a plain ``.h5`` holding these datasets (only ``embeddings`` and ``keys`` required there).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facecl.artifacts import honour_umask, input_ref, read_manifest
from facecl.errors import ArtifactError, InputError
from facecl.textcolumn import TextColumn, TextIndex

STAGE = "embed"
EMBEDDINGS = "embeddings.h5"
OK = "ok"
UNUSABLE = "non-finite or zero vector"
"""The status of a row stored as ok whose vector cannot be scored."""
VECTORS = "embeddings"
TEXT_COLUMNS = ("keys", "paths", "identities", "status")
"""The utf-8 string datasets, one entry per row, in the order they are written."""
DATASETS: dict[str, str] = {VECTORS: "float32", **dict.fromkeys(TEXT_COLUMNS, "utf-8")}
PAIRS = "issame"
REQUIRED = (VECTORS, "keys")
"""What a plain file must hold; the other columns have defaults (see :func:`from_arrays`)."""


def _usable_rows(vectors: np.ndarray, block: int = 65536) -> np.ndarray:
    """(N,) bool: rows finite and not all zero, checked a block of rows at a time (no (N, D)
    temporary: a 1M x 512 gallery would need 2.5 GiB more)."""
    out = np.empty(len(vectors), dtype=bool)
    for i in range(0, len(vectors), block):
        b = vectors[i : i + block]
        out[i : i + block] = np.isfinite(b).all(1) & (np.abs(b).sum(1) > 0)
    return out


@dataclass
class Embeddings:
    """vectors: (N, D) float32; keys, paths, identities, status: N strings each, held as
    :class:`~facecl.textcolumn.TextColumn` (one utf-8 buffer each, not N ``str`` objects;
    any sequence of strings given is converted). Keys and normalised paths are found through
    hashed indexes (16 B a row), so a 1M-row gallery holds ~0.1 KiB a row besides its vectors."""

    vectors: np.ndarray
    keys: TextColumn
    paths: TextColumn
    identities: TextColumn
    status: TextColumn
    source: Path
    ref: dict[str, str]
    issame: np.ndarray | None = None  # (N/2,) bool: the stored pairs (rows 2i, 2i+1)
    _by_key: TextIndex = field(init=False, repr=False)
    _by_path: TextIndex = field(init=False, repr=False)

    def __post_init__(self) -> None:
        n = len(self.vectors)
        for name in TEXT_COLUMNS:
            col = getattr(self, name)
            if not isinstance(col, TextColumn):
                setattr(self, name, col := TextColumn.of(col))
            if len(col) != n:
                raise ArtifactError(
                    f"{self.source}: '{name}' has {len(col)} rows, '{VECTORS}' has {n}",
                    "rebuild the embeddings with 'facecl embed --force'",
                )
        if self.issame is not None and 2 * len(self.issame) != n:
            raise ArtifactError(
                f"{self.source}: '{PAIRS}' has {len(self.issame)} pairs for {n} rows",
                "rebuild the embeddings with 'facecl embed --force'",
            )
        unusable = self.ok & ~_usable_rows(self.vectors)
        if unusable.any():
            self.status = TextColumn.of(
                UNUSABLE if bad else s for s, bad in zip(self.status, unusable, strict=True)
            )
        self._by_key = TextIndex(self.keys)
        if (twice := self._by_key.duplicate()) is not None:
            raise ArtifactError(
                f"{self.source}: key {twice!r} appears twice", "each image needs a unique key"
            )
        self._by_path = TextIndex(self.paths, os.path.normpath)

    @property
    def ok(self) -> np.ndarray:
        """(N,) bool: rows with a usable embedding."""
        return self.status.equals(OK)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def find(self, name: str) -> int:
        """Row of an image named by key (``Name/Name_0001``), path, or ``.../Name/Name_0001.jpg``.

        Returns -1 when it is not in the embeddings.
        """
        if (row := self._by_key.first(name)) >= 0:
            return row
        if (row := self.path_row(os.path.normpath(name))) >= 0:
            return row
        p = Path(name)
        key = f"{p.parent.name}/{p.stem}" if p.parent.name else p.stem
        if (row := self._by_key.first(key)) >= 0:
            return row
        if p.is_absolute() or p.exists():
            return self.path_row(os.path.normpath(str(p.resolve())))
        return -1

    def key_row(self, key: str) -> int:
        """Row of the image with this exact key, or -1."""
        return self._by_key.first(key)

    def path_row(self, norm_path: str) -> int:
        """First row whose path, normalised (``os.path.normpath``), is ``norm_path``, or -1."""
        return self._by_path.first(norm_path)

    def reason(self, row: int) -> str:
        """Why a row is unusable ('not in embeddings' for -1), or 'ok'."""
        return "not in embeddings" if row < 0 else self.status[row]


# --------------------------------------------------------------------------- writing


ROWS_PER_H5_CHUNK_BYTES = 1 << 20
"""HDF5 chunk size of the ``embeddings`` dataset (~1 MiB of rows)."""


class EmbeddingsWriter:
    """``directory/embeddings.h5`` written as it comes: ``append`` blocks of vectors to one
    resizable, chunked dataset (memory: one block, whatever N), then ``close`` with the text
    columns (temp file, then ``os.replace``). ``abort`` removes the temp file. Also a context
    manager: leaving it on an exception aborts."""

    def __init__(self, directory: Path, dim: int) -> None:
        import h5py

        self.path = Path(directory) / EMBEDDINGS
        fd, tmp = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent
        )
        honour_umask(tmp, fd)  # mkstemp makes 0600; any other file gets 0666 & ~umask
        os.close(fd)
        self._tmp = Path(tmp)
        self._file = h5py.File(tmp, "w")
        rows = max(1, ROWS_PER_H5_CHUNK_BYTES // (4 * max(dim, 1)))
        self._vectors = self._file.create_dataset(
            VECTORS, shape=(0, dim), maxshape=(None, dim), chunks=(rows, max(dim, 1)),
            dtype=DATASETS[VECTORS],
        )  # fmt: skip
        self.rows = 0

    def append(self, vectors: np.ndarray) -> None:
        """Rows (B, dim) after the ones already written."""
        v = np.asarray(vectors, dtype=DATASETS[VECTORS])
        self._vectors.resize(self.rows + len(v), axis=0)
        self._vectors[self.rows :] = v
        self.rows += len(v)

    def close(
        self,
        *,
        keys: Sequence[str],
        paths: Sequence[str],
        identities: Sequence[str],
        status: Sequence[str],
        issame: np.ndarray | None = None,
    ) -> Path:
        """The text columns (one entry per appended row), then the file in place.
        ``issame``: the pairs of a verification set (rows ``2i``, ``2i+1``)."""
        import h5py

        columns = {"keys": keys, "paths": paths, "identities": identities, "status": status}
        try:
            for name in TEXT_COLUMNS:
                if len(columns[name]) != self.rows:
                    raise ValueError(f"{name}: {len(columns[name])} entries for {self.rows} rows")
                text = h5py.string_dtype("utf-8")
                data = np.array(list(columns[name]), dtype=object)
                self._file.create_dataset(name, data=data, dtype=text)
            if issame is not None:
                self._file.create_dataset(PAIRS, data=np.asarray(issame, dtype=bool))
            self._file.close()
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        if self._file:  # still open
            self._file.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> EmbeddingsWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None:
            self.abort()


def write_embeddings(
    directory: Path,
    vectors: np.ndarray,
    *,
    keys: Sequence[str],
    paths: Sequence[str],
    identities: Sequence[str],
    status: Sequence[str],
    issame: np.ndarray | None = None,
) -> Path:
    """Write ``directory/embeddings.h5`` from arrays in memory (:class:`EmbeddingsWriter`);
    ``issame``: the pairs of a verification set (rows ``2i``, ``2i+1``)."""
    vectors = np.asarray(vectors, dtype=DATASETS[VECTORS])
    with EmbeddingsWriter(directory, vectors.shape[1] if vectors.ndim == 2 else 0) as w:
        w.append(vectors)
        return w.close(keys=keys, paths=paths, identities=identities, status=status, issame=issame)


# --------------------------------------------------------------------------- reading


def read_embeddings(path: str | os.PathLike) -> Embeddings:
    """An embed artifact directory (manifest checked: stage, schema, completeness)."""
    p = Path(path)
    read_manifest(p, stage=STAGE)
    h5 = p / EMBEDDINGS
    if not h5.is_file():
        raise ArtifactError(f"{p} has no {EMBEDDINGS}", "re-run 'facecl embed' with --force")
    return from_arrays(read_datasets(h5), p, input_ref(p))


def read_datasets(path: Path) -> dict[str, np.ndarray | TextColumn]:
    """Every dataset of an HDF5 file, by name; string datasets as :class:`TextColumn`s, read
    a block of rows at a time (never one Python object per row for the whole column)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return {k: _dataset(f[k]) for k in f.keys() if isinstance(f[k], h5py.Dataset)}
    except OSError as e:
        raise InputError(f"cannot read {path}: {e}", "is it an HDF5 file?") from None


def _dataset(ds: Any) -> np.ndarray | TextColumn:
    import h5py

    if ds.ndim != 1 or h5py.check_string_dtype(ds.dtype) is None:
        return ds[()]
    step = 65536
    return TextColumn.of(v for i in range(0, len(ds), step) for v in ds[i : i + step])


def _column(source: Path, name: str, values: np.ndarray | TextColumn) -> TextColumn:
    if isinstance(values, TextColumn):
        return values
    try:
        return TextColumn.of(np.asarray(values).ravel())
    except UnicodeDecodeError as e:
        raise InputError(
            f"{source}: '{name}' is not utf-8 text ({e.reason})",
            "write the file's string datasets as utf-8",
        ) from None


def _identity_of(key: str) -> str:
    return key.split("/", 1)[0] if "/" in key else key.rsplit("_", 1)[0]


def from_arrays(
    data: Mapping[str, np.ndarray | TextColumn], source: Path, ref: dict[str, str]
) -> Embeddings:
    """:class:`Embeddings` from the datasets by name. Without ``paths`` the keys stand in,
    without ``identities`` the key's folder (or the name before ``_NNNN``), without
    ``status`` every row is ``ok``."""
    for required in REQUIRED:
        if required not in data:
            raise InputError(
                f"{source} has no '{required}' dataset",
                f"expected datasets {', '.join(REQUIRED)}[, paths, identities, status]",
            )
    vectors = np.asarray(data[VECTORS], dtype=DATASETS[VECTORS])
    if vectors.ndim != 2:
        raise InputError(f"{source}: '{VECTORS}' has shape {vectors.shape}", "expected (N, D)")
    col = {k: _column(source, k, data[k]) for k in TEXT_COLUMNS if k in data}
    keys = col["keys"]
    n = len(keys)
    status = col.get("status") or TextColumn(OK.encode() * n, np.arange(n + 1) * len(OK))
    identities = col.get("identities") or TextColumn.of(map(_identity_of, keys))
    issame = np.asarray(data[PAIRS], dtype=bool).ravel() if PAIRS in data else None
    return Embeddings(
        vectors, keys, col.get("paths", keys), identities, status, source, ref, issame
    )


__all__ = [
    "EMBEDDINGS",
    "DATASETS",
    "OK",
    "PAIRS",
    "Embeddings",
    "EmbeddingsWriter",
    "write_embeddings",
    "read_embeddings",
    "read_datasets",
    "from_arrays",
]
