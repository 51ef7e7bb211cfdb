"""HDF5 shard files: one writer that publishes a shard atomically, and small readers.

A shard (named by ``facecl.pack.artifact.shard_name``: ``shard-NNNNN.h5``) holds N images of
one split::

    images   uint8  (N, H, W, 3)  RGB, chunked one image per chunk, lossless filter optional
    labels   int64  (N,)          class label (see classes.json)
    paths    utf-8  (N,)          "<identity>/<stem>", the image's key
    sources  utf-8  (N,)          the align stage's ``source`` of the image
    attrs    schema="facecl.pack.shard/1", split, index, count

The writer fills ``<name>.tmp`` and renames it into place after the last image, so a shard
file under its final name is always complete. Timestamps are off: the same input gives a
byte-identical shard (and sha256).
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from facecl.errors import IntegrityError

SHARD_SCHEMA = "facecl.pack.shard/1"


class ShardWriter:
    """Writes exactly ``count`` images into ``path`` (via ``path.tmp``)."""

    def __init__(
        self,
        path: str | os.PathLike,
        count: int,
        image_size: tuple[int, int],
        *,
        split: str,
        index: int,
        compression: str = "none",
        gzip_level: int = 4,
    ):
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.count = count
        self.n = 0
        self._labels = np.zeros(count, np.int64)
        self._paths: list[str] = []
        self._sources: list[str] = []
        h, w = image_size
        filt: dict[str, Any] = {}
        if compression == "lzf":
            filt = {"compression": "lzf"}
        elif compression == "gzip":
            filt = {"compression": "gzip", "compression_opts": gzip_level}
        self.tmp.unlink(missing_ok=True)
        self._f = h5py.File(self.tmp, "w", track_order=False)
        self._images = self._f.create_dataset(
            "images",
            (count, h, w, 3),
            np.uint8,
            chunks=(1, h, w, 3),
            maxshape=(None, h, w, 3),  # close(allow_fewer=True) may shrink it
            track_times=False,
            **filt,
        )
        self._shape = (h, w, 3)
        self._direct = {"none": "raw", "gzip": "zlib"}.get(compression)
        self._level = gzip_level
        self._f.attrs.update({"schema": SHARD_SCHEMA, "split": split, "index": index})

    def add(self, image: np.ndarray, label: int, key: str, source: str) -> None:
        """``image``: uint8 (H, W, 3) RGB."""
        if image.shape != self._shape or image.dtype != np.uint8:
            raise ValueError(
                f"image {key}: {image.dtype} {image.shape}, expected uint8 {self._shape}"
            )
        image = np.ascontiguousarray(image)
        if self._direct == "raw":  # one image per chunk: the image bytes are the chunk
            self._images.id.write_direct_chunk((self.n, 0, 0, 0), image.tobytes())
        elif self._direct == "zlib":  # HDF5's gzip filter is a plain zlib stream
            data = zlib.compress(image.tobytes(), self._level)
            self._images.id.write_direct_chunk((self.n, 0, 0, 0), data)
        else:
            self._images[self.n] = image
        self._labels[self.n] = label
        self._paths.append(key)
        self._sources.append(source)
        self.n += 1

    def close(self, allow_fewer: bool = False) -> Path:
        """Write labels and keys, close, and move the shard into place. ``allow_fewer``: a
        shard that got fewer images than planned (some were unreadable) is shrunk to them."""
        if allow_fewer and self.n < self.count:
            self._images.resize(self.n, axis=0)
            self._labels = self._labels[: self.n]
            self.count = self.n
        if self.n != self.count:
            self.abort()
            raise RuntimeError(
                f"shard {self.path.name}: {self.n} images written, {self.count} planned"
            )
        text = h5py.string_dtype("utf-8")
        self._f.create_dataset("labels", data=self._labels, track_times=False)
        self._f.create_dataset("paths", data=self._paths, dtype=text, track_times=False)
        self._f.create_dataset("sources", data=self._sources, dtype=text, track_times=False)
        self._f.attrs["count"] = self.count
        self._f.close()
        with open(self.tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        try:
            self._f.close()
        finally:
            self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, *_: Any) -> None:
        if exc_type is not None:
            self.abort()


def verify_shard(path: str | os.PathLike, sha256: str) -> None:
    """Raise ``IntegrityError`` unless the shard's bytes hash to ``sha256`` (its manifest
    entry): a consumer checks a shard once when it opens the pack, so flipped bytes are a
    one-line error instead of silently wrong pixels."""
    from facecl.artifacts import sha256_file

    try:
        actual = sha256_file(path)
    except FileNotFoundError:
        raise IntegrityError(
            f"shard {path} is missing", "rebuild with 'facecl pack --force'"
        ) from None
    except OSError as e:
        raise IntegrityError(f"cannot read shard {path}: {e.strerror}", "check the file") from None
    if actual != sha256:
        raise IntegrityError(
            f"shard {path} is altered or truncated "
            f"(sha256 {actual[:12]} != manifest {sha256[:12]})",
            "rebuild the pack with 'facecl pack --force'",
        )


def decompress_chunk(data: bytes, path: object, row: int) -> bytes:
    """A gzip (zlib) chunk's bytes, or a one-line error naming the shard and image."""
    try:
        return zlib.decompress(data)
    except zlib.error as e:
        raise IntegrityError(
            f"shard {path}: image {row} does not decompress ({e})",
            "the shard is corrupt; rebuild the pack with 'facecl pack --force'",
        ) from None


def open_shard(path: str | os.PathLike) -> h5py.File:
    """Open a shard read-only, failing clearly on a truncated or foreign file."""
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise IntegrityError(
            f"cannot open shard {path}: {e}",
            "the file is truncated or not HDF5; check with 'facecl inspect --verify', "
            "rebuild with 'facecl pack --force'",
        ) from None
    if f.attrs.get("schema") != SHARD_SCHEMA or "images" not in f:
        f.close()
        raise IntegrityError(f"{path} is not a facecl pack shard", "pass a 'facecl pack' output")
    return f
