"""The one home of `facecl pack` defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from facecl.errors import ConfigError

Compression = Literal["none", "lzf", "gzip"]
COMPRESSIONS: tuple[str, ...] = get_args(Compression)


@dataclass(frozen=True)
class PackConfig:
    """How aligned crops become HDF5 shards. Stored as the manifest's ``config``."""

    shard_size: int = 10_000
    """Images per shard file (10k 112x96 crops are about 320 MB uncompressed)."""

    compression: Compression = "none"
    """HDF5 filter per image chunk: ``none``, ``lzf`` (fast) or ``gzip``; all lossless."""

    gzip_level: int = 4
    """gzip level 1-9, used only with ``compression="gzip"``."""

    exclude: tuple[str, ...] = ()
    """Identity lists to remove (repeatable): built-in names (``lfw``) or files of names, one
    per line (LFW people/pairs formats work); stored as resolved paths."""

    min_images: int = 1
    """Drop identities with fewer images than this (after exclusion)."""

    val_fraction: float = 0.0
    """Share of each identity's images held out for closed-set validation (split by image;
    an identity always keeps at least one training image)."""

    seed: int = 0
    """Seed of the validation split."""

    prealigned: bool = False
    """The input is one folder of crops that are already aligned, ROOT/<identity>/<image>
    (all 112x96 or all 112x112): pack them without 'facecl align'."""

    names: str = ""
    """RecordIO input only: a file naming its class ids, one ``ID<TAB>NAME`` line per class,
    so that ``exclude`` can remove identities by name (without it the overlap filter cannot
    run); stored as a resolved path."""

    verify_inputs: bool = field(default=False, metadata={"runtime": True})
    """Hash the bytes of every file of a folder input (``--prealigned`` crops, a RecordIO
    folder; sha256, streamed: reads it all) to decide whether OUT is up to date, instead of
    trusting the hash cache while sizes and mtimes are unchanged; recorded in the manifest,
    never fingerprinted."""

    def __post_init__(self) -> None:
        if self.shard_size < 1:
            raise ConfigError(f"shard_size must be >= 1, got {self.shard_size}", "e.g. 10000")
        if self.compression not in COMPRESSIONS:
            raise ConfigError(
                f"unknown compression {self.compression!r}", f"use one of {', '.join(COMPRESSIONS)}"
            )
        if not 1 <= self.gzip_level <= 9:
            raise ConfigError(f"gzip_level must be 1-9, got {self.gzip_level}", "e.g. 4")
        if self.min_images < 1:
            raise ConfigError(f"min_images must be >= 1, got {self.min_images}", "e.g. 2")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(
                f"val_fraction must be in [0, 1), got {self.val_fraction}", "e.g. 0.05"
            )
