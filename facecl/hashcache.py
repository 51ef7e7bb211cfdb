"""Content hashes of input files behind a stat cache, as DVC keeps them.

A tree input's identity in a manifest is the sha256 of its files' bytes (see
:func:`facecl.artifacts.tree_sha256`), so a copy, a re-mount or a checkout that gives the
files new mtimes is still the same input and its outputs stay up to date. Reading every byte
on every run would cost a full read of the tree; instead each file's hash is kept in a small
SQLite table keyed by its absolute path, size, mtime and inode, and read again only when one
of those changes. What the cache cannot see, an edit that restores size and mtime, is what
``--verify-inputs`` is for: it reads every byte, whatever the cache says.

The cache lives in ``$FACECL_CACHE_DIR`` (default ``$XDG_CACHE_HOME/facecl``, else
``~/.cache/facecl``). It is only an accelerator: when it cannot be opened or written (a
read-only home, a full disk, a corrupt file) facecl says so once on stderr and hashes
without it. A hash is cached only for a file last modified more than 2 s ago, so a file
rewritten within one timestamp tick is read again (git's "racy" rule). The cache is the
user's own file, trusted as far as ``--verify-inputs`` is not asked for.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from facecl.artifacts import sha256_file

CACHE_ENV = "FACECL_CACHE_DIR"
CACHE_FILE = "hashes.sqlite"
_FLUSH_EVERY = 2000
RACY_NS = 2_000_000_000
"""A hash is cached only for a file whose mtime is older than this (2 s)."""


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "facecl"


class HashCache:
    """``digest(path, stat)``: the file's sha256 (hex, as bytes), from the cache when its
    path, size, mtime and inode are the ones recorded, else read and recorded. Use it as a
    context manager (or call ``close``) so that new hashes are written."""

    _warned = False

    def __init__(self, directory: Path | None = None) -> None:
        self.path = (directory or cache_dir()) / CACHE_FILE
        self._db: sqlite3.Connection | None = None
        self._opened = False
        self._pending: list[tuple[bytes, int, int, int, str]] = []

    def __enter__(self) -> HashCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def digest(self, path: str, st: os.stat_result) -> bytes:
        key = os.fsencode(os.path.abspath(path))  # names need not be UTF-8
        db = self._connect()
        if db is not None:
            try:
                row = db.execute(
                    "SELECT sha256 FROM hashes WHERE path = ? AND size = ? AND mtime_ns = ? "
                    "AND inode = ?",
                    (key, st.st_size, st.st_mtime_ns, st.st_ino),
                ).fetchone()
            except sqlite3.Error as e:
                self._disable(e)
                row = None
            if row is not None:
                return str(row[0]).encode()
        sha = sha256_file(path)  # OSError: the caller records the file as unreadable
        # A file written within the file system's timestamp granularity of now may change
        # again without a new mtime (git's "racy" entries): hash it again next time.
        if self._db is not None and time.time_ns() - st.st_mtime_ns > RACY_NS:
            self._pending.append((key, st.st_size, st.st_mtime_ns, st.st_ino, sha))
            if len(self._pending) >= _FLUSH_EVERY:
                self.flush()
        return sha.encode()

    def flush(self) -> None:
        """Write the new hashes (ending the read transaction first: a stale WAL snapshot
        cannot become a write), then open the next read transaction."""
        db = self._db
        if db is None or not self._pending:
            self._pending.clear()
            return
        try:
            db.execute("COMMIT")
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?, ?)", self._pending)
            db.execute("COMMIT")
            db.execute("BEGIN")
        except sqlite3.Error as e:
            self._disable(e)
        self._pending.clear()

    def close(self) -> None:
        self.flush()
        if self._db is not None:
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error:
                pass
            self._db.close()
            self._db = None

    def _connect(self) -> sqlite3.Connection | None:
        """The cache's connection, in one read transaction between flushes (a lookup then
        costs no lock round trip); WAL, so that readers and a writer do not block each other
        (a file system without WAL support keeps the default journal)."""
        if self._opened:
            return self._db
        self._opened = True
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            try:
                db.execute("PRAGMA journal_mode=WAL")
            except sqlite3.OperationalError:
                pass
            db.execute(
                "CREATE TABLE IF NOT EXISTS hashes (path BLOB PRIMARY KEY, size INTEGER, "
                "mtime_ns INTEGER, inode INTEGER, sha256 TEXT)"
            )
            db.execute("BEGIN")
            self._db = db
        except (OSError, sqlite3.Error) as e:
            self._disable(e)
        return self._db

    def _disable(self, err: Exception) -> None:
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
        self._db = None
        if not HashCache._warned:
            HashCache._warned = True
            from facecl.console import console

            console.print(
                f"[yellow]warning:[/] hash cache {self.path} is unusable ({err}); hashing "
                f"every input file without it (set {CACHE_ENV} to a writable folder)"
            )
