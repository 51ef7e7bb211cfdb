"""One streaming walk of an input tree: the listing rows, the hidden-file count and the
tree's content hash, in a single pass.

:func:`facecl.align.io.scan_tree` is the listing align, embed and verify share; the hash is
:func:`facecl.artifacts.tree_sha256`, the tree's identity in a manifest. Both used
to walk the tree (twice before align's up-to-date check). :class:`TreeWalk` yields the rows
in listing order (sorted by relative path) while it feeds the same hash, holding one
folder's entries per level of the walk, never the whole tree.

Listing order: siblings sorted by name, a folder that is descended keyed ``name/``, so the
depth-first walk meets the rows in the order of their relative paths as strings. A folder
is listed when the walk reaches its own key (``name``): if it cannot be listed, its
``read_error`` row is at its place among the files.

The hash's lines must come in bytes order (:class:`facecl.artifacts.ListingHash` checks);
they do for UTF-8 names without control characters. A tree where they do not (a name that
is not UTF-8, a control character), or where a folder is reached twice other than through a
link to one of its ancestors (os.walk's choice of which path lists it depends on the file
system's order), is hashed again by ``tree_sha256``: the same hash, a second walk.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from facecl.artifacts import ListingHash, tree_sha256
from facecl.hashcache import HashCache

ScanRow = tuple[str, Path, str, str]  # posix path below the root, path, problem, detail

ROWS, COUNT, HASH = "rows", "count", "hash"
"""What a folder's files are: listing rows; hidden files counted in ``ignored_hidden``
(a hidden folder's own files); only hashed (behind a link inside a hidden folder)."""


@dataclass
class _Entry:
    key: str  # the sort key among its siblings
    rel: str
    path: str
    kind: str  # "file", "probe" (list the folder), "descend", "loop"
    mode: str  # the mode of the folder this entry opens (probe/descend)
    entry: os.DirEntry[str] | None = None
    real: str = ""
    listing: list[_Entry] | None = None  # a probe's, once listed
    probe: _Entry | None = None  # a descend's probe


@dataclass
class _Frame:
    entries: Iterator[_Entry]
    real: str


@dataclass
class TreeWalk:
    """Iterate once for the rows; then ``notes`` (``ignored_hidden``) and ``sha256`` (the
    tree's :func:`facecl.artifacts.tree_sha256`) are set."""

    root: Path
    notes: Counter[str] = field(default_factory=Counter)
    _hash: ListingHash = field(default_factory=ListingHash)
    _cache: HashCache = field(default_factory=HashCache)
    _seen_rows: set[str] = field(default_factory=set)  # scan_tree's: folders listed as rows
    _seen_all: set[str] = field(default_factory=set)  # every folder walked (the hash's)
    _ancestors: list[str] = field(default_factory=list)
    _exact: bool = True  # False: the hash is recomputed by tree_sha256
    _done: bool = False

    def __iter__(self) -> Iterator[ScanRow]:
        root = Path(self.root)
        real = os.path.realpath(root)
        self._seen_rows.add(real)
        self._seen_all.add(real)
        top = _Entry("", "", str(root), "probe", ROWS, real=real)
        yield from self._probe(top)
        try:
            if top.listing is not None:
                yield from self._walk(top)
        finally:
            self._cache.close()
        self._done = True

    @property
    def sha256(self) -> str:
        if not self._done:
            raise RuntimeError("TreeWalk.sha256 read before the walk finished")
        if not self._exact or not self._hash.ordered:
            return tree_sha256(Path(self.root))
        return self._hash.hexdigest()

    def _walk(self, top: _Entry) -> Iterator[ScanRow]:
        assert top.listing is not None
        stack = [_Frame(iter(top.listing), top.real)]
        self._ancestors.append(top.real)
        while stack:
            ent = next(stack[-1].entries, None)
            if ent is None:
                stack.pop()
                self._ancestors.pop()
                continue
            if ent.kind == "probe":
                yield from self._probe(ent)
            elif ent.kind == "descend":
                assert ent.probe is not None
                listing, ent.probe.listing = ent.probe.listing, None
                if listing is not None:
                    stack.append(_Frame(iter(listing), ent.real))
                    self._ancestors.append(ent.real)
            elif ent.kind == "loop":
                yield ent.rel, Path(ent.path), "link_loop", f"a folder already listed: {ent.real}"
            else:
                yield from self._file(ent)

    def _file(self, ent: _Entry) -> Iterator[ScanRow]:
        assert ent.entry is not None
        try:
            self._hash.add(ent.rel, self._cache.digest(ent.path, ent.entry.stat()))
        except OSError:
            self._hash.add(ent.rel)
        if ent.mode == ROWS:
            yield ent.rel, Path(ent.path), "", ""
        elif ent.mode == COUNT:
            self.notes["ignored_hidden"] += 1

    def _probe(self, folder: _Entry) -> Iterator[ScanRow]:
        """List ``folder`` (its descend entry then walks the listing), or its error row."""
        try:
            folder.listing = self._list(folder)
        except OSError as err:
            self._hash.add_unlistable(folder.rel or ".")
            if folder.mode == ROWS:
                detail = f"cannot list the folder: {err.strerror or type(err).__name__}"
                yield folder.rel or ".", Path(folder.path), "read_error", detail
            elif folder.mode == COUNT:
                self.notes["ignored_hidden"] += 1

    def _list(self, folder: _Entry) -> list[_Entry]:
        """The entries of ``folder``, in walk order (see the module notes)."""
        with os.scandir(folder.path) as it:
            # real folders before links, so a link to a folder of the tree is the duplicate
            raw = sorted(it, key=lambda e: (e.is_symlink(), e.name))
        out: list[_Entry] = []
        for e in raw:
            rel = f"{folder.rel}/{e.name}" if folder.rel else e.name
            mode = folder.mode
            if mode == ROWS and e.name.startswith("."):
                mode = COUNT if _is_dir(e) and not e.is_symlink() else HASH
                if mode == HASH:  # a hidden file or link: one count (scan_tree's rule)
                    self.notes["ignored_hidden"] += 1
            elif mode == COUNT and e.is_symlink() and _is_dir(e):
                mode = HASH  # os.walk without links: neither counted nor walked
            if not _is_dir(e):
                out.append(_Entry(e.name, rel, e.path, "file", mode, e))
                continue
            out += self._folder(e, rel, mode)
        out.sort(key=lambda x: x.key)
        return out

    def _folder(self, e: os.DirEntry[str], rel: str, mode: str) -> list[_Entry]:
        """A sub-folder's entries: probe + descend, or a ``link_loop`` row (or nothing, for
        a duplicate that is only hashed)."""
        real = os.path.realpath(e.path)
        if real in self._seen_all and real not in self._ancestors:
            self._exact = False  # which path os.walk lists it under is the FS's order
        if mode == ROWS and real in self._seen_rows:
            return [_Entry(e.name, rel, e.path, "loop", mode, real=real)]
        if mode != ROWS and real in self._seen_all:
            return []
        if mode == ROWS:
            self._seen_rows.add(real)
        elif real in self._seen_rows:
            self._exact = False
        self._seen_all.add(real)
        probe = _Entry(e.name, rel, e.path, "probe", mode, real=real)
        return [probe, _Entry(e.name + "/", rel, e.path, "descend", mode, real=real, probe=probe)]


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()  # follows links
    except OSError:
        return False
