"""`run_pack`: align artifacts -> identity-filtered, split, checksummed HDF5 shards.

Order of work: read every align artifact's ``faces.csv`` -> drop rows without a crop ->
drop identities on exclusion lists -> drop identities below ``min_images`` -> labels by
sorted identity name -> per-identity seeded validation split -> a deterministic shard plan
-> write the shards (resuming finished ones) -> classes.json, skipped.csv, class_hist.png
and the manifest.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facecl.artifacts import (
    StageOutput,
    atomic_write_json,
    input_ref,
    read_manifest,
    sha256_file,
)
from facecl.errors import InputError
from facecl.pack.config import PackConfig
from facecl.pack.overlap import (
    BUILTIN_LISTS,
    NameList,
    filter_identities,
    load_name_list,
    normalization_collisions,
)
from facecl.pack.shards import ShardWriter, shard_name

FACES_CSV = "faces.csv"
REQUIRED_COLUMNS = ("source", "identity", "output", "status", "reason")
PROGRESS = "_pack_progress.json"
CLASSES = "classes.json"
SKIPPED = "skipped.csv"
HISTOGRAM = "class_hist.png"
SPLITS = ("train", "val")


@dataclass(frozen=True)
class Item:
    """One aligned crop to pack."""

    key: str  # "<identity>/<stem>", unique in the pack
    identity: str
    file: Path  # the crop PNG
    source: str  # the align stage's source of the crop


@dataclass
class PackResult:
    path: Path
    manifest: Any
    up_to_date: bool = False
    resumed_shards: int = 0
    summary: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- planning


def read_align_rows(
    artifact: Path,
) -> tuple[list[Item], list[dict[str, str]]]:
    """The packable crops of one align artifact and the rows it did not crop."""
    read_manifest(artifact, stage="align")
    csv_path = artifact / FACES_CSV
    if not csv_path.is_file():
        raise InputError(f"{csv_path} is missing", "the align artifact is damaged; re-run align")
    items: list[Item] = []
    skipped: list[dict[str, str]] = []
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(
                f"{csv_path} lacks column(s) {', '.join(missing)}",
                "pass an artifact written by 'facecl align'",
            )
        for row in reader:
            output = (row["output"] or "").strip()
            status = (row["status"] or "").strip()
            if not output or status == "skipped":
                reason = (row["reason"] or "").strip() or status or "no_crop"
                skipped.append(
                    {
                        "key": row["source"],
                        "identity": row["identity"],
                        "reason": f"align:{reason}",
                        "detail": str(artifact),
                    }
                )
                continue
            file = artifact / output
            rel = Path(output).with_suffix("")
            if rel.parts[0] == "aligned" and len(rel.parts) > 2:
                rel = Path(*rel.parts[1:])  # aligned/<identity>/<stem>.png -> <identity>/<stem>
            items.append(
                Item(
                    key=rel.as_posix(),
                    identity=row["identity"],
                    file=file,
                    source=row["source"],
                )
            )
    return items, skipped


def split_identity(keys: Sequence[str], identity: str, fraction: float, seed: int) -> set[str]:
    """The validation keys of one identity.

    ``n * fraction`` images, rounded down or up at random with the fractional part as the
    chance of rounding up (so the held-out share is ``fraction`` in expectation even when
    identities are small), and at most ``n - 1`` so every class keeps a training image. The
    generator is seeded by (seed, identity): an identity's split depends neither on the other
    identities nor on input order.
    """
    n = len(keys)
    if n < 2 or fraction <= 0:
        return set()
    digest = hashlib.sha256(f"{seed}\0{identity}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    n_val = min(int(np.floor(n * fraction + rng.random())), n - 1)
    order = rng.permutation(n)
    ordered = sorted(keys)
    return {ordered[i] for i in order[:n_val]}


@dataclass
class Plan:
    classes: list[str]  # label -> identity
    items: dict[str, list[tuple[Item, int]]]  # split -> [(item, label)] in shard order
    skipped: list[dict[str, str]]
    exclusions: list[dict[str, Any]]
    min_images: dict[str, Any]
    rows: int
    collisions: dict[str, list[str]]

    def shards(self, shard_size: int) -> list[tuple[str, int, list[tuple[Item, int]]]]:
        """[(split, index, items)] with at most ``shard_size`` items each."""
        out = []
        for split in SPLITS:
            items = self.items[split]
            for index, start in enumerate(range(0, len(items), shard_size)):
                out.append((split, index, items[start : start + shard_size]))
        return out


def make_plan(artifacts: Sequence[Path], config: PackConfig, lists: Sequence[NameList]) -> Plan:
    items: list[Item] = []
    skipped: list[dict[str, str]] = []
    rows = 0
    for art in artifacts:
        got, skip = read_align_rows(art)
        items += got
        skipped += skip
        rows += len(got) + len(skip)
    seen: dict[str, Item] = {}
    for it in items:
        if it.key in seen:
            raise InputError(
                f"image {it.key!r} appears twice ({seen[it.key].file} and {it.file})",
                "pass each align artifact once; artifacts must not overlap",
            )
        seen[it.key] = it

    by_id: dict[str, list[Item]] = defaultdict(list)
    for it in items:
        by_id[it.identity].append(it)

    overlap = filter_identities(sorted(by_id), lists)
    exclusions = []
    for nl in lists:
        removed = overlap.removed_by(nl.label)
        n_img = sum(len(by_id[i]) for i in removed)
        exclusions.append(
            {
                "list": nl.label,
                "path": str(nl.path),
                "names": nl.raw_count,
                "identities_removed": len(removed),
                "images_removed": n_img,
                "removed": removed,
            }
        )
        for ident in removed:
            skipped += [
                {"key": it.key, "identity": ident, "reason": "excluded", "detail": nl.label}
                for it in by_id[ident]
            ]

    kept, few = [], []
    for ident in overlap.kept:
        (kept if len(by_id[ident]) >= config.min_images else few).append(ident)
    for ident in few:
        skipped += [
            {
                "key": it.key,
                "identity": ident,
                "reason": "min_images",
                "detail": f"{len(by_id[ident])} < {config.min_images}",
            }
            for it in by_id[ident]
        ]
    min_images = {
        "k": config.min_images,
        "identities_removed": len(few),
        "images_removed": sum(len(by_id[i]) for i in few),
    }

    classes = sorted(kept)
    split_items: dict[str, list[tuple[Item, int]]] = {s: [] for s in SPLITS}
    for label, ident in enumerate(classes):
        group = sorted(by_id[ident], key=lambda it: it.key)
        val = split_identity([it.key for it in group], ident, config.val_fraction, config.seed)
        for it in group:
            split_items["val" if it.key in val else "train"].append((it, label))
    return Plan(
        classes=classes,
        items=split_items,
        skipped=skipped,
        exclusions=exclusions,
        min_images=min_images,
        rows=rows,
        collisions=dict(normalization_collisions(classes)),
    )


# --------------------------------------------------------------------------- images


def read_rgb(path: Path) -> np.ndarray:
    """A crop as uint8 (H, W, 3) RGB."""
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        if not path.is_file():
            raise InputError(f"aligned crop {path} is missing", "the align artifact is damaged")
        raise InputError(f"cannot decode aligned crop {path}", "the align artifact is damaged")
    return np.ascontiguousarray(bgr[..., ::-1])


def _decoded(items: Sequence[tuple[Item, int]], threads: int) -> Iterator[np.ndarray]:
    with ThreadPoolExecutor(threads) as pool:  # cv2 decodes without the GIL
        yield from pool.map(lambda x: read_rgb(x[0].file), items)


# --------------------------------------------------------------------------- stats


def class_stats(counts: Sequence[int]) -> dict[str, Any]:
    c = np.asarray(counts)
    return {
        "classes": int(c.size),
        "images": int(c.sum()),
        "min": int(c.min()),
        "median": float(np.median(c)),
        "mean": round(float(c.mean()), 3),
        "max": int(c.max()),
        "singletons": int((c == 1).sum()),
    }


def write_histogram(counts: Sequence[int], path: Path) -> None:
    """Long-tail plot: histogram of images per identity, and identities ranked by size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = np.sort(np.asarray(counts))[::-1]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    bins = np.unique(np.geomspace(1, max(int(c.max()), 2) + 1, 30).astype(int))
    a.hist(c, bins=bins, color="#4477aa")
    a.set_xscale("log")
    a.set_yscale("log")
    a.set_xlabel("images per identity")
    a.set_ylabel("identities")
    a.set_title("class size histogram")
    b.plot(np.arange(1, c.size + 1), c, color="#aa3377")
    b.set_yscale("log")
    b.set_xlabel("identity rank")
    b.set_ylabel("images")
    b.set_title(f"long tail ({c.size} identities, {int(c.sum())} images)")
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


# --------------------------------------------------------------------------- the stage


def resolve_excludes(specs: Sequence[str]) -> tuple[str, ...]:
    """Built-in list names as given, file paths made absolute (they go into the config)."""
    out = []
    for s in specs:
        out.append(s if s in BUILTIN_LISTS else str(Path(s).expanduser().resolve()))
    return tuple(dict.fromkeys(out))


def run_pack(
    aligned: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    config: PackConfig,
    *,
    force: bool = False,
    threads: int = 2,
    on_plan: Callable[[Plan, int], None] | None = None,
    on_image: Callable[[int], None] | None = None,
) -> PackResult:
    """Pack align artifacts into ``out``. ``on_plan(plan, images_to_write)`` is called once
    before writing; ``on_image(n)`` after every n written images (for progress)."""
    if not aligned:
        raise InputError("no align artifacts given", "pass one or more 'facecl align' outputs")
    config = dataclasses.replace(config, exclude=resolve_excludes(config.exclude))
    artifacts = [Path(a).resolve() for a in aligned]
    if len(set(artifacts)) != len(artifacts):
        raise InputError("an align artifact is given twice", "pass each artifact once")
    for a in artifacts:
        read_manifest(a, stage="align")
    lists = [load_name_list(s) for s in config.exclude]
    inputs = [input_ref(a) for a in artifacts] + [input_ref(nl.path) for nl in lists]

    so = StageOutput(out, "pack", config, inputs, force=force)
    if so.up_to_date:
        return PackResult(path=so.path, manifest=so.existing, up_to_date=True)

    plan = make_plan(artifacts, config, lists)
    n_images = sum(len(v) for v in plan.items.values())
    if n_images == 0:
        raise InputError(
            f"nothing left to pack: {plan.rows} rows, {len(plan.skipped)} skipped",
            "check the exclusion lists and --min-images (see the reasons in the align output)",
        )
    shards = plan.shards(config.shard_size)

    work = so.begin()
    progress_file = work / PROGRESS
    done: dict[str, str] = {}
    if so.resumed and progress_file.is_file():
        done = json.loads(progress_file.read_text()).get("shards", {})
    for split in SPLITS:
        (work / split).mkdir(exist_ok=True)
        for stale in (work / split).glob("*.tmp"):
            stale.unlink()

    # A shard listed in the progress file, present, and with its recorded hash is reused.
    resumed = 0
    todo = []
    for split, index, chunk in shards:
        rel = f"{split}/{shard_name(index)}"
        f = work / rel
        if rel in done and f.is_file() and sha256_file(f) == done[rel]:
            resumed += 1
            if on_image:
                on_image(len(chunk))
        else:
            done.pop(rel, None)
            f.unlink(missing_ok=True)
            todo.append((split, index, chunk))
    if on_plan:
        on_plan(plan, sum(len(c) for _, _, c in todo))

    image_size: tuple[int, int] | None = None
    first = shards[0][2][0][0]
    h, w = read_rgb(first.file).shape[:2]
    image_size = (h, w)
    for split, index, chunk in todo:
        rel = f"{split}/{shard_name(index)}"
        with ShardWriter(
            work / rel,
            len(chunk),
            image_size,
            split=split,
            index=index,
            compression=config.compression,
            gzip_level=config.gzip_level,
        ) as writer:
            for (item, label), img in zip(chunk, _decoded(chunk, threads), strict=True):
                if img.shape != (h, w, 3):
                    raise InputError(
                        f"crop {item.file} is {img.shape[1]}x{img.shape[0]}, expected {w}x{h}",
                        "all packed crops must share one size; align them with the same --size",
                    )
                writer.add(img, label, item.key, item.source)
                if on_image:
                    on_image(1)
            writer.close()
        done[rel] = sha256_file(work / rel)
        atomic_write_json(progress_file, {"shards": done})

    # ---- class map, skipped listing, stats, histogram
    per_split = {s: Counter(lab for _, lab in plan.items[s]) for s in SPLITS}
    totals = [per_split["train"][i] + per_split["val"][i] for i in range(len(plan.classes))]
    atomic_write_json(
        work / CLASSES,
        {
            "num_classes": len(plan.classes),
            "classes": {
                name: {
                    "label": i,
                    "images": totals[i],
                    "train": per_split["train"][i],
                    "val": per_split["val"][i],
                }
                for i, name in enumerate(plan.classes)
            },
        },
    )
    with open(work / SKIPPED, "w", newline="", encoding="utf-8") as f:
        wr = csv.DictWriter(f, fieldnames=["key", "identity", "reason", "detail"])
        wr.writeheader()
        wr.writerows(sorted(plan.skipped, key=lambda r: (r["reason"], r["key"])))
    write_histogram(totals, work / HISTOGRAM)
    progress_file.unlink(missing_ok=True)

    shard_list = [
        {"path": f"{s}/{shard_name(i)}", "split": s, "images": len(c)} for s, i, c in shards
    ]
    files = {r: done[r] for r in sorted(done)}
    for rel in (CLASSES, SKIPPED, HISTOGRAM):
        files[rel] = sha256_file(work / rel)
    skipped_counts = dict(Counter(r["reason"] for r in plan.skipped))
    stats = class_stats(totals)
    counts = {
        "processed": plan.rows,
        "written": n_images,
        "skipped": skipped_counts,
        "classes": len(plan.classes),
        "train": len(plan.items["train"]),
        "val": len(plan.items["val"]),
        "shards": len(shards),
    }
    extra = {
        "files": files,
        "image_size": list(image_size),
        "layout": "one HDF5 file per shard under <split>/; see docs/architecture.md",
        "shards": shard_list,
        "exclusions": plan.exclusions,
        "min_images": plan.min_images,
        "class_stats": stats,
        "class_hist": HISTOGRAM,
        "name_collisions": plan.collisions,
    }
    manifest = so.commit(counts, extra)
    summary = {
        "output": str(so.path),
        "images": n_images,
        "classes": len(plan.classes),
        "train": counts["train"],
        "val": counts["val"],
        "shards": len(shards),
        "resumed_shards": resumed,
        "skipped": skipped_counts,
        "exclusions": [
            {k: e[k] for k in ("list", "identities_removed", "images_removed")}
            for e in plan.exclusions
        ],
        "min_images": plan.min_images,
        "class_stats": stats,
        "image_size": list(image_size),
    }
    return PackResult(path=so.path, manifest=manifest, resumed_shards=resumed, summary=summary)
