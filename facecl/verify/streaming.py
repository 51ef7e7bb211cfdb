"""Block-wise scoring in float32: identification and all-pairs statistics without a score matrix.

Scores are computed with torch matmuls one block at a time (``BLOCK_SCORES`` scores per block,
32 MiB), and each block is reduced at once to what the protocols need:

* **identify** (:func:`probe_stats`): per probe its best same-identity score, the top
  ``max_rank`` other-identity scores (a running ``topk``, merged block by block) and so its rank,
  and the best other-identity score. Memory: O(P x max_rank), whatever the gallery size.
* **all pairs** (:func:`all_pairs_stats`, BLUFR): the genuine scores (few: one per same-label
  pair) and an exact rank selector over the impostor scores (:class:`ImpostorRanks`), so the
  k-th largest impostor score is found for every FAR target without storing the N^2 / 2 scores.
* **histograms** (:func:`probe_histogram`, the ``hist`` of :func:`all_pairs_stats`): counts on
  edges chosen from the first pass's min / max, counted in a second pass, the same counts as
  ``np.histogram`` on the stored scores.

The exact selection works on the bits of the float32 scores: a float32 maps to an int32 whose
order is the float order (:func:`_order_keys`). Pass 1 counts the scores per top 16 bits of the
key (65536 buckets); the bucket holding each wanted rank is then known, and pass 2 counts the
low 16 bits inside those buckets only. Two passes, two small count tables, and the k-th largest
value (and how many scores are >= it) is exact, ties included.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

BLOCK_SCORES = 1 << 23
"""Scores per block (float32: 32 MiB; the masks and bucket indices of a block come on top)."""
_BUCKETS = 1 << 16


def _torch():  # noqa: ANN202 - torch is imported lazily: the verify CLI starts without it
    import torch

    return torch


def prepare(x: np.ndarray, metric: str, owned: bool = False) -> torch.Tensor:
    """(N, D) vectors as float32 torch rows: unit length for cosine, raw for euclidean.

    ``owned``: x is a fresh copy (e.g. a fancy-index gather) and is scaled in place."""
    torch = _torch()
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if metric == "cosine":
        norm = t.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return t.div_(norm) if owned else t / norm
    if metric == "euclidean":
        return t
    raise ValueError(f"unknown metric {metric!r}; expected cosine or euclidean")


def block_scores(a: torch.Tensor, b: torch.Tensor, metric: str) -> torch.Tensor:
    """(A, B) float32 similarities of prepared rows ``a`` (A, D) and ``b`` (B, D)."""
    s = a @ b.T
    if metric == "cosine":
        return s
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * s
    return -sq.clamp_min(0.0).sqrt()


def _blocks(n: int, size: int) -> Iterator[slice]:
    for i in range(0, n, size):
        yield slice(i, min(n, i + size))


PROBE_BLOCK = 16384
"""Probes scored at a time: a 10k-probe identify is one block; BLUFR's ~N probes are not
copied whole (32 MiB of 512-d probes at a time)."""


def _score_blocks(sets: GalleryProbes, metric: str) -> Iterator[tuple[slice, slice, torch.Tensor]]:
    """(probe slice, gallery slice, scores (Pb, Gb)) over every probe block x gallery block;
    only one block of each is ever gathered and prepared."""
    vectors, g_rows, p_rows = sets.vectors, sets.g_rows, sets.p_rows
    for ps in _blocks(len(p_rows), PROBE_BLOCK):
        probes = prepare(vectors[p_rows[ps]], metric, owned=True)  # (Pb, D)
        size = max(1, BLOCK_SCORES // len(probes))
        for gs in _blocks(len(g_rows), size):
            g = prepare(vectors[g_rows[gs]], metric, owned=True)
            yield ps, gs, block_scores(probes, g, metric)


# --------------------------------------------------------------------------- identify


@dataclass(frozen=True)
class ProbeStats:
    """What identification needs of each probe, from the full gallery.

    genuine: (P,) float32 best same-identity score (-inf when the identity is not in the gallery);
    rank: (P,) 1 + the number of gallery entries scoring strictly above it, exact up to
    ``max_rank`` and ``max_rank + 1`` beyond; impostor: (P,) best other-identity score
    (-inf when the gallery holds only the probe's identity); lo, hi: min and max of all
    gallery x probe scores.
    """

    genuine: np.ndarray
    rank: np.ndarray
    impostor: np.ndarray
    max_rank: int
    lo: float
    hi: float


@dataclass(frozen=True)
class GalleryProbes:
    """A gallery and probes as rows of one (N, D) ``vectors`` array, with their labels."""

    vectors: np.ndarray
    g_rows: np.ndarray
    p_rows: np.ndarray
    g_labels: np.ndarray
    p_labels: np.ndarray


def _codes(g_labels: np.ndarray, p_labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    torch = _torch()
    _, inv = np.unique(np.r_[np.asarray(g_labels), np.asarray(p_labels)], return_inverse=True)
    inv = torch.from_numpy(inv.astype(np.int64))
    return inv[: len(g_labels)], inv[len(g_labels) :]


def _genuine_pairs(g_labels: np.ndarray, p_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every same-label (probe, gallery) pair as (probe index, gallery index) arrays, sorted by
    gallery index: a block finds its few genuine pairs by slicing, without a (P, G) mask."""
    gcode, pcode = (c.numpy() for c in _codes(g_labels, p_labels))
    g_order = np.argsort(gcode, kind="stable")
    first = np.searchsorted(gcode[g_order], pcode, side="left")
    count = np.searchsorted(gcode[g_order], pcode, side="right") - first
    p_idx = np.repeat(np.arange(len(pcode)), count)
    within = np.arange(len(p_idx)) - np.repeat(np.cumsum(count) - count, count)
    g_idx = g_order[np.repeat(first, count) + within]
    by_g = np.argsort(g_idx, kind="stable")
    return p_idx[by_g], g_idx[by_g]


class _TopK:
    """The running k best other-identity scores (P, k) of every probe, merged block by block;
    rows whose block maximum does not beat their k-th best skip the ``topk``."""

    def __init__(self, n_p: int, k: int) -> None:
        self.k = k
        self.top = _torch().full((n_p, k), -float("inf"))

    def merge(self, ps: slice, imp: torch.Tensor, row_max: torch.Tensor) -> None:
        torch = _torch()
        need = torch.nonzero(row_max > self.top[ps, -1]).squeeze(1)  # ties change no value
        if len(need) == 0:
            return
        rows = need + ps.start
        sub = imp if len(need) == len(imp) else imp.index_select(0, need)
        cand = torch.cat([self.top[rows], sub.topk(min(self.k, sub.shape[1]), dim=1).values], 1)
        self.top[rows] = cand.topk(self.k, dim=1).values


def probe_stats(sets: GalleryProbes, metric: str, max_rank: int = 20) -> ProbeStats:
    """Best genuine score, rank and best impostor score of the probes ``vectors[p_rows]``
    (labels (P,)) against the gallery ``vectors[g_rows]`` (labels (G,)), in gallery blocks."""
    torch = _torch()
    gen_p, gen_g = _genuine_pairs(sets.g_labels, sets.p_labels)
    n_p, k = len(sets.p_rows), max(1, min(max_rank, len(sets.g_rows)))
    best_gen = torch.full((n_p,), -float("inf"))
    top = _TopK(n_p, k)
    lo = float("inf")
    for ps, gs, s in _score_blocks(sets, metric):  # s: (Pb, Gb)
        row_min, row_max = torch.aminmax(s, dim=1)
        lo = min(lo, float(row_min.min()))
        a, b = np.searchsorted(gen_g, [gs.start, gs.stop])
        inside = (gen_p[a:b] >= ps.start) & (gen_p[a:b] < ps.stop)
        pi = torch.from_numpy(gen_p[a:b][inside])
        gi = torch.from_numpy(gen_g[a:b][inside] - gs.start)
        if len(pi):  # the block's genuine pairs: their best, then out of the impostors
            best_gen.scatter_reduce_(0, pi, s[pi - ps.start, gi], "amax")
            s[pi - ps.start, gi] = -float("inf")
        top.merge(ps, s, row_max)
    rank = (top.top > best_gen[:, None]).sum(1) + 1  # capped at k + 1
    impostor = top.top[:, 0]
    return ProbeStats(
        genuine=best_gen.numpy(),
        rank=rank.numpy().astype(np.int64),
        impostor=impostor.numpy(),
        max_rank=k,
        lo=lo,
        hi=float(torch.maximum(best_gen.max(), impostor.max())) if n_p else -float("inf"),
    )


def _edge_boundaries(edges: np.ndarray) -> torch.Tensor:
    """The float32 values t_j with ``s >= edges[j]`` <=> ``s >= t_j`` for any float32 s (the
    interior edges): np.histogram's bins on float32 scores, for ``torch.bucketize``."""
    torch = _torch()
    inner = np.asarray(edges, dtype=np.float64)[1:-1]
    t = inner.astype(np.float32)
    low = t.astype(np.float64) < inner
    t[low] = np.nextafter(t[low], np.float32(np.inf))
    return torch.from_numpy(t)


def _bin(s: torch.Tensor, bounds: torch.Tensor) -> torch.Tensor:
    return _torch().bucketize(s, bounds, right=True)  # bin index 0..B-1


def probe_histogram(
    sets: GalleryProbes, metric: str, edges: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Counts (B,) of the genuine and of the impostor gallery x probe scores on ``edges``
    (B + 1,) spanning every score (np.histogram's bins), a second pass over the blocks."""
    torch = _torch()
    gcode, pcode = _codes(sets.g_labels, sets.p_labels)
    bounds = _edge_boundaries(edges)
    n_bins = len(edges) - 1
    counts = torch.zeros(2 * n_bins, dtype=torch.int64)
    for ps, gs, s in _score_blocks(sets, metric):
        idx = _bin(s, bounds)
        idx += n_bins * (pcode[ps, None] == gcode[None, gs])  # genuine bins after impostor
        counts += torch.bincount(idx.flatten(), minlength=2 * n_bins)
    c = counts.numpy()
    return c[n_bins:], c[:n_bins]


# --------------------------------------------------------------------------- exact ranks


def _order_keys(s: torch.Tensor) -> torch.Tensor:
    """int32 keys in the order of the float32 scores (-0.0 counted as +0.0)."""
    bits = (s + 0.0).view(_torch().int32)  # + 0.0 turns -0.0 into +0.0
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


_HALF = _BUCKETS // 2
_FLUSH = 1 << 22
"""Pass-2 indices held before they are counted (16 MiB of int32)."""
_PERM = np.r_[np.arange(_HALF - 1, -1, -1), np.arange(_HALF, _BUCKETS)]
"""Ordered bucket b <-> raw top-16-bit index ``_PERM[b]`` (its own inverse): negative floats'
bit patterns run backwards. The hot loops count raw bits (3 tensor ops a score) and the
tables are reordered once."""


def _raw_bits(s: torch.Tensor, owned: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(int32 bits, raw top-16-bit index 0..65535) of float32 scores, -0.0 as +0.0.
    ``owned``: s may be changed in place (its -0.0 become +0.0; no copy of the block)."""
    s = s.add_(0.0) if owned else s + 0.0  # -0.0 + 0.0 is +0.0
    bits = s.view(_torch().int32)
    hi = bits >> 16
    hi += _HALF
    return bits, hi


def _key_to_float(key: int) -> float:
    k = np.int32(key)
    bits = k if k >= 0 else k ^ np.int32(0x7FFFFFFF)
    return float(np.array(bits, dtype=np.int32).view(np.float32))


class ImpostorRanks:
    """Exact k-th largest of a stream of float32 scores, in two passes over the stream.

    ``count`` (pass 1) each block, then ``plan(ks)`` with the wanted ranks, ``refine``
    (pass 2) the same blocks again; then ``kth_largest`` and ``count_at_least`` answer for
    the planned ranks (and ``min``, ``max``) as a sorted array would. A block counted with
    ``sign=-1`` is taken out again (the genuine pairs of a block counted whole).
    """

    dtype = np.dtype(np.float32)

    def __init__(self) -> None:
        self.coarse = np.zeros(_BUCKETS, dtype=np.int64)
        self.n = 0
        self._slots = np.full(_BUCKETS, -1, dtype=np.int64)
        self._ks = np.zeros(0, dtype=np.int64)
        self._fine: np.ndarray | None = None
        self._pending: dict[int, list[torch.Tensor]] = {1: [], -1: []}
        self._n_pending = 0
        self._value: dict[int, float] = {}
        self._above = np.zeros(_BUCKETS, dtype=np.int64)
        self._fine_from_top = np.zeros((0, _BUCKETS), dtype=np.int64)

    def count(self, s: torch.Tensor, sign: int = 1, owned: bool = False) -> None:
        """Pass 1: a block of scores (any shape; ``owned``: it may be changed in place)."""
        if s.numel() == 0:
            return
        hi = _raw_bits(s, owned)[1].flatten().numpy()
        self.coarse += sign * np.bincount(hi, minlength=_BUCKETS)[_PERM]
        self.n += sign * s.numel()

    def _bucket_of(self, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bucket of each k-th largest (1-based) and the number of scores in higher buckets."""
        from_top = np.cumsum(self.coarse[::-1])
        b = _BUCKETS - 1 - np.searchsorted(from_top, k, side="left")
        return b, from_top[_BUCKETS - 1 - b] - self.coarse[b]

    def plan(self, ks: np.ndarray, values: np.ndarray | None = None) -> None:
        """The ranks (1-based, 1 = largest) pass 2 must resolve (1 and n always are), and
        float32 ``values`` whose ``count_at_least`` must be exact too (histogram edges)."""
        if self.n == 0:
            return
        ks = np.asarray(ks, dtype=np.int64)
        self._ks = np.unique(np.r_[ks[(ks >= 1) & (ks <= self.n)], 1, self.n])
        extra = np.zeros(0, dtype=np.int64)
        if values is not None and len(values):
            v = _torch().from_numpy(np.asarray(values, dtype=np.float32))
            extra = ((_order_keys(v) >> 16) + _BUCKETS // 2).numpy().astype(np.int64)
        buckets = np.unique(np.r_[self._bucket_of(self._ks)[0], extra])
        self._slots[:] = -1
        self._slots[buckets] = np.arange(len(buckets))
        lut = np.full(_BUCKETS, len(buckets), dtype=np.int32)  # unplanned: past the table
        lut[_PERM[buckets]] = np.arange(len(buckets))
        self._lut = _torch().from_numpy(lut)
        self._fine = np.zeros(len(buckets) * _BUCKETS, dtype=np.int64)

    def refine(self, s: torch.Tensor, sign: int = 1, owned: bool = False) -> None:
        """Pass 2: the same blocks as pass 1 (any order). Only the scores in planned buckets
        (a few percent) are kept, as (slot, low 16 bits) indices, and counted a few million
        at a time (one pass over the count table per flush, not per block)."""
        if s.numel() == 0 or self._fine is None:
            return
        torch = _torch()
        bits, hi = _raw_bits(s.flatten(), owned)
        slot = torch.index_select(self._lut, 0, hi)  # int32 index_select: 3x a plain index
        keep = torch.nonzero(slot < len(self._fine) // _BUCKETS).squeeze(1)
        if len(keep) == 0:
            return
        idx = torch.index_select(slot, 0, keep) * _BUCKETS
        idx += torch.index_select(bits, 0, keep) & 0xFFFF  # raw low bits
        self._pending[sign].append(idx)
        self._n_pending += len(idx)
        if self._n_pending >= _FLUSH:
            self._flush()

    def _flush(self) -> None:
        assert self._fine is not None
        for sign, parts in self._pending.items():
            if parts:
                idx = _torch().cat(parts).numpy()
                self._fine += sign * np.bincount(idx, minlength=len(self._fine))
            parts.clear()
        self._n_pending = 0

    def resolve(self) -> None:
        """After pass 2: the value of each planned rank and how many scores are >= it."""
        if self._fine is None:
            return
        self._flush()
        # per planned bucket: how many of its scores have a low half >= each value (B, 65536)
        fine = self._fine.reshape(-1, _BUCKETS)
        negative = np.flatnonzero(self._slots[:_HALF] >= 0)  # raw low bits run backwards
        fine[self._slots[negative]] = fine[self._slots[negative], ::-1]
        self._fine_from_top = np.cumsum(fine[:, ::-1], axis=1)[:, ::-1]
        self._above = np.cumsum(self.coarse[::-1])[::-1] - self.coarse  # in higher buckets
        buckets, above = self._bucket_of(self._ks)
        for k, b in zip(self._ks, buckets, strict=True):
            from_top = self._fine_from_top[self._slots[b], ::-1]  # low 65535 .. 0
            j = int(np.searchsorted(from_top, k - self._above[b], side="left"))
            self._value[int(k)] = _key_to_float(
                ((int(b) - _BUCKETS // 2) << 16) | (_BUCKETS - 1 - j)
            )
        self._fine = None

    def _resolved(self, k: int) -> float:
        if not self._value:
            self.resolve()
        return self._value[k]

    @property
    def max(self) -> float:
        return self._resolved(1)

    @property
    def min(self) -> float:
        return self._resolved(self.n)

    def kth_largest(self, k: np.ndarray) -> np.ndarray:
        return np.array([self._resolved(int(i)) for i in np.atleast_1d(k)], dtype=self.dtype)

    def count_at_least(self, thr: np.ndarray) -> np.ndarray:
        """How many scores are >= each threshold: a planned rank's value, or one outside
        [min, max]."""
        out = []
        for t in np.asarray(thr, dtype=np.float64):
            if t > self.max:
                out.append(0)
            elif t <= self.min:
                out.append(self.n)
            else:
                key = int(_order_keys(_torch().tensor([t], dtype=_torch().float32))[0])
                b, low = (key >> 16) + _BUCKETS // 2, key & 0xFFFF
                if self._slots[b] < 0:
                    raise ValueError(f"{t} was not planned: its count is not exact")
                out.append(int(self._above[b] + self._fine_from_top[self._slots[b], low]))
        return np.array(out, dtype=np.int64)

    def histogram(self, edges: np.ndarray) -> np.ndarray:
        """Counts (B,) on ``edges`` (B + 1,) spanning every score, as np.histogram's bins;
        the interior edges must have been planned (``plan(values=interior_boundaries)``)."""
        inner = _edge_boundaries(edges).numpy()
        ge = np.r_[self.n, self.count_at_least(inner), 0]  # scores >= each edge
        return ge[:-1] - ge[1:]


# --------------------------------------------------------------------------- all pairs


def _lower_tiles(
    x: np.ndarray, pick: np.ndarray, codes: torch.Tensor, metric: str
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """The scores of every unordered pair {i, j}, i != j, of the rows ``x[pick]``, one square
    tile of the lower triangle at a time (flat), with the tile's same-label mask (None: no
    same-label pair). Only a tile's two row blocks are ever gathered and prepared.

    ``codes`` (the labels of ``pick``) must be sorted: same-label pairs then sit in the tiles
    whose row and column label ranges overlap, and every other tile is counted without a mask.
    """
    torch = _torch()
    side = int(BLOCK_SCORES**0.5)
    n = len(pick)
    lower = torch.ones(min(side, n), min(side, n), dtype=torch.bool).tril(-1)
    for r in _blocks(n, side):
        xr = prepare(x[pick[r]], metric, owned=True)
        for c in _blocks(r.stop, side):
            xc = xr if c.start == r.start else prepare(x[pick[c]], metric, owned=True)
            s = block_scores(xr, xc, metric)
            overlap = codes[r.start] <= codes[c.stop - 1] and codes[c.start] <= codes[r.stop - 1]
            same = (codes[r, None] == codes[None, c]) if overlap else None
            if c.start == r.start:  # the diagonal tile: j < i only
                m = lower[: len(s), : len(s)]
                yield s[m], (same[m] if same is not None else None)
            else:
                yield s.flatten(), (same.flatten() if same is not None else None)


@dataclass
class AllPairs:
    """genuine: (G,) float32 same-label pair scores; impostor: exact ranks of the others;
    hist: (edges, genuine counts, impostor counts) when asked for."""

    genuine: np.ndarray
    impostor: ImpostorRanks
    hist: tuple[np.ndarray, np.ndarray, np.ndarray] | None


def all_pairs_stats(
    x: np.ndarray,
    labels: np.ndarray,
    metric: str,
    ranks_of: Callable[[int], np.ndarray],
    bins: int = 0,
    rows: np.ndarray | None = None,
) -> AllPairs:
    """Scores of every unordered pair of rows of x (N, D) split by label (N,) equality.

    ``ranks_of(n_impostor) -> ks``: the impostor ranks to resolve (e.g. FAR targets x n).
    ``bins`` > 0 also counts a histogram of both kinds on edges spanning every score.
    ``rows``: score ``x[rows]`` (labels (len(rows),)), taken in label order.
    Two passes over the tiles; each tile's scores are counted whole and its few genuine
    ones taken out again, so an impostor score is never copied. The vectors are not copied
    either: each tile's row blocks are gathered and prepared as it is scored.
    """
    torch = _torch()
    _, inv = np.unique(np.asarray(labels), return_inverse=True)
    order = np.argsort(inv, kind="stable")
    pick = order if rows is None else np.asarray(rows)[order]
    x = np.asarray(x)
    codes = torch.from_numpy(inv[order].astype(np.int64))
    imp = ImpostorRanks()
    gen: list[np.ndarray] = []
    lo, hi = np.inf, -np.inf
    for s, same in _lower_tiles(x, pick, codes, metric):
        if bins and s.numel():
            lo, hi = min(lo, float(s.min())), max(hi, float(s.max()))
        if same is not None:
            g = s[same]
            imp.count(g, sign=-1, owned=True)
            gen.append(g.numpy())
        imp.count(s, owned=True)  # the tile is ours: -0.0 -> +0.0 in place
    genuine = np.concatenate(gen) if gen else np.zeros(0, np.float32)
    want_hist = bool(bins and len(genuine) and imp.n)
    edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, bins + 1) if want_hist else None
    imp.plan(ranks_of(imp.n), _edge_boundaries(edges).numpy() if edges is not None else None)
    for s, same in _lower_tiles(x, pick, codes, metric):
        if same is not None:
            imp.refine(s[same], sign=-1, owned=True)
        imp.refine(s, owned=True)
    imp.resolve()
    hist = None
    if edges is not None:  # the edges' counts are exact: their buckets were refined too
        hist = (edges, np.histogram(genuine, edges)[0], imp.histogram(edges))
    return AllPairs(genuine, imp, hist)
