"""Per-rank checkpoints of a class-sharded run, with a small JSON index (issue 17).

Under ``--shard-classes`` rank r holds only the rows [lo_r, hi_r) of every class-sized tensor
(head weight and bias, centers, CIL's counts, their SGD momentum): the ranges are contiguous,
in rank order, and cover [0, num_classes). Each rank writes its own rows; rank 0 writes what
is not sharded (backbone, its optimiser state, RNG, config, metrics window)::

    RUN/checkpoints/last/index.json                 the commit point, written last
    RUN/checkpoints/last/s{step:09d}/shared.pt      rank 0: {"format", "version", "payload":
                                                     a dict of tensors and plain data}
    RUN/checkpoints/last/s{step:09d}/rank-{r}-of-{W}.pt
                                                    {"format", "version", "rank", "world",
                                                     "lo", "hi", "rows": {key: (hi-lo, ...)}}

``index.json``::

    {
      "format": "facecl.sharded_checkpoint",
      "version": 1,                  # bump (and note why below) when the layout changes
      "facecl_version": "0.1.0",
      "step": 1200, "world": 4, "num_classes": 1000000,
      "ranges": [[0, 250000], [250000, 500000], ...],        # rank r's class rows [lo, hi)
      "dir": "s000001200",           # the data directory of this checkpoint
      "shared": {"file": "shared.pt", "sha256": "...", "size": 123},
      "ranks": [{"file": "rank-0-of-4.pt", "sha256": "...", "size": 123}, ...],
      "sharded_keys": {"head_state/fc.weight": {"dtype": "float32", "shape": [512]}, ...},
                                     # shape: each row's shape (the tensor is (rows, *shape))
      "meta": {...}                  # plain JSON readable without any tensor (config, arch...)
    }

Reading the step, the config or the class ranges (:func:`read_index`) reads ``index.json``
only. A rank loads only the files whose rows overlap its own range (:func:`load_rows`;
memory-mapped, so a different world size -- resharding -- costs about one shard), each
checked against its size and sha256 in the index first.

Saving is atomic for the whole set: every file goes into ``.s{step:09d}.partial/``, is
fsync'd, the directory is renamed to ``s{step:09d}`` and only then ``index.json`` is replaced
(temp file, fsync, ``os.replace``). A kill at any point before that leaves the previous index
naming the previous, complete data directory; the next save removes the leftovers.

Versions:

1. First layout.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import torch

from facecl import __version__
from facecl.artifacts import atomic_write_json, honour_umask, sha256_file
from facecl.errors import CheckpointError

FORMAT = "facecl.sharded_checkpoint"
RANK_FORMAT = "facecl.sharded_checkpoint.rank"
VERSION = 1  # see the module docstring for what each version changed
INDEX = "index.json"
SHARED = "shared.pt"
_FIX = "the checkpoint is corrupt: restore it, or delete it to train the run afresh (--force)"

Ranges = Sequence[tuple[int, int]]


def rank_file(rank: int, world: int) -> str:
    return f"rank-{rank}-of-{world}.pt"


def data_dir_name(step: int) -> str:
    return f"s{int(step):09d}"


@dataclass(frozen=True)
class Index:
    """A sharded checkpoint's ``index.json`` (see the module docstring), validated."""

    path: Path  # the checkpoint directory (holding index.json)
    step: int
    world: int
    num_classes: int
    ranges: list[tuple[int, int]]
    dir: str
    shared: dict[str, Any]
    ranks: list[dict[str, Any]]
    sharded_keys: dict[str, dict[str, Any]]
    meta: dict[str, Any]

    @property
    def data(self) -> Path:
        return self.path / self.dir


# --------------------------------------------------------------------------- ranges


def check_ranges(ranges: Ranges, num_classes: int, where: str = "class ranges") -> None:
    """Contiguous [lo, hi) ranges in rank order covering [0, num_classes), else ValueError."""
    expect = 0
    for r, (lo, hi) in enumerate(ranges):
        if lo != expect or hi < lo:
            raise ValueError(f"{where}: rank {r} has [{lo}, {hi}), expected to start at {expect}")
        expect = hi
    if expect != num_classes or not ranges:
        raise ValueError(f"{where} end at {expect}, not at num_classes {num_classes}")


def overlapping(ranges: Ranges, lo: int, hi: int) -> list[int]:
    """The ranks whose rows overlap [lo, hi)."""
    return [r for r, (a, b) in enumerate(ranges) if a < hi and lo < b and a < b]


# --------------------------------------------------------------------------- writing


class _HashingWriter(io.RawIOBase):
    """A write-only stream that hashes and counts what goes through it (torch.save streams
    sequentially into a non-seekable file), so no file is read back to hash it."""

    def __init__(self, f: io.BufferedWriter):
        self.f = f
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.sha.update(b)
        self.size += len(b)
        return self.f.write(b)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, obj: Any) -> dict[str, Any]:
    """torch.save ``obj`` to ``path`` (fsync'd); its index entry (file, sha256, size)."""
    from facecl.train.checkpoint import _stream_error

    try:
        with open(path, "wb") as f:
            honour_umask(path, f.fileno())
            w = _HashingWriter(f)
            torch.save(obj, cast(IO[bytes], w))  # streamed: the hash comes for free
            f.flush()
            os.fsync(f.fileno())
    except RuntimeError as e:
        raise _stream_error(e, path) from e
    return {"file": path.name, "sha256": w.sha.hexdigest(), "size": w.size}


def partial_dir(ckpt: Path, step: int) -> Path:
    return ckpt / f".{data_dir_name(step)}.partial"


def prepare(ckpt: str | os.PathLike, step: int) -> Path:
    """Rank 0, before any rank writes: a fresh, empty ``.s{step}.partial/`` (leftovers of a
    killed save of the same step removed)."""
    part = partial_dir(Path(ckpt), step)
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    return part


def write_rank(
    part: Path, rank: int, world: int, lo: int, hi: int, rows: Mapping[str, torch.Tensor]
) -> dict[str, Any]:
    """Every rank: its rows (each tensor (hi - lo, ...)) into ``part``; its index entry."""
    for key, t in rows.items():
        if t.dim() == 0 or t.shape[0] != hi - lo:
            raise ValueError(f"sharded {key!r} has shape {tuple(t.shape)}, not ({hi - lo}, ...)")
    obj = {
        "format": RANK_FORMAT,
        "version": VERSION,
        "rank": rank,
        "world": world,
        "lo": lo,
        "hi": hi,
        "rows": {k: t.detach().cpu().contiguous() for k, t in rows.items()},
    }
    entry = _write_file(part / rank_file(rank, world), obj)
    entry["keys"] = {k: _key_info(t) for k, t in rows.items()}
    return entry


def _key_info(t: torch.Tensor) -> dict[str, Any]:
    return {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape[1:])}


def write_shared(part: Path, payload: Mapping[str, Any]) -> dict[str, Any]:
    """Rank 0: everything not sharded (a dict of tensors and plain data) into ``part``."""
    return _write_file(part / SHARED, {"format": FORMAT, "version": VERSION, "payload": payload})


def commit(
    ckpt: str | os.PathLike,
    part: Path,
    *,
    step: int,
    ranges: Ranges,
    shared: dict[str, Any],
    ranks: Sequence[dict[str, Any]],
    meta: Mapping[str, Any],
) -> Index:
    """Rank 0, after every rank wrote: rename ``part`` into place, then replace the index
    (the commit point), then remove older data directories."""
    ckpt = Path(ckpt)
    num_classes = ranges[-1][1] if ranges else 0
    check_ranges(ranges, num_classes)
    keys = dict(ranks[0].get("keys", {})) if ranks else {}
    for r, e in enumerate(ranks):
        if e.get("keys", {}) != keys:
            raise ValueError(f"rank {r} wrote sharded keys {sorted(e.get('keys', {}))}")
    _fsync_dir(part)
    name, n = data_dir_name(step), 1
    while (ckpt / name).exists():  # the same step saved again: keep the committed one intact
        name, n = f"{data_dir_name(step)}-{n}", n + 1
    os.rename(part, ckpt / name)
    _fsync_dir(ckpt)
    index = {
        "format": FORMAT,
        "version": VERSION,
        "facecl_version": __version__,
        "step": int(step),
        "world": len(ranges),
        "num_classes": int(num_classes),
        "ranges": [[int(lo), int(hi)] for lo, hi in ranges],
        "dir": name,
        "shared": shared,
        "ranks": [{k: v for k, v in e.items() if k != "keys"} for e in ranks],
        "sharded_keys": keys,
        "meta": dict(meta),
    }
    atomic_write_json(ckpt / INDEX, index)
    _fsync_dir(ckpt)
    for old in ckpt.iterdir():  # older checkpoints and partials of killed saves
        if old.is_dir() and old.name != name and old.name.lstrip(".").startswith("s"):
            shutil.rmtree(old, ignore_errors=True)
    return read_index(ckpt)


def save_set(
    ckpt: str | os.PathLike,
    *,
    step: int,
    ranges: Ranges,
    rows: Sequence[Mapping[str, torch.Tensor]],
    shared: Mapping[str, Any],
    meta: Mapping[str, Any],
    before_commit: Callable[[], None] | None = None,
) -> Index:
    """The whole set written by one process (every rank's ``rows``): what each rank does
    in a group (``facecl.train.sharded_checkpoint.save_rank``), in sequence."""
    part = prepare(ckpt, step)
    world = len(ranges)
    entries = [write_rank(part, r, world, *ranges[r], rows[r]) for r in range(world)]
    shared_entry = write_shared(part, shared)
    if before_commit is not None:
        before_commit()  # tests: a kill between the files and the commit
    return commit(
        ckpt, part, step=step, ranges=ranges, shared=shared_entry, ranks=entries, meta=meta
    )


def save_rank(
    ckpt: str | os.PathLike,
    *,
    step: int,
    rank: int,
    ranges: Ranges,
    rows: Mapping[str, torch.Tensor],
    shared: Mapping[str, Any] | None,
    meta: Mapping[str, Any],
) -> None:
    """Every rank of the process group at once (collective): its own rows; rank 0 also the
    ``shared`` payload and, once every rank has written, the commit. A rank that fails
    makes every rank raise, and nothing is committed."""
    import torch.distributed as dist

    world = len(ranges)
    group = world > 1 and dist.is_available() and dist.is_initialized()
    part = partial_dir(Path(ckpt), step)
    failed: Exception | None = None
    if rank == 0:
        try:
            prepare(ckpt, step)
        except Exception as e:  # noqa: BLE001 - raised below, after the barrier
            failed = e
    if group:
        dist.barrier()  # the partial directory exists before any rank writes into it
    mine: dict[str, Any] = {}
    try:
        if failed is not None:
            raise failed
        if rank == 0:
            mine["shared"] = write_shared(part, shared or {})
        mine["rank"] = write_rank(part, rank, world, *ranges[rank], rows)
    except Exception as e:  # noqa: BLE001 - every rank must learn of it, then re-raise
        mine = {"error": str(e).splitlines()[0][:200] if str(e) else type(e).__name__}
        _agree(group, world, mine)
        raise
    entries = _agree(group, world, mine)
    if rank == 0:
        done: dict[str, Any] = {}
        try:
            commit(
                ckpt,
                part,
                step=step,
                ranges=ranges,
                shared=entries[0]["shared"],
                ranks=[e["rank"] for e in entries],
                meta=meta,
            )
        except Exception as e:  # noqa: BLE001 - tell the other ranks, then re-raise
            _agree(group, world, {"error": f"commit failed: {e}"})
            raise
        _agree(group, world, done)
    else:
        _agree(group, world, {})


def _agree(group: bool, world: int, mine: dict[str, Any]) -> list[dict[str, Any]]:
    """Every rank's ``mine`` (an all-gather); raises on every rank when one reported an
    ``error`` (the rank that failed raises its own error instead)."""
    import torch.distributed as dist

    got: list[Any] = [mine]
    if group:
        got = [None] * world
        dist.all_gather_object(got, mine)
    for r, e in enumerate(got):
        if e.get("error") and "error" not in mine:
            raise CheckpointError(
                f"rank {r} could not write the checkpoint: {e['error']}",
                "see rank " + str(r) + "'s message; the previous checkpoint is kept",
            )
    return got


# --------------------------------------------------------------------------- reading


def is_sharded(ckpt: str | os.PathLike) -> bool:
    return (Path(ckpt) / INDEX).is_file()


def read_index(ckpt: str | os.PathLike) -> Index:
    """The checkpoint's index (step, world, ranges, files, meta): reads no tensor."""
    ckpt = Path(ckpt)
    where = ckpt / INDEX
    try:
        raw = json.loads(where.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"sharded checkpoint not found: {where}", "train the run") from None
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{where} is not readable JSON ({e})", _FIX) from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointError(f"{where} is not a facecl sharded checkpoint index", _FIX)
    if not isinstance(raw.get("version"), int) or raw["version"] > VERSION:
        raise CheckpointError(
            f"{where} has version {raw.get('version')!r} (this facecl reads {VERSION})",
            "upgrade facecl",
        )
    try:
        index = _parse_index(ckpt, raw)
        check_ranges(index.ranges, index.num_classes, f"{where}: ranges")
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{where} is malformed ({str(e)[:160]})", _FIX) from None
    return index


def _safe_name(name: Any) -> str:
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name[0] == ".":
        raise ValueError(f"file name {name!r} is not a plain name")
    return name


def _entry(e: Any) -> dict[str, Any]:
    if not isinstance(e, dict) or not isinstance(e["sha256"], str):
        raise ValueError(f"file entry {e!r}")
    return {"file": _safe_name(e["file"]), "sha256": e["sha256"], "size": int(e["size"])}


def _parse_index(ckpt: Path, raw: dict[str, Any]) -> Index:
    ranges = [(int(lo), int(hi)) for lo, hi in raw["ranges"]]
    ranks = [_entry(e) for e in raw["ranks"]]
    if len(ranks) != len(ranges) or int(raw["world"]) != len(ranges):
        raise ValueError(f"world {raw['world']} with {len(ranges)} ranges, {len(ranks)} files")
    keys, meta = raw["sharded_keys"], raw.get("meta", {})
    if not isinstance(keys, dict) or not isinstance(meta, dict):
        raise ValueError("sharded_keys and meta must be objects")
    return Index(
        path=ckpt,
        step=int(raw["step"]),
        world=len(ranges),
        num_classes=int(raw["num_classes"]),
        ranges=ranges,
        dir=_safe_name(raw["dir"]),
        shared=_entry(raw["shared"]),
        ranks=ranks,
        sharded_keys=keys,
        meta=meta,
    )


def _load_checked(index: Index, entry: dict[str, Any]) -> dict[str, Any]:
    """One data file: size and sha256 checked against the index, then memory-mapped."""
    path = index.data / entry["file"]
    if not path.is_file():
        raise CheckpointError(f"{path} is missing (named by {index.path / INDEX})", _FIX)
    size = path.stat().st_size
    if size != entry["size"]:
        raise CheckpointError(f"{path} is {size} bytes, its index says {entry['size']}", _FIX)
    if sha256_file(path) != entry["sha256"]:
        raise CheckpointError(f"{path} does not match the sha256 in its index", _FIX)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for bad files
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({str(e)[:120]})", _FIX
        ) from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is not a facecl checkpoint file", _FIX)
    return data


def load_shared(index: Index) -> dict[str, Any]:
    """Rank 0's unsharded part (backbone, optimiser state, RNG, ...), checked."""
    data = _load_checked(index, index.shared)
    if data.get("format") != FORMAT or not isinstance(data.get("payload"), dict):
        raise CheckpointError(f"{index.data / SHARED} is not a facecl sharded checkpoint", _FIX)
    return data["payload"]


def _load_rank(index: Index, r: int) -> dict[str, torch.Tensor]:
    data = _load_checked(index, index.ranks[r])
    lo, hi = index.ranges[r]
    path = index.data / index.ranks[r]["file"]
    rows = data.get("rows")
    if data.get("format") != RANK_FORMAT or (data.get("lo"), data.get("hi")) != (lo, hi):
        raise CheckpointError(f"{path} does not hold rows [{lo}, {hi}) of its index", _FIX)
    if not isinstance(rows, dict) or set(rows) != set(index.sharded_keys):
        raise CheckpointError(f"{path} holds keys {sorted(rows or {})}, not its index's", _FIX)
    for key, t in rows.items():
        if not isinstance(t, torch.Tensor) or t.dim() == 0 or t.shape[0] != hi - lo:
            raise CheckpointError(f"{path}: {key!r} is not {hi - lo} rows", _FIX)
    return rows


def load_rows(index: Index, lo: int, hi: int) -> dict[str, torch.Tensor]:
    """Rows [lo, hi) of every sharded tensor, from the files that overlap them only.

    A range that one file holds comes back as a view of that memory-mapped file (its own
    shard at the same world size: nothing is copied); others are assembled (resharding).
    """
    if not 0 <= lo <= hi <= index.num_classes:
        raise ValueError(f"rows [{lo}, {hi}) outside [0, {index.num_classes})")
    ranks = overlapping(index.ranges, lo, hi)
    if len(ranks) == 1 and index.ranges[ranks[0]][0] <= lo and hi <= index.ranges[ranks[0]][1]:
        a = index.ranges[ranks[0]][0]
        return {k: t[lo - a : hi - a] for k, t in _load_rank(index, ranks[0]).items()}
    out: dict[str, torch.Tensor] = {}
    for key, info in index.sharded_keys.items():
        dtype = getattr(torch, str(info["dtype"]))
        out[key] = torch.empty((hi - lo, *info["shape"]), dtype=dtype)
    for r in ranks:
        a, b = index.ranges[r]
        rows = _load_rank(index, r)
        s, e = max(lo, a), min(hi, b)
        for key, t in rows.items():
            out[key][s - lo : e - lo].copy_(t[s - a : e - a])
        del rows  # unmapped before the next file: memory stays about one shard
    return out


def split_rows(tensors: Mapping[str, torch.Tensor], lo: int, hi: int) -> dict[str, torch.Tensor]:
    """Rows [lo, hi) of full (unsharded) class tensors: a sharded run from a ``last.pt``."""
    return {k: t[lo:hi] for k, t in tensors.items()}


# --------------------------------------------------------------------------- payloads

KeyPath = tuple[str | int, ...]


def row_key(path: KeyPath) -> str:
    """A nested payload position as a sharded key: ``("optimizer", "state", 3,
    "momentum_buffer")`` -> ``"optimizer/state/3/momentum_buffer"`` (state_dict names hold
    dots, never slashes; an int part is written as digits and read back as an int)."""
    for part in path:
        if isinstance(part, str) and ("/" in part or part.isdigit()):
            raise ValueError(f"payload key {part!r} cannot be part of a sharded key")
    return "/".join(str(p) for p in path)


def _parts(key: str) -> list[str | int]:
    return [int(p) if p.isdigit() else p for p in key.split("/")]


def split_payload(
    payload: Mapping[str, Any], paths: Sequence[KeyPath]
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """A checkpoint payload (nested dicts) without the class-row tensors at ``paths``, and
    those tensors by :func:`row_key` (the dicts along each path are copied, not changed)."""
    shared: dict[str, Any] = dict(payload)
    rows: dict[str, torch.Tensor] = {}
    for path in paths:
        node: dict[Any, Any] = shared
        for part in path[:-1]:
            node[part] = dict(node[part])
            node = node[part]
        rows[row_key(path)] = node.pop(path[-1])
    return shared, rows


def merge_payload(shared: Mapping[str, Any], rows: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """:func:`split_payload` undone: the rows put back at their places in the payload."""
    out: dict[str, Any] = dict(shared)
    for key, t in rows.items():
        parts = _parts(key)
        node: dict[Any, Any] = out
        for part in parts[:-1]:
            node[part] = dict(node.get(part, {}))
            node = node[part]
        node[parts[-1]] = t
    return out
