"""insightface's verification sets (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``...), read
without unpickling.

A ``.bin`` is a pickle of ``(bins, issame_list)``: ``bins`` the encoded (JPEG/PNG) bytes of
2P aligned 112x112 crops, pair ``i`` being images ``2i`` and ``2i+1``, and ``issame_list``
P booleans in file order. The published files were written by Python 2 (protocol 2, byte
strings as ``BINSTRING``/``SHORT_BINSTRING``); re-saved ones by Python 3 (protocol 3/4,
``BINBYTES``, ``FRAME``, ``MEMOIZE``).

:func:`read_bin` never calls :mod:`pickle`: it walks the opcodes with
:func:`pickletools.genops` (which only parses) and builds the value on its own stack from an
allow-list of opcodes that make lists, tuples, byte strings and booleans. Any other opcode
(``GLOBAL``, ``REDUCE``, ``BUILD``, ``INST``... everything that could import or call) is
refused with a one-line :class:`InputError` before anything after it is read.
:func:`write_bin` writes the protocol-4 layout (benchmarks and tests make sets with it).
"""

from __future__ import annotations

import os
import pickle
import pickletools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facecl.errors import InputError

BIN_SUFFIX = ".bin"
HINT = "a verification .bin holds only (list of image bytes, list of bools)"

_BYTES = {"BINSTRING", "SHORT_BINSTRING", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8"}
_BOOLS = {"NEWTRUE": True, "NEWFALSE": False}
_PUT = {"PUT", "BINPUT", "LONG_BINPUT"}
_GET = {"GET", "BINGET", "LONG_BINGET"}
_NOOP = {"PROTO", "FRAME"}
_MARK = object()


@dataclass(frozen=True)
class BinSet:
    """images: 2P encoded crops; issame: (P,) bool, pair i = images 2i and 2i+1."""

    images: list[bytes]
    issame: np.ndarray
    source: Path

    @property
    def n_pairs(self) -> int:
        return len(self.issame)

    @property
    def name(self) -> str:
        """The set's name: the file stem (``agedb_30``)."""
        return self.source.stem


class _Refused(Exception):
    pass


def _tuple_from_mark(stack: list[Any]) -> tuple[Any, ...]:
    i = _last_mark(stack)
    items = tuple(stack[i + 1 :])
    del stack[i:]
    return items


def _last_mark(stack: list[Any]) -> int:
    for i in range(len(stack) - 1, -1, -1):
        if stack[i] is _MARK:
            return i
    raise _Refused("APPENDS/TUPLE without a MARK")


_NOT_A_VALUE = object()


def _value(name: str, arg: Any) -> Any:
    """The value an opcode pushes (bytes, bool, empty list/tuple, mark), else _NOT_A_VALUE."""
    if name in _BYTES:
        return arg.encode("latin-1") if isinstance(arg, str) else bytes(arg)
    if name in _BOOLS:
        return _BOOLS[name]
    if name == "INT" and isinstance(arg, bool):  # protocol 0/1 True/False: I01 / I00
        return arg
    if name == "EMPTY_LIST":
        return []
    if name == "EMPTY_TUPLE":
        return ()
    return _MARK if name == "MARK" else _NOT_A_VALUE


def _collect(name: str, stack: list[Any]) -> None:
    """APPEND, APPENDS, TUPLE, TUPLE1..3: build from what is on the stack."""
    if name == "APPEND":
        item = stack.pop()
        _list_on_top(stack).append(item)
    elif name == "APPENDS":
        items = _tuple_from_mark(stack)
        _list_on_top(stack).extend(items)
    elif name == "TUPLE":
        stack.append(_tuple_from_mark(stack))
    else:
        n = int(name[-1])
        if len(stack) < n:
            raise _Refused(f"{name} on a stack of {len(stack)}")
        items = tuple(stack[-n:])
        del stack[-n:]
        stack.append(items)


_COLLECT = {"APPEND", "APPENDS", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3"}


def _step(name: str, arg: Any, stack: list[Any], memo: dict[int, Any]) -> None:
    """Apply one allowed opcode to the stack (raises ``_Refused`` for any other)."""
    value = _value(name, arg)
    if value is not _NOT_A_VALUE:
        stack.append(value)
    elif name in _COLLECT:
        _collect(name, stack)
    elif name in _PUT or name == "MEMOIZE":
        memo[len(memo) if name == "MEMOIZE" else int(arg)] = stack[-1]
    elif name in _GET:
        if int(arg) not in memo:
            raise _Refused(f"{name} of unknown memo entry {arg}")
        stack.append(memo[int(arg)])
    elif name not in _NOOP:
        raise _Refused(f"opcode {name}" + (f" {arg!r}" if arg is not None else ""))


def _list_on_top(stack: list[Any]) -> list[Any]:
    if not stack or not isinstance(stack[-1], list):
        raise _Refused("APPEND to something that is not a list")
    return stack[-1]


def _walk(path: Path, f: Any) -> Any:
    """The value the pickle in ``f`` builds, from the allowed opcodes only."""
    stack: list[Any] = []
    memo: dict[int, Any] = {}
    try:
        for op, arg, pos in pickletools.genops(f):
            if op.name == "STOP":
                if len(stack) != 1:
                    raise _Refused(f"STOP with {len(stack)} values on the stack")
                return stack[0]
            try:
                _step(op.name, arg, stack, memo)
            except _Refused as e:
                raise InputError(f"{path}: refused: {e} at byte {pos}", HINT) from None
    except ValueError as e:  # genops: truncated or unknown opcode bytes
        raise InputError(f"{path}: not a readable pickle ({e})", HINT) from None
    raise InputError(f"{path}: the pickle has no STOP (truncated file?)", HINT)


def _check_value(path: Path, value: Any) -> tuple[list[bytes], np.ndarray]:
    if not (isinstance(value, tuple) and len(value) == 2):
        raise InputError(f"{path}: holds a {type(value).__name__}, not (bins, issame)", HINT)
    bins, issame = value
    if not isinstance(bins, list) or not all(isinstance(b, bytes) for b in bins):
        raise InputError(f"{path}: the first element is not a list of image bytes", HINT)
    if not isinstance(issame, list) or not all(isinstance(s, bool) for s in issame):
        raise InputError(f"{path}: the second element is not a list of bools", HINT)
    if len(bins) != 2 * len(issame):
        raise InputError(
            f"{path}: {len(bins)} images for {len(issame)} pairs (expected {2 * len(issame)})",
            "the file is truncated or not an insightface verification set",
        )
    if not issame:
        raise InputError(f"{path}: holds no pairs", HINT)
    return bins, np.array(issame, dtype=bool)


def read_bin(path: str | os.PathLike) -> BinSet:
    """A verification ``.bin`` (Python 2 or 3 pickle); refuses anything else in one line."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"verification set not found: {p}", "pass e.g. faces_emore/lfw.bin")
    with open(p, "rb") as f:
        value = _walk(p, f)
    bins, issame = _check_value(p, value)
    return BinSet(bins, issame, p)


def write_bin(path: str | os.PathLike, images: list[bytes], issame: list[bool]) -> Path:
    """Write ``(images, issame)`` as a protocol-4 ``.bin`` (our own data: plain pickle)."""
    if len(images) != 2 * len(issame):
        raise ValueError(f"{len(images)} images for {len(issame)} pairs")
    p = Path(path)
    with open(p, "wb") as f:
        pickle.dump(([bytes(b) for b in images], [bool(s) for s in issame]), f, protocol=4)
    return p


def is_bin(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.suffix.lower() == BIN_SUFFIX and p.is_file()


__all__ = ["BinSet", "read_bin", "write_bin", "is_bin"]
