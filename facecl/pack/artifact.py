"""The pack artifact's layout: the one home of its file names, and the reader and writers of
its class map and skip listing. Consumers (train, embed, test fixtures) import these.

Layout (``facecl.pack/1``)::

    OUT/manifest.json           counts; extra: shards, image_size [H, W], input_spec (the
                                crop geometry and normalisation, InputSpec.to_dict)
    OUT/classes.json            label -> identity, with per-split image counts
    OUT/train/shard-NNNNN.h5    HDF5 shards (facecl.pack.shards)
    OUT/val/shard-NNNNN.h5
    OUT/skipped.csv             every align row not packed, with the reason
    OUT/class_hist.png          images per identity (long tail)
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from facecl.artifacts import Manifest
from facecl.errors import IntegrityError
from facecl.models.input_spec import InputSpec

CLASSES = "classes.json"
SKIPPED = "skipped.csv"
HISTOGRAM = "class_hist.png"
SPLITS = ("train", "val")
"""The split folders, in shard order."""

SKIPPED_COLUMNS = ("key", "identity", "reason", "detail")


def shard_name(index: int) -> str:
    """The file name of shard ``index`` of a split: ``shard-00000.h5``."""
    return f"shard-{index:05d}.h5"


def shard_path(split: str, index: int) -> str:
    """A shard's path relative to the pack: ``train/shard-00000.h5``."""
    return f"{split}/{shard_name(index)}"


@dataclass(frozen=True)
class PackClass:
    """One identity of a pack (one entry of ``classes.json``)."""

    name: str
    label: int
    images: int
    train: int
    val: int


def classes_doc(classes: Sequence[PackClass]) -> dict[str, object]:
    """The ``classes.json`` document of ``classes`` (in label order)."""
    return {
        "num_classes": len(classes),
        "classes": {
            c.name: {"label": c.label, "images": c.images, "train": c.train, "val": c.val}
            for c in classes
        },
    }


def write_classes(pack_dir: str | os.PathLike, classes: Sequence[PackClass]) -> None:
    """Write ``classes.json`` into ``pack_dir`` (atomically)."""
    from facecl.artifacts import atomic_write_json

    atomic_write_json(Path(pack_dir) / CLASSES, classes_doc(classes))


def read_classes(pack_dir: str | os.PathLike) -> list[PackClass]:
    """The classes of a pack in label order (label ``i`` at index ``i``).

    Raises ``IntegrityError`` for a missing or malformed ``classes.json``.
    """
    path = Path(pack_dir) / CLASSES
    hint = "the pack is damaged; rebuild it with 'facecl pack --force'"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        entries: Mapping[str, Mapping[str, int]] = doc["classes"]
        classes = sorted(
            (
                PackClass(
                    str(name),
                    int(e["label"]),
                    int(e.get("images", 0)),
                    int(e.get("train", 0)),
                    int(e.get("val", 0)),
                )
                for name, e in entries.items()
            ),
            key=lambda c: c.label,
        )
    except FileNotFoundError:
        raise IntegrityError(f"{path} is missing", hint) from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise IntegrityError(f"cannot read {path}: {type(e).__name__}: {e}", hint) from None
    if [c.label for c in classes] != list(range(len(classes))):
        raise IntegrityError(f"{path}: labels are not 0..{len(classes) - 1}", hint)
    return classes


def manifest_input_spec(manifest: Manifest) -> InputSpec:
    """The crop geometry a pack manifest records (``extra.input_spec``); for a pack written
    before it did, derived from ``extra.image_size`` (the align template of that size, if
    there is one)."""
    from facecl.align.transform import SIZES

    recorded = manifest.extra.get("input_spec")
    if recorded is not None:
        return InputSpec.from_dict(recorded)
    h, w = (int(v) for v in manifest.extra["image_size"])
    template = f"{h}x{w}"
    return InputSpec.for_template(template) if template in SIZES else InputSpec((h, w))


def read_input_spec(pack_dir: str | os.PathLike) -> InputSpec:
    """The crop geometry and normalisation of a pack's images (see :func:`manifest_input_spec`)."""
    from facecl.artifacts import read_manifest

    return manifest_input_spec(read_manifest(pack_dir, stage="pack"))


def write_skipped(path: str | os.PathLike, rows: Iterable[Mapping[str, str]]) -> None:
    """Write the ``skipped.csv`` listing (rows with :data:`SKIPPED_COLUMNS` keys)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        wr = csv.DictWriter(f, fieldnames=list(SKIPPED_COLUMNS))
        wr.writeheader()
        wr.writerows(rows)
