"""Evaluation protocols as data: pair lists, BLUFR trials, gallery/probe sets.

* LFW ``pairs.txt`` (View 2): header ``10 300``, then 10 sets of 300 matched pairs
  (``name n1 n2``) followed by 300 mismatched pairs (``name1 n1 name2 n2``); each set is one
  fold. View 1 (``pairsDevTrain.txt`` / ``pairsDevTest.txt``): header ``N``, then N matched and
  N mismatched pairs. Images map to embedding keys ``Name/Name_%04d``.
* User pairs CSV: ``path1,path2,same`` (optional header row; ``same`` is 1/0, true/false
  or yes/no). Paths are matched to the embeddings by their source path or by
  ``<folder>/<stem>``. Folds are stratified: the i-th genuine pair and the i-th impostor pair
  go to fold ``i % K``.
* BLUFR (Liao et al. 2014) ``blufr_lfw_config.mat``: ``imageList`` (13,233 file names),
  ``labels``, and per trial ``trainIndex``/``testIndex``/``galIndex``/``probIndex`` cells of
  1-based MATLAB indexes into ``imageList``; probes whose label is not in the gallery are the
  impostor probes.
* insightface ``.bin`` sets: the pairs are stored in the embed artifact (``issame``, pair
  ``i`` = rows ``2i``, ``2i+1``); folds are contiguous blocks in file order.
* Identification: a gallery and a probe set, each a folder of images (matched by source
  path) or a text file of keys or paths, one per line.

Images without a usable embedding are never dropped silently: ``resolve_pairs`` lists every
pair it removes with the reason, and the report says whether the result is still comparable
to the standard protocol.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facecl.errors import InputError
from facecl.textcolumn import TextIndex
from facecl.textio import read_text
from facecl.verify.embeddings import Embeddings

LFW_VIEW2 = (10, 300)  # sets x matched pairs per set
LFW_VIEW1_TEST = 500
LFW_VIEW1_TRAIN = 1100


def lfw_key(name: str, number: int | str) -> str:
    return f"{name}/{name}_{int(number):04d}"


def key_from_filename(filename: str) -> str:
    """``Aaron_Eckhart_0001.jpg`` -> ``Aaron_Eckhart/Aaron_Eckhart_0001``."""
    stem = Path(filename).stem
    return f"{stem.rsplit('_', 1)[0]}/{stem}"


# --------------------------------------------------------------------------- pair lists


@dataclass(frozen=True)
class PairList:
    """a, b: N image names (keys or paths); same: (N,) bool; fold: (N,) int."""

    a: list[str]
    b: list[str]
    same: np.ndarray
    fold: np.ndarray
    source: str
    header: tuple[int, ...] = ()

    def __len__(self) -> int:
        return len(self.a)

    @property
    def n_folds(self) -> int:
        return len(np.unique(self.fold))


def _bad(path: Path, line_no: int, msg: str) -> InputError:
    return InputError(
        f"{path}:{line_no}: {msg}",
        "expected the LFW pairs format: a header line, then 'name n1 n2' (matched) "
        "and 'name1 n1 name2 n2' (mismatched) lines",
    )


def _lfw_header(p: Path, first: list[str]) -> tuple[tuple[int, ...], int, int]:
    """The header line's numbers, the number of sets and the pairs of each kind per set."""
    try:
        header = tuple(int(t) for t in first)
    except ValueError:
        raise _bad(p, 1, f"header {' '.join(first)!r} is not numbers") from None
    if len(header) == 2:
        return header, header[0], header[1]
    if len(header) == 1:
        return header, 1, header[0]
    raise _bad(p, 1, f"header has {len(header)} numbers, expected 1 (View 1) or 2 (View 2)")


def _lfw_pair(p: Path, line_no: int, toks: list[str], matched: bool) -> tuple[str, str]:
    """The two image keys of a matched ``name n1 n2`` or mismatched ``name1 n1 name2 n2`` line."""
    try:
        if matched:
            if len(toks) != 3:
                raise _bad(p, line_no, f"expected a matched pair 'name n1 n2', got {toks}")
            return lfw_key(toks[0], toks[1]), lfw_key(toks[0], toks[2])
        if len(toks) != 4:
            raise _bad(p, line_no, f"expected a mismatched pair 'name1 n1 name2 n2', got {toks}")
        return lfw_key(toks[0], toks[1]), lfw_key(toks[2], toks[3])
    except ValueError:
        raise _bad(p, line_no, f"image numbers must be integers: {toks}") from None


def read_lfw_pairs(path: str | os.PathLike) -> PairList:
    """LFW View 2 ``pairs.txt`` (``sets n`` header) or View 1 ``pairsDev*.txt`` (``n``)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"pairs file not found: {p}", "pass --pairs PATH/pairs.txt")
    lines = [ln.split() for ln in read_text(p).splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise _bad(p, 1, "empty file")
    header, n_sets, per = _lfw_header(p, lines[0])
    expected = n_sets * 2 * per
    body = lines[1:]
    if len(body) != expected:
        raise _bad(p, len(lines), f"{len(body)} pair lines, header promises {expected}")
    a, b, same, fold = [], [], [], []
    for i, toks in enumerate(body):
        k, r = divmod(i, 2 * per)  # each set: `per` matched pairs, then `per` mismatched
        ka, kb = _lfw_pair(p, i + 2, toks, matched=r < per)
        a.append(ka)
        b.append(kb)
        same.append(r < per)
        fold.append(k)
    return PairList(a, b, np.array(same), np.array(fold), str(p), header)


_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f"}


def stratified_folds(same: np.ndarray, k: int) -> np.ndarray:
    """Fold of each pair: the i-th genuine and the i-th impostor pair go to fold i % k."""
    fold = np.empty(len(same), dtype=np.int64)
    for cls in (True, False):
        idx = np.flatnonzero(same == cls)
        fold[idx] = np.arange(len(idx)) % k
    return fold


def read_pairs_csv(path: str | os.PathLike, folds: int = 10) -> PairList:
    """A user pair list: CSV rows ``path1,path2,same`` (header row optional)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"pairs file not found: {p}", "pass --pairs PATH.csv")
    a, b, same = [], [], []
    with io.StringIO(read_text(p), newline="") as f:
        for line_no, row in enumerate(csv.reader(f), start=1):
            if not row or all(not c.strip() for c in row) or row[0].lstrip().startswith("#"):
                continue
            if len(row) < 3:
                raise InputError(
                    f"{p}:{line_no}: expected 3 columns path1,path2,same, got {len(row)}",
                    "write one pair per line: path1,path2,1 (same) or 0 (different)",
                )
            v = row[2].strip().lower()
            if v not in _TRUE | _FALSE:
                if line_no == 1:  # a header row
                    continue
                raise InputError(
                    f"{p}:{line_no}: 'same' value {row[2]!r} is not 1/0/true/false",
                    "use 1 for the same person and 0 for different people",
                )
            a.append(row[0].strip())
            b.append(row[1].strip())
            same.append(v in _TRUE)
    if not a:
        raise InputError(f"{p} holds no pairs", "write one pair per line: path1,path2,same")
    same_arr = np.array(same)
    k = max(1, min(folds, int(same_arr.sum()), int((~same_arr).sum())))
    return PairList(a, b, same_arr, stratified_folds(same_arr, k), str(p))


def stored_pairs(emb: Embeddings, folds: int = 10) -> PairList:
    """The pairs stored with embeddings of a verification ``.bin`` (``issame``: pair ``i``
    is rows ``2i`` and ``2i+1``), cut into ``folds`` contiguous folds in file order, as
    insightface's ``eval/verification.py`` does."""
    from facecl.verify.metrics import contiguous_folds

    if emb.issame is None:
        raise InputError(
            f"{emb.source} holds no stored pairs (its input was not a verification .bin)",
            "embed a .bin set first: facecl embed RUN lfw.bin -o E",
        )
    n = len(emb.issame)
    if n < folds:
        raise InputError(f"{emb.source}: {n} pairs cannot make {folds} folds", "use --folds 2")
    return PairList(
        list(emb.keys[0::2]),
        list(emb.keys[1::2]),
        np.asarray(emb.issame, dtype=bool),
        contiguous_folds(n, folds),
        str(emb.source),
    )


# --------------------------------------------------------------------------- resolving


@dataclass(frozen=True)
class ResolvedPairs:
    """idx_a, idx_b: (N,) embedding rows (-1 missing); keep: (N,) bool, both rows usable."""

    idx_a: np.ndarray
    idx_b: np.ndarray
    keep: np.ndarray
    dropped: list[dict[str, Any]] = field(default_factory=list)
    missing_images: dict[str, str] = field(default_factory=dict)


def _stem(key: str) -> str:
    """A key without its ``~N`` suffix (two images of one name), else the key."""
    stem, tilde, n = key.rpartition("~")
    return stem if tilde and n.isdigit() else key


class NameResolver:
    """Finds the embedding row of an image named in a protocol file.

    A name is an embedding key (``Name/Name_0001``), or a path: as stored, or relative to
    each of ``bases`` (the protocol file's folder, the embedded image root, the working
    directory). Failing those, ``<folder>/<stem>`` (or a bare stem) is matched to the keys,
    only when it names one image: ``x.jpg`` and ``x.png`` in one folder are told apart by
    their suffix, and a name that still fits two images is an error naming both.
    """

    def __init__(self, emb: Embeddings, bases: list[Path]):
        self.emb = emb
        self.bases = list(dict.fromkeys(Path(b) for b in bases))
        self.by_stem = TextIndex(emb.keys, _stem)

    def __call__(self, name: str) -> int:
        if (row := self.emb.key_row(name)) >= 0 and len(self.by_stem.rows(name)) <= 1:
            return row  # a key (one that two images share falls through)
        p = Path(name)
        places = [p] if p.is_absolute() else [p, *(b / p for b in self.bases)]
        rows = {r for q in places if (r := self.emb.path_row(os.path.normpath(q))) >= 0}
        if not rows:
            key = f"{p.parent.name}/{p.stem}" if p.parent.name else p.stem
            rows = set(self.by_stem.rows(key))
            if len(rows) > 1 and p.suffix:
                same = {
                    r for r in rows if Path(self.emb.paths[r]).suffix.lower() == p.suffix.lower()
                }
                rows = same or rows
        if len(rows) > 1:
            a, b = sorted(self.emb.paths[r] for r in rows)[:2]
            raise InputError(
                f"the image name {name!r} fits more than one embedded image: {a} and {b}",
                "name it by its path (relative to the pairs file) or by its key",
            )
        return rows.pop() if rows else -1


def embedded_roots(emb: Embeddings) -> list[Path]:
    """Folders the embedded images were listed from (an embed artifact's image tree, list
    file folder, or the align artifact's tree); empty for a plain embeddings file."""
    from facecl.artifacts import is_artifact, read_manifest

    roots: list[Path] = []
    if not is_artifact(emb.source):
        return roots
    for inp in read_manifest(emb.source).inputs:
        path = Path(inp.get("path", ""))
        if inp.get("kind") == "tree":
            roots.append(path)
        elif inp.get("kind") in ("file", "list"):
            roots.append(path.parent)
        elif inp.get("kind") == "artifact" and is_artifact(path):
            sub = read_manifest(path).inputs
            if sub and sub[0].get("kind") == "tree":
                roots.append(Path(sub[0]["path"]))
            elif sub and sub[0].get("kind") == "file":
                roots.append(Path(sub[0]["path"]).parent)
    return roots


def resolve_pairs(emb: Embeddings, pairs: PairList) -> ResolvedPairs:
    """Map each pair's images to embedding rows; list every pair with an unusable image."""
    ok = emb.ok
    cache: dict[str, int] = {}
    bases = [Path(pairs.source).resolve().parent, *embedded_roots(emb), Path.cwd()]
    find = NameResolver(emb, bases)

    def row(name: str) -> int:
        if name not in cache:
            cache[name] = find(name)
        return cache[name]

    ia = np.array([row(n) for n in pairs.a], dtype=np.int64)
    ib = np.array([row(n) for n in pairs.b], dtype=np.int64)
    good_a = (ia >= 0) & ok[np.maximum(ia, 0)]
    good_b = (ib >= 0) & ok[np.maximum(ib, 0)]
    keep = good_a & good_b
    dropped, missing = [], {}
    for i in np.flatnonzero(~keep):
        bad = {}
        for name, r, good in ((pairs.a[i], ia[i], good_a[i]), (pairs.b[i], ib[i], good_b[i])):
            if not good:
                bad[name] = missing[name] = emb.reason(int(r))
        dropped.append(
            {
                "index": int(i),
                "a": pairs.a[i],
                "b": pairs.b[i],
                "same": bool(pairs.same[i]),
                "fold": int(pairs.fold[i]),
                "missing": bad,
            }
        )
    return ResolvedPairs(ia, ib, keep, dropped, missing)


# --------------------------------------------------------------------------- BLUFR


@dataclass(frozen=True)
class BlufrTrial:
    """0-based indexes into the config's image list."""

    train: np.ndarray
    test: np.ndarray
    gallery: np.ndarray
    probe: np.ndarray


@dataclass(frozen=True)
class BlufrConfig:
    image_list: list[str]  # file names, e.g. Aaron_Eckhart_0001.jpg
    keys: list[str]  # Aaron_Eckhart/Aaron_Eckhart_0001
    labels: np.ndarray  # (13233,) class labels 1..5749
    trials: list[BlufrTrial]
    dev_train: np.ndarray
    dev_test: np.ndarray
    source: str


def _cells(m: dict[str, Any], name: str, path: Path) -> list[np.ndarray]:
    if name not in m:
        raise InputError(f"{path} has no '{name}' variable", "is this blufr_lfw_config.mat?")
    return [np.asarray(c).ravel().astype(np.int64) - 1 for c in np.asarray(m[name]).ravel()]


def read_blufr_config(path: str | os.PathLike) -> BlufrConfig:
    """Read ``blufr_lfw_config.mat`` (MATLAB 1-based indexes become 0-based)."""
    import scipy.io

    p = Path(path)
    if not p.is_file():
        raise InputError(f"BLUFR config not found: {p}", "pass --config PATH/blufr_lfw_config.mat")
    try:
        m = scipy.io.loadmat(p)
    except (ValueError, OSError, NotImplementedError) as e:
        raise InputError(f"cannot read {p}: {e}", "is it the BLUFR .mat config?") from None
    if "imageList" not in m or "labels" not in m:
        raise InputError(f"{p} lacks imageList/labels", "is this blufr_lfw_config.mat?")
    names = [str(np.asarray(c).ravel()[0]) for c in np.asarray(m["imageList"]).ravel()]
    labels = np.asarray(m["labels"]).ravel().astype(np.int64)
    train, test = _cells(m, "trainIndex", p), _cells(m, "testIndex", p)
    gal, probe = _cells(m, "galIndex", p), _cells(m, "probIndex", p)
    if not len(train) == len(test) == len(gal) == len(probe):
        raise InputError(f"{p}: trial cells differ in length", "is the config complete?")
    trials = [BlufrTrial(*t) for t in zip(train, test, gal, probe, strict=True)]
    dev = {
        k: np.asarray(m[k]).ravel().astype(np.int64) - 1 if k in m else np.zeros(0, np.int64)
        for k in ("devTrainIndex", "devTestIndex")
    }
    return BlufrConfig(
        image_list=names,
        keys=[key_from_filename(n) for n in names],
        labels=labels,
        trials=trials,
        dev_train=dev["devTrainIndex"],
        dev_test=dev["devTestIndex"],
        source=str(p),
    )


# --------------------------------------------------------------------------- identification


def select_images(
    emb: Embeddings, spec: str | os.PathLike
) -> tuple[np.ndarray, dict[str, str], dict[str, int]]:
    """Embedding rows of a gallery or probe set.

    ``spec`` is a folder (every file under it, listed as align and embed list a folder:
    :func:`facecl.align.io.scan_tree`; matched by path or by ``<folder>/<stem>``) or a text
    file of keys or paths, one per line. Returns (rows (K,) of usable images, {name: reason}
    for the listed entries without a usable embedding (a folder's unreadable folders, link
    loops and non-UTF-8 names included), listing notes (``ignored_hidden``: hidden files)).
    """
    p = Path(spec)
    ok = emb.ok
    missing: dict[str, str] = {}
    notes: dict[str, int] = {}
    if p.is_dir():
        names, missing, notes = _folder_names(p)
    elif p.is_file():
        names = [ln.strip() for ln in read_text(p).splitlines()]
        names = [n for n in names if n and not n.startswith("#")]
    else:
        raise InputError(
            f"gallery/probe set not found: {p}", "pass a folder of images or a list file"
        )
    rows = []
    find = NameResolver(emb, [p if p.is_dir() else p.parent, *embedded_roots(emb), Path.cwd()])
    for name in names:
        r = find(name)
        if r >= 0 and ok[r]:
            rows.append(r)
        else:
            missing[name] = emb.reason(r)
    return np.array(rows, dtype=np.int64), missing, notes


def _folder_names(folder: Path) -> tuple[list[str], dict[str, str], dict[str, int]]:
    """The file paths of a gallery/probe folder to resolve, the entries that cannot be
    (``{shown path: problem}``), and the listing notes; raises when it lists nothing."""
    from facecl.align.io import printable, scan_tree

    listed, counted = scan_tree(folder)
    names, problems = [], {}
    for _rel, path, problem, _detail in listed:
        shown = printable(str(path))
        if problem or shown != str(path):
            problems[shown] = problem or "unsafe_name"
        else:
            names.append(str(path))
    notes = {k: v for k, v in counted.items() if v}
    if not listed:
        hidden = f" ({notes['ignored_hidden']} hidden files ignored)" if notes else ""
        raise InputError(
            f"no images under {folder}{hidden}", "pass a folder of <identity>/<image> files"
        )
    return names, problems, notes
