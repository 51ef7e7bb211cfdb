"""Reading the align stage's inputs: image decoding that never raises, source listings,
landmark files.

``decode_image`` turns any file into an (H, W, 3) uint8 RGB array, upright (EXIF orientation
applied), or into a reason code saying why not. Reason codes (``SKIP_REASONS``) are what
``faces.csv`` and the manifest counts use.
"""

from __future__ import annotations

import math
import os
import warnings
import zlib
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facecl.align.walk import ScanRow, TreeWalk
from facecl.columns import LazySequence, StringColumn
from facecl.errors import InputError

# Why an image gave no crop (faces.csv ``reason``; manifest ``counts.skipped``).
SKIP_REASONS = {
    "missing": "file not found",
    "read_error": "the file could not be read (permissions, I/O error)",
    "empty_file": "zero-byte file",
    "not_an_image": "not an image file",
    "unsupported_format": "an image format that cannot be decoded here",
    "truncated": "the image data is truncated",
    "corrupt": "the image data is corrupt",
    "too_large": "more pixels than max_pixels",
    "too_small": "smaller than the minimum face size",
    "no_face": "no face detected",
    "unsafe_name": "identity or file name would escape the output directory",
    "no_identity": "file outside any identity folder",
    "link_loop": "a folder reached again through a link (listed once)",
}

# Magic numbers of image formats Pillow does not decode: "unsupported", not "not an image".
_OTHER_IMAGE_MAGIC: list[tuple[int, bytes, str]] = [
    (4, b"ftypheic", "HEIC"),
    (4, b"ftypheix", "HEIC"),
    (4, b"ftypmif1", "HEIF"),
    (4, b"ftypavif", "AVIF"),
    (0, b"\xff\x0a", "JPEG XL"),
    (0, b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
    (0, b"8BPS", "PSD"),
    (0, b"<svg", "SVG"),
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
    (0, b"\x89PNG", "PNG"),
    (0, b"\xff\xd8\xff", "JPEG"),
    (0, b"GIF8", "GIF"),
    (0, b"RIFF", "RIFF/WebP"),
    (0, b"BM", "BMP"),
]


@dataclass(frozen=True)
class Decoded:
    """One decoded image, or the reason it could not be decoded."""

    image: np.ndarray | None  # (h, w, 3) uint8 RGB, upright; None when not decoded
    reason: str  # "" when decoded, else a SKIP_REASONS key
    detail: str  # human-readable explanation
    width: int = 0  # original (upright) size; 0 when unknown
    height: int = 0
    notes: tuple[str, ...] = ()  # what was converted: exif_rotated, cmyk, 16bit, rgba, ...

    @property
    def scale(self) -> tuple[float, float]:
        """Original pixels per decoded pixel (x, y): 1 unless decoded at reduced size."""
        if self.image is None or not self.width:
            return 1.0, 1.0
        return self.width / self.image.shape[1], self.height / self.image.shape[0]


def _fail(reason: str, detail: str, w: int = 0, h: int = 0) -> Decoded:
    return Decoded(None, reason, detail, w, h)


def decode_image(path: str | os.PathLike, max_pixels: int = 100_000_000) -> Decoded:
    """Decode any file to RGB uint8, or say why not. Never raises for bad data."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    head = _read_head(path)
    if isinstance(head, Decoded):
        return head
    notes: list[str] = []
    dims = [0, 0]  # upright (width, height), known once the header has been read
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DecompressionBombWarning, EXIF warnings
            arr = _decode_pil(path, max_pixels, notes, dims)
    except UnidentifiedImageError:
        kind = _sniff_image_kind(head)
        if kind:
            return _fail("unsupported_format", f"{kind} data that Pillow cannot decode")
        return _fail("not_an_image", "not a recognised image format")
    except Image.DecompressionBombError as e:
        return _fail("too_large", str(e), *dims)
    except MemoryError:
        return _fail("too_large", "out of memory while decoding", *dims)
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError) as e:
        return _decode_error(e, *dims)
    if isinstance(arr, Decoded):
        return arr
    damaged = _check_png(path, head)  # Pillow decoded it: are the pixels the ones written?
    if damaged is not None:
        return damaged
    w, h = dims
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        return _fail("corrupt", "image with zero width or height", w, h)
    return Decoded(arr, "", "", w or arr.shape[1], h or arr.shape[0], tuple(notes))


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_problem(data: bytes) -> str:
    """Why PNG bytes are damaged ("" when every chunk's CRC matches up to IEND): decoders
    do not check IDAT CRCs, so a flipped byte would decode to garbage pixels."""
    pos, n = len(PNG_MAGIC), len(data)
    while pos + 12 <= n:
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        end = pos + 8 + length
        if end + 4 > n:
            return f"PNG chunk {kind.decode('latin-1')!r} is truncated"
        if zlib.crc32(data[pos + 4 : end]) != int.from_bytes(data[end : end + 4], "big"):
            return f"PNG chunk {kind.decode('latin-1')!r} fails its CRC check"
        if kind == b"IEND":
            return ""
        pos = end + 4
    return "PNG data ends before its IEND chunk"


def _check_png(path: Path, head: bytes) -> Decoded | None:
    """A ``corrupt``/``truncated`` failure for a PNG whose chunk CRCs do not match."""
    if not head.startswith(PNG_MAGIC):
        return None
    try:
        problem = png_problem(path.read_bytes())
    except OSError as e:
        return _fail("read_error", f"{type(e).__name__}: {e.strerror or e}")
    if not problem:
        return None
    return _fail("truncated" if "truncated" in problem or "ends" in problem else "corrupt", problem)


def _read_head(path: Path) -> bytes | Decoded:
    """The first 32 bytes of a non-empty regular file, or why it cannot be decoded."""
    try:
        size = path.stat().st_size
        if not path.is_file():
            return _fail("read_error", "not a regular file")
        with open(path, "rb") as f:
            head = f.read(32)
    except FileNotFoundError:
        return _fail("missing", f"no such file: {path}")
    except OSError as e:
        return _fail("read_error", f"{type(e).__name__}: {e.strerror or e}")
    if size == 0:
        return _fail("empty_file", "zero-byte file")
    return head


def _decode_pil(
    path: Path, max_pixels: int, notes: list[str], dims: list[int]
) -> np.ndarray | Decoded:
    """Pillow's decode, upright, as RGB uint8 (or too large). Sets ``dims`` to the upright
    (width, height) as soon as it is known and appends what it converted to ``notes``;
    Pillow's exceptions propagate (``decode_image`` names them)."""
    from PIL import Image, ImageOps

    old_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # we apply our own limit below
    try:
        im: Image.Image = Image.open(path)
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit
    with im:
        w, h = im.size
        orient = _exif_orientation(im)
        if orient in (5, 6, 7, 8):
            w, h = h, w
        dims[:] = [w, h]
        if w * h > max_pixels:
            too_large = _reduce(im, w, h, max_pixels)
            if too_large is not None:
                return too_large
            notes.append("reduced")
        if getattr(im, "n_frames", 1) > 1:
            notes.append("multi_frame")
        im.load()
        if orient not in (None, 1):
            try:
                im = ImageOps.exif_transpose(im)
                notes.append("exif_rotated")
            except Exception:  # a broken EXIF block must not lose the image
                notes.append("bad_exif")
                if orient in (5, 6, 7, 8):
                    dims[:] = [h, w]
        return _to_rgb(im, notes)


def _reduce(im: Any, w: int, h: int, max_pixels: int) -> Decoded | None:
    """Set a JPEG's draft mode so that it decodes within ``max_pixels``; the reason it
    cannot be (not a JPEG, or too large even at 1/8 scale) otherwise."""
    if im.format != "JPEG":
        return _fail("too_large", f"{w}x{h} = {w * h:,} px > max_pixels {max_pixels:,}", w, h)
    r = math.sqrt(max_pixels / (w * h))
    im.draft(im.mode if im.mode in ("RGB", "L") else None, _draft_size(im, r))
    if im.size[0] * im.size[1] > max_pixels:
        return _fail("too_large", f"{w}x{h} = {w * h:,} px > max_pixels even at 1/8 scale", w, h)
    return None


def _decode_error(e: BaseException, w: int, h: int) -> Decoded:
    """A Pillow decode error as a reason code: truncated, unsupported or corrupt."""
    msg = str(e) or type(e).__name__
    low = msg.lower()
    if "truncated" in low or isinstance(e, EOFError) or "premature end" in low:
        return _fail("truncated", msg, w, h)
    if "unsupported" in low or "not supported" in low or "decoder" in low:
        return _fail("unsupported_format", msg, w, h)
    return _fail("corrupt", msg, w, h)


def _exif_orientation(im: Any) -> int | None:
    try:
        return im.getexif().get(0x0112)
    except Exception:
        return None


def _draft_size(im: Any, r: float) -> tuple[int, int]:
    """The size to ask ``Image.draft`` for: JPEG decodes at 1/2, 1/4 or 1/8 scale, the
    smallest reduction that brings the linear scale to ``r`` or below."""
    k = min(3, max(0, math.ceil(math.log2(1.0 / r))))
    return max(1, -(-im.size[0] // 2**k)), max(1, -(-im.size[1] // 2**k))


def _to_rgb(im: Any, notes: list[str]) -> np.ndarray:
    """Any Pillow mode -> (h, w, 3) uint8 RGB."""

    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im)
        if mode == "F":
            a = a.astype(np.float64)
            a = a * 255.0 if np.nanmax(a) <= 1.0 else a
            notes.append("float")
        elif mode != "I" or a.max() > 255:
            a = a.astype(np.float64) / 257.0
            notes.append("16bit")
        g = np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if mode == "P" or mode == "PA":
        im = im.convert("RGBA")
        notes.append("palette")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "La", "RGBa"):
        notes.append("alpha")
        rgba = im.convert("RGBA")
        a = np.asarray(rgba).astype(np.float32)
        rgb = a[..., :3] * (a[..., 3:4] / 255.0)  # composite over black
        return np.ascontiguousarray(rgb.round().astype(np.uint8))
    if mode == "CMYK":
        notes.append("cmyk")
    elif mode in ("L", "1"):
        notes.append("grayscale")
    if mode != "RGB":
        im = im.convert("RGB")
    out = np.asarray(im)
    if out.dtype != np.uint8 or out.ndim != 3:
        out = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(out)


def _sniff_image_kind(head: bytes) -> str:
    for off, magic, name in _OTHER_IMAGE_MAGIC:
        if head[off : off + len(magic)] == magic:
            return name
    if head.lstrip()[:5] in (b"<?xml", b"<svg ") and b"svg" in head:
        return "SVG"
    return ""


# --------------------------------------------------------------------------- listings


@dataclass(frozen=True)
class Item:
    """One input image of the listing, in its global order."""

    index: int
    source: str  # as given in the list file, or relative to the tree root (posix)
    path: Path  # what is read
    identity: str
    base: str  # output path without suffix, relative to aligned/ ("" when unsafe)
    problem: str = ""  # a SKIP_REASONS key known before decoding (unsafe_name, no_identity)
    detail: str = ""


def safe_component(name: str) -> bool:
    """True when ``name`` is one harmless path component (no separators, not . or ..)."""
    return bool(
        name
        and name == printable(name)  # UTF-8 (no undecodable bytes)
        and name not in (".", "..")
        and "/" not in name
        and "\\" not in name
        and not any(ord(c) < 32 or ord(c) == 127 for c in name)
        and len(name.encode("utf-8", "surrogateescape")) <= 255
    )


@dataclass(frozen=True)
class Listing:
    """What align lists: the items, the listing notes (``ignored_hidden``) and, for a tree,
    its :func:`facecl.artifacts.tree_sha256`, computed by the same walk."""

    items: Sequence[Item]
    notes: dict[str, int]
    tree_sha256: str = ""


def list_source(source: Path) -> tuple[Sequence[Item], dict[str, int]]:
    """Items of a tree ``ROOT/<identity>/<image>`` or of a list file; plus listing notes."""
    listing = open_listing(source)
    return listing.items, listing.notes


def open_listing(source: Path) -> Listing:
    """:func:`list_source` with the tree's content hash (one walk of the tree)."""
    source = Path(source)
    if source.is_dir():
        walk = TreeWalk(source)
        items = TreeItems.of(source, walk)
        return Listing(items, dict(walk.notes), walk.sha256)
    if source.is_file():
        listed, notes = list_file(source)
        return Listing(listed, notes)
    raise InputError(
        f"input not found: {source}", "pass a folder ROOT/<identity>/<image> or a list file"
    )


def list_tree(root: Path) -> tuple[Sequence[Item], dict[str, int]]:
    """Every file below ``root``: identity = first folder level. Folder links are followed
    (a folder reached twice is one ``link_loop`` row); a folder that cannot be listed is one
    ``read_error`` row; a name that is not UTF-8 is an ``unsafe_name`` row (shown escaped);
    hidden entries are ignored and counted, one per file (``ignored_hidden``). Files directly
    in ``root`` are listed as ``no_identity``."""
    listing = open_listing(Path(root))
    return listing.items, listing.notes


def _tree_item(source: str, path: Path, problem: str, detail: str) -> tuple[str, ...] | None:
    """(shown source, shown identity, problem, detail) of a listing row that is not an
    image to align; None for one that is."""
    parts = source.split("/")
    identity = parts[0] if len(parts) > 1 else ""
    shown, shown_id = printable(source), printable(identity)
    if problem:
        return shown, shown_id, problem, detail
    if len(parts) == 1:
        return shown, "", "no_identity", "file directly in the root"
    bad = next((p for p in parts if not safe_component(p)), None)
    if bad is not None:
        return shown, shown_id, "unsafe_name", f"unsafe name {printable(bad)!r}"
    return None


def natural_base(source: str) -> str:
    """The output name of an image of a tree (``<identity>/<sub>/<stem>``) before names
    that collide are made unique."""
    head, _, name = source.rpartition("/")
    return f"{head}/{Path(name).stem}" if head else Path(name).stem


class TreeItems(LazySequence[Item]):
    """The items of a tree listing as columns: the relative paths (a
    :class:`~facecl.columns.StringColumn`) and a 64-bit key per image (the hash of its
    output name, case folded) to find the names that collide; ~40 B an image. Each
    :class:`Item` is built when asked for. The rows that are not images to align, and the
    output names made unique (``_finish``'s rules), are kept aside (few)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._sources = StringColumn()
        self._keys = array("q")
        self._problems: dict[int, tuple[Path, tuple[str, ...]]] = {}
        self._bases: dict[int, str] = {}

    @classmethod
    def of(cls, root: Path, rows: Iterable[ScanRow]) -> TreeItems:
        items = cls(root)
        for source, path, problem, detail in rows:
            items._add(source, path, problem, detail)
        items._unique_names()
        return items

    def _add(self, source: str, path: Path, problem: str, detail: str) -> None:
        i = len(self._sources)
        self._sources.append(source)
        bad = _tree_item(source, path, problem, detail)
        if bad is not None:
            self._problems[i] = (path, bad)
            self._keys.append(0)
        else:
            self._keys.append(hash(natural_base(source).casefold()))

    def __len__(self) -> int:
        return len(self._sources)

    def _source(self, i: int) -> str:
        return self._sources[i]

    def _item(self, i: int) -> Item:
        if i in self._problems:
            path, (shown, identity, problem, detail) = self._problems[i]
            return Item(i, shown, path, identity, "", problem, detail)
        source = self._source(i)
        base = self._bases.get(i) or natural_base(source)
        return Item(i, source, self.root / source, source.split("/", 1)[0], base)

    def _unique_names(self) -> None:
        """Make output names unique as :func:`_finish` does, looking only at the images
        whose names collide (case folded): found by their keys, confirmed by their names."""
        import heapq

        keys = np.frombuffer(self._keys, dtype=np.int64) if len(self) else np.zeros(0, np.int64)
        order = np.argsort(keys, kind="stable")  # 8 B an image, and the sorted keys 8 B
        sk = keys[order]
        skip = self._problems  # their key 0 is no name

        def holders(cf: str) -> list[int]:
            h = hash(cf)
            lo, hi = np.searchsorted(sk, h, "left"), np.searchsorted(sk, h, "right")
            cands = sorted(int(j) for j in order[lo:hi] if int(j) not in skip)
            return [j for j in cands if natural_base(self._source(j)).casefold() == cf]

        eq = np.flatnonzero(sk[1:] == sk[:-1])
        shared = {int(order[e]) for e in eq} | {int(order[e + 1]) for e in eq}
        heap = sorted(shared - skip.keys())
        used: set[str] = set()  # the names given to the images looked at, case folded
        done: set[int] = set()
        while heap:
            i = heapq.heappop(heap)
            if i in done:
                continue
            done.add(i)
            source = self._source(i)
            base = natural_base(source)
            if len(holders(base.casefold())) > 1:
                base += Path(source).suffix
            j, cand = 1, base
            while cand.casefold() in used or any(
                k < i and k not in done for k in holders(cand.casefold())
            ):
                cand = f"{base}.{j}"
                j += 1
            used.add(cand.casefold())
            if cand != natural_base(source):
                self._bases[i] = cand
            for k in holders(cand.casefold()):
                if k > i and k not in done:
                    heapq.heappush(heap, k)


def printable(name: str) -> str:
    """``name`` as UTF-8-safe text: bytes that were not UTF-8 (``surrogateescape``) are
    written ``\\xNN``, so a listing never fails to be written or hashed."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def scan_tree(root: Path) -> tuple[list[ScanRow], Counter[str]]:
    """Every non-hidden file below ``root`` (sorted by relative path) following folder links,
    with the problems found while listing: ``read_error`` (a folder that cannot be listed),
    ``link_loop`` (a folder already listed, reached again through a link). Hidden files,
    and the files inside hidden folders, are counted in ``ignored_hidden``. One streaming
    walk (:class:`facecl.align.walk.TreeWalk`)."""
    walk = TreeWalk(Path(root))
    rows = list(walk)
    return rows, walk.notes


def list_file(listfile: Path) -> tuple[list[Item], dict[str, int]]:
    """Lines ``<path> <identity>`` (or just ``<path>``: identity = its folder's name).

    Paths may contain spaces (the identity is the last field); relative paths are relative
    to the list file's folder; ``#`` starts a comment line.
    """
    base_dir = listfile.parent
    items = []
    try:
        text = listfile.read_text(encoding="utf-8-sig", errors="surrogateescape")
    except OSError as e:
        raise InputError(f"cannot read list file {listfile}: {e}", "check the path") from None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.rsplit(None, 1)
        whole = Path(line) if os.path.isabs(line) else base_dir / line
        if len(fields) == 2 and not _has_image_suffix(fields[1]) and not whole.is_file():
            src, identity = fields
        else:
            src, identity = line, Path(line).parent.name
        path = Path(src) if os.path.isabs(src) else base_dir / src
        name = Path(src).name
        stem = Path(name).stem
        if not safe_component(identity):
            shown = printable(identity)
            items.append(
                (printable(src), path, shown, "", "unsafe_name", f"unsafe identity {shown!r}")
            )
        elif not safe_component(stem) or not safe_component(name):
            shown = printable(name)
            items.append(
                (printable(src), path, printable(identity), "", "unsafe_name",
                 f"unsafe file name {shown!r}")
            )  # fmt: skip
        else:
            items.append((src, path, identity, stem, "", ""))
    return _finish(items), {}


def _has_image_suffix(token: str) -> bool:
    return Path(token).suffix.lower() in {
        ".jpg",
        ".jpeg",
        ".png",
        ".bmp",
        ".gif",
        ".tif",
        ".tiff",
        ".webp",
    }


def _finish(rows: list[tuple[str, Path, str, str, str, str]]) -> list[Item]:
    """Number the items and make output names unique: sources whose ``<id>/<stem>``
    collide get their suffix kept (``a.jpg.png``), then a counter if still equal."""
    planned: Counter[str] = Counter()
    for _, _, identity, stem, problem, _ in rows:
        if not problem:
            planned[f"{identity}/{stem}".casefold()] += 1
    used: set[str] = set()
    items = []
    for i, (source, path, identity, stem, problem, detail) in enumerate(rows):
        base = ""
        if not problem:
            base = f"{identity}/{stem}"
            if planned[base.casefold()] > 1:
                base = f"{identity}/{stem}{Path(source).suffix}"
            j, cand = 1, base
            while cand.casefold() in used:
                cand = f"{base}.{j}"
                j += 1
            base = cand
            used.add(base.casefold())
        items.append(Item(i, source, path, identity, base, problem, detail))
    return items


# --------------------------------------------------------------------------- landmarks


class LandmarkTable:
    """Provided landmarks by image: ``<path> x1 y1 ... x5 y5`` per line, or a CSV with a
    ``source`` column and ``lm_x1 .. lm_y5`` (e.g. another run's faces.csv).

    Coordinates are pixels of the upright image (after EXIF rotation). An image is looked up
    by its ``source`` string, then ``identity/filename``, then a unique file name.
    """

    def __init__(self, entries: dict[str, np.ndarray]):
        self.entries = entries
        self._by_name: dict[str, np.ndarray | None] = {}
        for key, lm in entries.items():
            parts = key.replace("\\", "/").split("/")
            for k in {parts[-1], "/".join(parts[-2:])}:
                self._by_name[k] = None if k in self._by_name else lm

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, item: Item) -> np.ndarray | None:
        if item.source in self.entries:
            return self.entries[item.source]
        name = Path(item.source).name
        for key in (f"{item.identity}/{name}", name):
            lm = self._by_name.get(key)
            if lm is not None:
                return lm
        return None

    @classmethod
    def read(cls, path: Path) -> LandmarkTable:
        import csv

        from facecl.align.artifact import LM_COLUMNS

        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"cannot read landmarks file {path}: {e}", "check the path") from None
        entries: dict[str, np.ndarray] = {}
        first = text.splitlines()[0] if text.strip() else ""
        cols = LM_COLUMNS
        if "lm_x1" in first and "source" in first:
            for row in csv.DictReader(text.splitlines()):
                try:
                    vals = [float(row[c]) for c in cols]
                except (KeyError, TypeError, ValueError):
                    continue  # rows without landmarks (skipped images)
                entries[row["source"]] = np.array(vals, np.float32).reshape(5, 2)
            return cls(entries)
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            fields = line.rsplit(None, 10)
            try:
                if len(fields) != 11:
                    raise ValueError
                vals = [float(v) for v in fields[1:]]
            except ValueError:
                raise InputError(
                    f"{path}:{n}: expected '<path> x1 y1 x2 y2 ... x5 y5'",
                    "one image per line: its path, then 10 numbers",
                ) from None
            entries[fields[0]] = np.array(vals, np.float32).reshape(5, 2)
        return cls(entries)
