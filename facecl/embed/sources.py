"""What ``facecl embed`` reads: an align artifact, a pack artifact, or plain images.

Every input becomes a :class:`Source`: a fixed, ordered list of :class:`Item` (key, source
path, identity, and a status when the item failed before embedding, e.g. no face found) plus
``images(start)``, which yields each item's uint8 RGB crop ``(H, W, 3)`` or the reason it has
none, from item ``start`` on (so a resumed run skips finished items cheaply).

Keys are ``<identity>/<stem>`` (``Abel_Pacheco/Abel_Pacheco_0001``); a repeated key gets a
``~2``, ``~3`` suffix so keys stay unique.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np

from facecl.align.artifact import check_crop, faces_with_hashes
from facecl.artifacts import input_ref, is_artifact, read_manifest, sha256_json
from facecl.columns import HashColumn, LazySequence, StringColumn, shared_hashes
from facecl.embed.artifact import OK
from facecl.embed.binset import is_bin
from facecl.errors import InputError, UsageError
from facecl.models.input_spec import InputSpec

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm"}
LIST_SUFFIXES = {".txt", ".lst", ".list"}

ImageOrReason = np.ndarray | str


@dataclass(frozen=True)
class Item:
    key: str
    path: str  # the source photo (what a user would name the image by)
    identity: str
    status: str = OK  # not "ok": failed before embedding (the reason), never loaded


@dataclass
class Source:
    kind: str  # "align" | "pack" | "images" | "bin"
    items: Sequence[Item]  # a list, or columns that make each Item on demand (align)
    ref: dict[str, str]  # manifest input reference
    _images: Callable[[int], Iterator[ImageOrReason]] = field(repr=False)
    notes: dict[str, object] = field(default_factory=dict)
    issame: np.ndarray | None = None  # a .bin set: (P,) bool, pair i = items 2i and 2i+1

    def images(self, start: int = 0) -> Iterator[ImageOrReason]:
        """Crop (H, W, 3) uint8 RGB or failure reason of items ``start, start + 1, ...``."""
        return self._images(start)

    def __len__(self) -> int:
        return len(self.items)


# --------------------------------------------------------------------------- loading


def read_rgb(path: str | os.PathLike, sha256: str = "") -> ImageOrReason:
    """An image file as (H, W, 3) uint8 RGB, or the reason it cannot be read. With
    ``sha256`` (a crop's hash in its artifact's manifest), a changed file is an error."""
    import cv2

    p = Path(path)
    if not p.is_file():
        return "missing file"
    try:
        data = np.fromfile(p, dtype=np.uint8)
    except OSError as e:
        return f"unreadable file ({e.strerror or type(e).__name__})"
    from facecl.align.io import PNG_MAGIC, png_problem

    check_crop(p, data.tobytes(), sha256)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        return "unreadable image"
    if data[:8].tobytes() == PNG_MAGIC and png_problem(data.tobytes()):
        return "corrupt image"  # decoded, but not the pixels that were written
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def unique_keys(keys: list[str]) -> list[str]:
    """The keys with a ``~2``, ``~3``... suffix on repeats, order kept."""
    seen: dict[str, int] = {}
    out = []
    for k in keys:
        n = seen.get(k, 0) + 1
        seen[k] = n
        out.append(k if n == 1 else f"{k}~{n}")
    return out


def key_for(identity: str, stem: str) -> str:
    return f"{identity}/{stem}" if identity else stem


# --------------------------------------------------------------------------- sources


def open_source(
    path: str | os.PathLike, assume_aligned: bool = False, spec: InputSpec | None = None
) -> Source:
    """The input of ``facecl embed``: align artifact, pack artifact, image folder/list/file,
    or an insightface verification ``.bin`` (:mod:`facecl.embed.binset`).

    Raw photos (not ``assume_aligned``) are aligned with the geometry of ``spec``, the
    model's input (its crop template); without a spec, with facecl's default template.
    """
    p = Path(path)
    if is_artifact(p):
        m = read_manifest(p)
        if m.stage == "align":
            return align_source(p)
        if m.stage == "pack":
            return pack_source(p)
        raise InputError(
            f"{p} is a '{m.stage}' artifact",
            "pass an align or pack artifact, or a folder or list of images",
        )
    if is_bin(p):
        from facecl.embed.binfit import bin_source

        return bin_source(p, spec)
    if Path(str(p) + ".partial").is_dir() and not p.exists():
        read_manifest(p)  # raises the "incomplete artifact" error
    if p.is_dir() or (p.is_file() and p.suffix.lower() in LIST_SUFFIXES | IMAGE_SUFFIXES):
        return image_source(p, assume_aligned, spec)
    if not p.exists():
        raise InputError(f"input not found: {p}", "pass an align/pack artifact or images")
    raise InputError(
        f"cannot embed {p}: not an artifact, a folder, an image, a list of images or a .bin",
        f"lists end in {', '.join(sorted(LIST_SUFFIXES))}",
    )


def align_source(path: Path) -> Source:
    """An align artifact: one item per row of ``faces.csv``; failed rows keep their reason.
    The rows are read streamed into columns (:class:`AlignRows`), not an object per row."""
    rows = AlignRows(path, _source_root(path))
    for r, sha in faces_with_hashes(path):
        rows.add(r.identity, r.source, r.output.strip(), r.reason.strip() or r.status.strip(), sha)
    rows.make_keys_unique()

    def images(start: int) -> Iterator[ImageOrReason]:
        for i in range(start, len(rows)):
            file, sha = rows.crop(i)
            yield rows.status(i) if file is None else read_rgb(file, sha)

    return Source("align", rows, input_ref(path), images)


class AlignRows(LazySequence[Item]):
    """The rows of an align artifact as columns: key, source, output and identity as
    :class:`~facecl.columns.StringColumn` entries, a status code and the crop's 32-byte
    sha256 (~120 B a row); ``rows[i]`` makes row ``i``'s :class:`Item` on demand."""

    def __init__(self, artifact: Path, base: Path | None) -> None:
        self.artifact, self.base = artifact, base
        self._keys, self._sources, self._outs = StringColumn(), StringColumn(), StringColumn()
        self._idents = StringColumn()
        self._status = array("H")
        self._codes: dict[str, int] = {}
        self._names: list[str] = []
        self._sha = HashColumn()
        self._renamed: dict[int, str] = {}

    def add(self, identity: str, source: str, out: str, failed: str, sha256: str) -> None:
        status = OK
        if not out:
            status = failed if failed and failed != OK else "not aligned"
        stem = Path(out).stem if out else Path(source).stem
        self._keys.append(key_for(identity, stem))
        self._sources.append(source)
        self._outs.append(out)
        self._idents.append(identity)
        self._status.append(self._codes.setdefault(status, len(self._codes)))
        if len(self._names) < len(self._codes):
            self._names.append(status)
        self._sha.append(sha256)

    def make_keys_unique(self) -> None:
        """:func:`unique_keys` of the keys, comparing only those that share a hash."""
        seen: dict[str, int] = {}
        for i in shared_hashes((self._keys[i] for i in range(len(self))), len(self)):
            k = self._keys[i]
            seen[k] = seen.get(k, 0) + 1
            if seen[k] > 1:
                self._renamed[i] = f"{k}~{seen[k]}"

    def __len__(self) -> int:
        return len(self._keys)

    def status(self, i: int) -> str:
        return self._names[self._status[i]]

    def crop(self, i: int) -> tuple[Path | None, str]:
        """Row ``i``'s crop file (None without one) and its recorded sha256."""
        out = self._outs[i]
        return (self.artifact / out if out else None), self._sha[i]

    def _item(self, i: int) -> Item:
        src = self._sources[i]
        if self.base is not None and src and not os.path.isabs(src):
            src = str(self.base / src)
        key = self._renamed.get(i) or self._keys[i]
        return Item(key, src, self._idents[i], self.status(i))


def _source_root(path: Path) -> Path | None:
    """Where an align artifact's relative ``source`` paths start: its input tree, or the
    folder of its list file (None for a merge of shard artifacts)."""
    inputs = read_manifest(path, stage="align").inputs
    if not inputs or inputs[0].get("kind") not in ("tree", "file"):
        return None
    root = Path(inputs[0]["path"])
    return root if inputs[0]["kind"] == "tree" else root.parent


def pack_source(path: Path) -> Source:
    """A pack artifact (every split, in shard order): keys and sources are listed from the
    shards' ``paths``/``sources`` datasets; images come from ``iter_pack_images``."""
    import h5py

    from facecl.pack.dataset import iter_pack_images

    items = []
    for shard in read_manifest(path, stage="pack").extra.get("shards", []):
        try:
            with h5py.File(path / shard["path"], "r") as f:
                keys = list(f["paths"].asstr()[:])
                sources = list(f["sources"].asstr()[:]) if "sources" in f else keys
        except (OSError, KeyError) as e:
            raise InputError(
                f"cannot read shard {shard.get('path')} of {path}: {e}",
                "check it with 'facecl inspect --verify'",
            ) from None
        for key, src in zip(keys, sources, strict=True):
            identity = key.split("/", 1)[0] if "/" in key else ""
            items.append(Item(key, src, identity))
    items = _with_unique_keys(items)

    def images(start: int) -> Iterator[ImageOrReason]:
        for i, (_key, img, _label) in enumerate(iter_pack_images(path)):
            if i >= start:
                yield np.ascontiguousarray(img, dtype=np.uint8)

    return Source("pack", items, input_ref(path), images)


@dataclass(frozen=True)
class Photo:
    """One listed input photo: what is read, its key and identity, and the problem found
    while listing (a ``facecl.align.io.SKIP_REASONS`` key; "" when it can be read)."""

    path: Path
    key: str
    identity: str
    shown: str  # the path as UTF-8-safe text
    problem: str = ""


def list_photos(path: Path) -> tuple[list[Photo], dict[str, int]]:
    """The photos of a folder (recursive, sorted), a list file, or a single image.

    A folder is listed by the align stage's :func:`facecl.align.io.scan_tree`: every file
    whatever its extension (decoded by content), folder links followed, unreadable folders,
    link loops and non-UTF-8 names kept as rows with their problem, hidden files counted
    (``ignored_hidden``). Key = ``<identity>/<stem>`` with identity the first folder level,
    as align writes it (a file directly in the folder: its stem)."""
    from facecl.align.io import printable, safe_component, scan_tree

    if path.is_dir():
        rows, notes = scan_tree(path)
        out = []
        for rel, file, problem, _detail in rows:
            parts = rel.split("/")
            if not problem and not all(safe_component(q) for q in parts):
                problem = "unsafe_name"
            names = printable(rel).split("/")
            key = "/".join([*names[:-1], Path(names[-1]).stem or names[-1]])
            identity = printable(parts[0]) if len(parts) > 1 else ""
            out.append(Photo(file, key, identity, printable(str(file)), problem))
        return out, {k: v for k, v in notes.items() if v}
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return [Photo(path, key_for(path.parent.name, path.stem), path.parent.name, str(path))], {}
    try:
        text = path.read_text(encoding="utf-8-sig", errors="surrogateescape")
    except OSError as e:
        raise InputError(f"cannot read list file {path}: {e}", "check the path") from None
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            q = Path(line)
            q = q if q.is_absolute() else path.parent / q
            ident, shown = printable(q.parent.name), printable(str(q))
            problem = "" if shown == str(q) else "unsafe_name"
            out.append(Photo(q, key_for(ident, printable(q.stem)), ident, shown, problem))
    return out, {}


def image_source(path: Path, assume_aligned: bool, spec: InputSpec | None = None) -> Source:
    """Plain photos (aligned here with facecl's align code, in ``spec``'s geometry) or, with
    ``assume_aligned``, ready crops. Identity = the image's first folder level."""
    photos, notes = list_photos(path)
    if not photos:
        raise InputError(f"no files in {path}", "pass a folder of images or a list of image paths")
    items = _with_unique_keys([Item(p.key, p.shown, p.identity, p.problem or OK) for p in photos])
    if path.is_dir():
        ref = input_ref(path)
    else:  # a list names files anywhere: hash the listing and each file's content
        ref = {"path": str(path.resolve()), "sha256": _list_hash(photos), "kind": "list"}
    files = [p.path for p in photos]
    problems = [p.problem for p in photos]
    if assume_aligned:

        def images(start: int) -> Iterator[ImageOrReason]:
            for f, problem in zip(files[start:], problems[start:], strict=True):
                yield problem or read_rgb(f)

        return Source("images", items, ref, images, {"aligned_here": False, **notes})

    template = align_template(spec, path)
    align = _aligner(template)

    def aligned(start: int) -> Iterator[ImageOrReason]:
        for b in range(start, len(files), ALIGN_BATCH):
            batch = problems[b : b + ALIGN_BATCH]
            chunk = zip(files[b : b + ALIGN_BATCH], batch, strict=True)
            good = [f for f, problem in chunk if not problem]
            crops = iter(align(good) if good else [])
            yield from (problem or next(crops) for problem in batch)

    extra = {"aligned_here": True, "align_size": template, **notes}
    return Source("images", items, ref, aligned, extra)


def _list_hash(photos: list[Photo]) -> str:
    """The listed names and each file's content hash (from the stat cache, as a tree's)."""
    from facecl.hashcache import HashCache

    listing = []
    with HashCache() as cache:
        for p in photos:
            try:
                listing.append([p.shown, cache.digest(str(p.path), p.path.stat()).decode()])
            except OSError:
                listing.append([p.shown, "unreadable"])
    return sha256_json(listing)


ALIGN_BATCH = 64  # photos aligned per call (bounded memory; a resumed run re-aligns at most this)


def align_template(spec: InputSpec | None, path: Path) -> str:
    """The align crop template raw photos are aligned with for a model of input ``spec``."""
    from facecl.align.config import AlignConfig

    if spec is None:
        return AlignConfig().size
    if not spec.template:
        raise UsageError(
            f"cannot embed the raw photos {path}: the model takes {spec.size_text} inputs "
            "that are not aligned faces (no crop template)",
            f"pass ready {spec.size_text} crops with --aligned, or an align/pack artifact",
        )
    return spec.template


def _aligner(template: str) -> Callable[[list[Path]], list[ImageOrReason]]:
    """Photos -> crops of ``template`` with the align stage's code and config (the same
    crops 'facecl align --size TEMPLATE' writes), or the reason there is none."""
    from facecl.align.config import AlignConfig, AlignRuntime, Size
    from facecl.align.inmemory import Aligner, align_images

    cfg, runtime = AlignConfig(size=cast(Size, template)), AlignRuntime()
    detector = Aligner(cfg, runtime).detector  # built once, shared by every call

    def align(paths: list[Path]) -> list[ImageOrReason]:
        results = align_images(paths, cfg, runtime, detector=detector)
        out: list[ImageOrReason] = []
        for r in results:
            if r.crop is not None:
                out.append(r.crop)
            else:
                out.append(r.reason or r.status or "not aligned")
        if len(out) != len(paths):
            raise RuntimeError(f"align gave {len(out)} results for {len(paths)} photos")
        return out

    return align


def _with_unique_keys(items: list[Item]) -> list[Item]:
    keys = unique_keys([i.key for i in items])
    return [
        i if k == i.key else Item(k, i.path, i.identity, i.status)
        for i, k in zip(items, keys, strict=True)
    ]
