"""Columns of strings: many short strings in one byte string, for listings of millions of
images (a Python ``str`` costs ~50 B plus its text and a list slot; here it is its UTF-8
bytes plus an 8-byte end offset)."""

from __future__ import annotations

import operator
from array import array
from collections.abc import Iterable, Sequence
from typing import TypeVar, overload

import numpy as np


class StringColumn:
    """An append-only list of strings stored as UTF-8 (``surrogateescape``, so names that
    are not UTF-8 come back unchanged)."""

    def __init__(self) -> None:
        self._blob = bytearray()
        self._ends = array("q")

    def append(self, text: str) -> None:
        self._blob += text.encode("utf-8", "surrogateescape")
        self._ends.append(len(self._blob))

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, i: int) -> str:
        start = self._ends[i - 1] if i else 0
        return self._blob[start : self._ends[i]].decode("utf-8", "surrogateescape")

    @property
    def nbytes(self) -> int:
        return len(self._blob) + 8 * len(self._ends)


T = TypeVar("T")


class LazySequence(Sequence[T]):
    """A read-only sequence whose elements are made on demand by ``_item(i)`` (``i`` in
    ``0 .. len - 1``); slices give lists."""

    def _item(self, i: int) -> T:
        raise NotImplementedError

    @overload
    def __getitem__(self, i: int) -> T: ...
    @overload
    def __getitem__(self, i: slice) -> list[T]: ...
    def __getitem__(self, i: int | slice) -> T | list[T]:
        if isinstance(i, slice):
            return [self._item(j) for j in range(*i.indices(len(self)))]
        j = operator.index(i)
        if not -len(self) <= j < len(self):
            raise IndexError(f"index {j} out of range for {len(self)} elements")
        return self._item(j % len(self))


def shared_hashes(texts: Iterable[str], n: int) -> list[int]:
    """The positions (ascending) of the strings whose hash another of the ``n`` strings has
    too: the only ones that can be equal, to compare one by one. 8 bytes a string."""
    return shared_values(np.fromiter((hash(t) for t in texts), np.int64, n))


def shared_values(values: np.ndarray) -> list[int]:
    """The positions (ascending) of the values that occur more than once."""
    order = np.argsort(values, kind="stable")
    same = np.zeros(len(values), bool)
    eq = values[order][1:] == values[order][:-1]
    same[1:] |= eq
    same[:-1] |= eq
    return sorted(int(i) for i in order[same])


class HashColumn:
    """sha256 hex digests ("" = none recorded) as 33 bytes each: a flag and the digest."""

    def __init__(self) -> None:
        self._data = bytearray()

    def append(self, hexdigest: str) -> None:
        self._data += b"\x01" + bytes.fromhex(hexdigest) if hexdigest else bytes(33)

    def __len__(self) -> int:
        return len(self._data) // 33

    def __getitem__(self, i: int) -> str:
        rec = self._data[33 * i : 33 * i + 33]
        return rec[1:].hex() if rec[0] else ""
