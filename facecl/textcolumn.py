"""Compact columns of strings: one utf-8 buffer and offsets, and a hashed lookup over them.

A Python ``list[str]`` costs ~60-80 B a row on top of the text (the ``str`` object and the list
slot), and a ``dict[str, int]`` over it another ~100 B. At a million rows (a 1M-face gallery)
that is ~0.5 GiB per column. :class:`TextColumn` keeps the text (8 B of offset a row) and
decodes a row when it is read; :class:`TextIndex` finds rows by value from 16 B a row (a sorted
array of hashes and the rows in that order), checking each candidate against the column.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, overload

import numpy as np

_BLOCK = 65536
"""Rows encoded (or hashed) at a time: the per-row Python objects exist for one block only."""


def _encoded(values: Iterable[Any]) -> Iterator[bytes]:
    for v in values:
        yield v if isinstance(v, bytes) else str(v).encode("utf-8", "surrogatepass")


class TextColumn(Sequence[str]):
    """N strings: ``buf`` (utf-8, concatenated) and ``offsets`` (N + 1,) int64, row i being
    ``buf[offsets[i]:offsets[i + 1]]``. A read-only sequence of ``str``: ``col[i]``,
    ``col[a:b]`` (a list), ``len``, iteration, ``==`` a list or another column."""

    __slots__ = ("_buf", "_off")

    def __init__(self, buf: bytes, offsets: np.ndarray) -> None:
        self._buf = buf
        self._off = np.asarray(offsets, dtype=np.int64)

    @classmethod
    def of(cls, values: Iterable[Any]) -> TextColumn:
        """A column of ``values`` (str, bytes as utf-8, or anything ``str()`` gives text for),
        encoded a block at a time."""
        parts: list[bytes] = []
        lengths: list[np.ndarray] = []
        block: list[bytes] = []
        for b in _encoded(values):
            block.append(b)
            if len(block) == _BLOCK:
                cls._add(block, parts, lengths)
                block = []
        cls._add(block, parts, lengths)
        off = np.zeros(1 + sum(len(n) for n in lengths), dtype=np.int64)
        np.cumsum(np.concatenate(lengths), out=off[1:])
        return cls(b"".join(parts), off)

    @staticmethod
    def _add(block: list[bytes], parts: list[bytes], lengths: list[np.ndarray]) -> None:
        joined = b"".join(block)
        joined.decode("utf-8", "surrogatepass")  # raises UnicodeDecodeError on bad bytes
        parts.append(joined)
        lengths.append(np.fromiter(map(len, block), np.int64, len(block)))

    def __len__(self) -> int:
        return len(self._off) - 1

    def _row(self, i: int) -> str:
        return self._buf[self._off[i] : self._off[i + 1]].decode("utf-8", "surrogatepass")

    @overload
    def __getitem__(self, i: int) -> str: ...

    @overload
    def __getitem__(self, i: slice) -> list[str]: ...

    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [self._row(j) for j in range(*i.indices(len(self)))]
        j = operator.index(i)
        n = len(self)
        if not -n <= j < n:
            raise IndexError(f"row {j} of a column of {n}")
        return self._row(j % n if j < 0 else j)

    def __iter__(self) -> Iterator[str]:
        off, buf = self._off.tolist(), self._buf
        for a, b in zip(off[:-1], off[1:], strict=True):
            yield buf[a:b].decode("utf-8", "surrogatepass")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TextColumn):
            return self._buf == other._buf and np.array_equal(self._off, other._off)
        if isinstance(other, (list, tuple)):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        head = ", ".join(repr(s) for s in self[:3])
        return f"TextColumn([{head}{', ...' if len(self) > 3 else ''}], n={len(self)})"

    @property
    def nbytes(self) -> int:
        return len(self._buf) + self._off.nbytes

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The rows ``rows`` as a numpy ``str`` array (labels to compare, sort, unique)."""
        return np.array([self._row(int(r)) for r in np.asarray(rows).ravel()], dtype=str)

    def equals(self, value: str) -> np.ndarray:
        """(N,) bool: which rows are ``value``, without decoding a row."""
        v = np.frombuffer(value.encode("utf-8", "surrogatepass"), dtype=np.uint8)
        buf = np.frombuffer(self._buf, dtype=np.uint8)
        start = self._off[:-1]
        hit = np.diff(self._off) == len(v)
        for j, byte in enumerate(v):
            cand = np.flatnonzero(hit)
            hit[cand] = buf[start[cand] + j] == byte
        return hit


class TextIndex:
    """Rows of a :class:`TextColumn` by value (or by ``norm(value)``): a sorted (N,) int64
    array of hashes and the rows in that order; each candidate is checked against the column.
    Hashes are Python's ``hash`` of ``str``: valid within this process only."""

    def __init__(self, column: TextColumn, norm: Callable[[str], str] | None = None) -> None:
        self.column, self.norm = column, norm
        n = len(column)
        values: Iterable[str] = column if norm is None else map(norm, column)
        h = np.fromiter(map(hash, values), dtype=np.int64, count=n)
        self._order = np.argsort(h, kind="stable")
        self._hash = h[self._order]

    def _value(self, row: int) -> str:
        s = self.column[row]
        return s if self.norm is None else self.norm(s)

    def rows(self, value: str) -> list[int]:
        """Every row whose (normalised) value is ``value``, in row order."""
        h = hash(value)
        lo = int(np.searchsorted(self._hash, h, side="left"))
        hi = int(np.searchsorted(self._hash, h, side="right"))
        return [int(r) for r in self._order[lo:hi] if self._value(int(r)) == value]

    def first(self, value: str) -> int:
        """The first row holding ``value``, or -1."""
        rows = self.rows(value)
        return rows[0] if rows else -1

    def duplicate(self) -> str | None:
        """A value held by two rows, if any (None: every value is unique)."""
        same = np.flatnonzero(self._hash[1:] == self._hash[:-1])
        for i in same:
            a, b = int(self._order[i]), int(self._order[i + 1])
            if self._value(a) == self._value(b):
                return self._value(a)
            if len(self.rows(self._value(a))) > 1:  # a hash shared by three: check each
                return self._value(a)
        return None


__all__ = ["TextColumn", "TextIndex"]
