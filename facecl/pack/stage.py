"""`run_pack`: align artifacts, a RecordIO folder or pre-aligned crops -> identity-filtered,
split, checksummed HDF5 shards.

Order of work: read the input (``facecl.pack.inputs``: which images, which rows are unusable)
-> drop identities on exclusion lists -> drop identities below ``min_images`` -> labels by
sorted identity name -> per-identity seeded validation split -> a deterministic shard plan
-> write the shards (decoding in a thread pool, resuming finished shards, recording images
that turn out unreadable) -> classes.json, skipped.csv, class_hist.png and the manifest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facecl.artifacts import StageOutput, atomic_write_json, input_ref, sha256_file
from facecl.errors import InputError, UsageError
from facecl.outpath import check_free_space
from facecl.pack.artifact import (
    CLASSES,
    HISTOGRAM,
    SKIPPED,
    SPLITS,
    PackClass,
    shard_path,
    write_classes,
    write_skipped,
)
from facecl.pack.config import PackConfig
from facecl.pack.inputs import (
    RECORDIO,
    Item,
    Loader,
    PackInput,
    SkipItem,
    input_kind,
    input_refs,
    open_input,
    path_list,
    skip_row,
)
from facecl.pack.overlap import (
    BUILTIN_LISTS,
    NameList,
    filter_identities,
    load_name_list,
    normalization_collisions,
)
from facecl.pack.shards import ShardWriter

PROGRESS = "_pack_progress.json"
NO_NAMES = (
    "the input names its identities by class id only (RecordIO), so no identity could be "
    "checked against evaluation sets; pass --names FILE (ID<TAB>NAME) and --exclude to filter"
)


@dataclass
class PackResult:
    path: Path
    manifest: Any
    up_to_date: bool = False
    resumed_shards: int = 0
    summary: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- planning


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
    """What to pack, as column arrays rather than an object per image: for each split the
    positions of its images in ``source_items`` (shard order) and their labels."""

    classes: list[str]  # label -> identity
    index: dict[str, np.ndarray]  # split -> (n,) int64 positions in source_items, shard order
    labels: dict[str, np.ndarray]  # split -> (n,) int32 label of each image
    source_items: Sequence[Item]
    skipped: list[dict[str, str]]
    exclusions: list[dict[str, Any]]
    min_images: dict[str, Any]
    rows: int
    collisions: dict[str, list[str]]
    overlap: dict[str, Any] = field(default_factory=dict)
    """Whether the overlap filter ran (``ran``) and, if not, why (``reason``)."""

    @property
    def n_images(self) -> int:
        """Images to pack (every split)."""
        return sum(len(v) for v in self.index.values())

    def shards(self, shard_size: int) -> list[tuple[str, int, int, int]]:
        """[(split, index, start, stop)]: at most ``shard_size`` images each."""
        out = []
        for split in SPLITS:
            n = len(self.index[split])
            for index, start in enumerate(range(0, n, shard_size)):
                out.append((split, index, start, min(start + shard_size, n)))
        return out

    def chunk(self, split: str, start: int, stop: int) -> list[tuple[Item, int]]:
        """[(item, label)] of images ``start:stop`` of ``split`` (made for one shard)."""
        idx, lab = self.index[split][start:stop], self.labels[split][start:stop]
        return [(self.source_items[int(i)], int(y)) for i, y in zip(idx, lab, strict=True)]


@dataclass
class _Groups:
    """The input's images grouped by identity: ``members(name)`` are their positions."""

    names: list[str]  # identity code -> name
    order: np.ndarray  # positions sorted by identity code (stable)
    starts: np.ndarray  # (identities + 1,) group bounds in ``order``
    code: dict[str, int]

    @classmethod
    def of(cls, items: Sequence[Item]) -> _Groups:
        code: dict[str, int] = {}
        codes = np.fromiter(
            (code.setdefault(it.identity, len(code)) for it in items), np.int32, len(items)
        )
        counts = np.bincount(codes, minlength=len(code))
        starts = np.concatenate([[0], np.cumsum(counts)])
        return cls(list(code), np.argsort(codes, kind="stable"), starts, code)

    def members(self, ident: str) -> np.ndarray:
        c = self.code[ident]
        return self.order[self.starts[c] : self.starts[c + 1]]

    def size(self, ident: str) -> int:
        c = self.code[ident]
        return int(self.starts[c + 1] - self.starts[c])


def _exclude(
    groups: _Groups,
    items: Sequence[Item],
    lists: Sequence[NameList],
    skipped: list[dict[str, str]],
) -> tuple[list[str], list[dict[str, Any]]]:
    """The identities no list names, and one exclusion record per list."""
    overlap = filter_identities(sorted(groups.names), lists)
    exclusions = []
    for nl in lists:
        removed = overlap.removed_by(nl.label)
        exclusions.append(
            {
                "list": nl.label,
                "path": str(nl.path),
                "names": nl.raw_count,
                "identities_removed": len(removed),
                "images_removed": sum(groups.size(i) for i in removed),
                "removed": removed,
            }
        )
        for ident in removed:
            m = groups.members(ident)
            skipped += [skip_row(items[i].key, ident, "excluded", nl.label) for i in m]
    return overlap.kept, exclusions


def _split_columns(
    groups: _Groups, items: Sequence[Item], classes: Sequence[str], config: PackConfig
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per split, positions (identities in label order, each by key) and labels."""
    n = sum(groups.size(c) for c in classes)
    index = {s: np.empty(n, np.int64) for s in SPLITS}
    labels = {s: np.empty(n, np.int32) for s in SPLITS}
    fill = dict.fromkeys(SPLITS, 0)
    for label, ident in enumerate(classes):
        members = groups.members(ident)
        keys = [items[i].key for i in members]
        by_key = sorted(range(len(keys)), key=keys.__getitem__)
        val = split_identity(keys, ident, config.val_fraction, config.seed)
        is_val = np.fromiter((keys[j] in val for j in by_key), bool, len(keys))
        ordered = members[by_key]
        for split, chosen in (("train", ordered[~is_val]), ("val", ordered[is_val])):
            a = fill[split]
            index[split][a : a + len(chosen)] = chosen
            labels[split][a : a + len(chosen)] = label
            fill[split] = a + len(chosen)
    return (
        {s: index[s][: fill[s]].copy() for s in SPLITS},
        {s: labels[s][: fill[s]].copy() for s in SPLITS},
    )


def make_plan(source: PackInput, config: PackConfig, lists: Sequence[NameList]) -> Plan:
    skipped = list(source.skipped)
    items = source.items
    groups = _Groups.of(items)
    kept_ids, exclusions = _exclude(groups, items, lists, skipped)

    kept: list[str] = []
    few: list[str] = []
    for ident in kept_ids:
        (kept if groups.size(ident) >= config.min_images else few).append(ident)
    for ident in few:
        detail = f"{groups.size(ident)} < {config.min_images}"
        m = groups.members(ident)
        skipped += [skip_row(items[i].key, ident, "min_images", detail) for i in m]
    min_images: dict[str, Any] = {
        "k": config.min_images,
        "identities_removed": len(few),
        "images_removed": sum(groups.size(i) for i in few),
    }

    classes = sorted(kept)
    index, labels = _split_columns(groups, items, classes, config)
    overlap = {"ran": True} if source.names_known else {"ran": False, "reason": NO_NAMES}
    return Plan(
        classes=classes,
        index=index,
        labels=labels,
        source_items=items,
        skipped=skipped,
        exclusions=exclusions,
        min_images=min_images,
        rows=source.rows,
        collisions=dict(normalization_collisions(classes)),
        overlap=overlap,
    )


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
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    config: PackConfig,
    *,
    force: bool = False,
    threads: int = 2,
    on_plan: Callable[[Plan, int], None] | None = None,
    on_image: Callable[[int], None] | None = None,
) -> PackResult:
    """Pack align artifacts, one RecordIO folder, or (``config.prealigned``) one folder of
    crops into ``out``. ``on_plan(plan, images_to_write)`` is called once before writing;
    ``on_image(n)`` after every n written images (for progress). ``threads`` decode images."""
    if not inputs:
        raise InputError(
            "nothing to pack", "pass 'facecl align' outputs, a RecordIO folder or --prealigned"
        )
    names = str(Path(config.names).expanduser().resolve()) if config.names else ""
    config = dataclasses.replace(config, exclude=resolve_excludes(config.exclude), names=names)
    paths = path_list(inputs)
    kind = input_kind(paths, config.prealigned)
    if kind == RECORDIO and config.exclude and not names:
        raise UsageError(
            "--exclude needs identity names, and a RecordIO set has only class ids",
            "pass --names FILE mapping each class id to a name (ID<TAB>NAME per line)",
        )
    lists = [load_name_list(s) for s in config.exclude]
    refs = input_refs(paths, names) + [input_ref(nl.path) for nl in lists]

    so = StageOutput(out, "pack", config, refs, force=force, verify_inputs=config.verify_inputs)
    if so.existing is not None:  # same config and inputs: up to date if its files are intact
        from facecl.inspect.verify import verify_artifact

        verify_artifact(so.path, so.existing)
        return PackResult(path=so.path, manifest=so.existing, up_to_date=True)

    source = open_input(kind, paths, names)
    try:
        plan = make_plan(source, config, lists)
        if plan.n_images == 0:
            raise InputError(
                f"nothing left to pack: {plan.rows} rows, {len(plan.skipped)} skipped",
                "check the exclusion lists and --min-images (see the reasons in skipped.csv)",
            )
        if config.compression == "none":  # the shards' size is known: check it fits up front
            h, w = source.spec.size
            n = plan.n_images
            check_free_space(so.path, n * h * w * 3, f"{n} packed crops")
        work = so.begin()
        written = write_shards(
            work,
            plan,
            config,
            source,
            resume=so.resumed,
            threads=threads,
            on_plan=on_plan,
            on_image=on_image,
        )
    finally:
        source.close()
    return finalize(so, work, plan, config, source, written)


@dataclass
class Written:
    """What :func:`write_shards` leaves: each shard's sha256 and image count, the images that
    could not be read while writing, and how many shards were reused."""

    hashes: dict[str, str]  # shard path -> sha256
    counts: dict[str, int]  # shard path -> images written
    dropped: dict[str, list[dict[str, str]]]  # shard path -> skipped.csv rows
    resumed: int

    @property
    def dropped_rows(self) -> list[dict[str, str]]:
        return [row for rows in self.dropped.values() for row in rows]


def write_shards(
    work: Path,
    plan: Plan,
    config: PackConfig,
    source: PackInput,
    *,
    resume: bool,
    threads: int = 2,
    on_plan: Callable[[Plan, int], None] | None = None,
    on_image: Callable[[int], None] | None = None,
) -> Written:
    """Write the plan's shards into ``work``, reusing the ones a killed run finished.

    A shard listed in the progress file, present, and with its recorded hash is reused; the
    progress file is updated after each shard so a kill loses at most the one in flight.
    """
    progress_file = work / PROGRESS
    prior: dict[str, Any] = {}
    if resume and progress_file.is_file():
        prior = json.loads(progress_file.read_text())
    done: dict[str, dict[str, Any]] = prior.get("shards", {})
    for split in SPLITS:
        (work / split).mkdir(exist_ok=True)
        for stale in (work / split).glob("*.tmp"):
            stale.unlink()
    resumed = 0
    todo = []
    for split, index, start, stop in plan.shards(config.shard_size):
        rel = shard_path(split, index)
        f = work / rel
        entry = done.get(rel)
        if isinstance(entry, dict) and f.is_file() and sha256_file(f) == entry.get("sha256"):
            resumed += 1
            if on_image:
                on_image(stop - start)
        else:
            done.pop(rel, None)
            f.unlink(missing_ok=True)
            todo.append((rel, split, index, start, stop))
    if on_plan:
        on_plan(plan, sum(stop - start for *_, start, stop in todo))
    if source.kind == "align":
        _check_first_crop(plan, source)
    for rel, split, index, start, stop in todo:
        chunk = plan.chunk(split, start, stop)  # one shard's items at a time
        dropped = _write_shard(work / rel, split, index, chunk, source, config, threads, on_image)
        done[rel] = {
            "sha256": sha256_file(work / rel),
            "images": len(chunk) - len(dropped),
            "dropped": dropped,
        }
        atomic_write_json(progress_file, {"shards": done})
    return Written(
        hashes={r: e["sha256"] for r, e in done.items()},
        counts={r: int(e["images"]) for r, e in done.items()},
        dropped={r: list(e["dropped"]) for r, e in done.items()},
        resumed=resumed,
    )


def _check_first_crop(plan: Plan, source: PackInput) -> None:
    """The first planned crop has the align artifacts' size (else the artifact is damaged)."""
    spec = source.spec
    first = next(plan.chunk(s, 0, 1)[0][0] for s in SPLITS if len(plan.index[s]))
    h, w = source.load(first).shape[:2]
    if (h, w) != spec.size:
        raise InputError(
            f"crop {first.file} is {h} px high and {w} px wide, but its align artifact was "
            f"made with --size {spec.size_text}",
            "the align artifact is damaged; re-run 'facecl align'",
        )


def _loaded(
    chunk: Sequence[tuple[Item, int]], load: Loader, threads: int, group: int = 16
) -> Iterator[np.ndarray | SkipItem]:
    """``load`` of each item in order (or the SkipItem it raised), decoded by ``threads``
    threads (cv2 decodes without the GIL) in groups of ``group`` items, at most
    ``4 * threads`` groups ahead of the consumer, so memory stays bounded."""

    def run(items: Sequence[tuple[Item, int]]) -> list[np.ndarray | SkipItem]:
        out: list[np.ndarray | SkipItem] = []
        for item, _ in items:
            try:
                out.append(load(item))
            except SkipItem as e:
                out.append(e)
        return out

    groups = (chunk[i : i + group] for i in range(0, len(chunk), group))
    with ThreadPoolExecutor(max(1, threads)) as pool:
        ahead: deque[Future[list[np.ndarray | SkipItem]]] = deque()
        for g in groups:
            ahead.append(pool.submit(run, g))
            if len(ahead) > 4 * threads:
                yield from ahead.popleft().result()
        while ahead:
            yield from ahead.popleft().result()


def _write_shard(
    path: Path,
    split: str,
    index: int,
    chunk: Sequence[tuple[Item, int]],
    source: PackInput,
    config: PackConfig,
    threads: int,
    on_image: Callable[[int], None] | None,
) -> list[dict[str, str]]:
    """Write one shard; returns the skipped.csv rows of the images that could not be read."""
    h, w = source.spec.size
    dropped: list[dict[str, str]] = []
    pending = 0  # images not yet reported to on_image (reported in batches: a rich bar
    # update per image costs about as much as writing the image)
    with ShardWriter(
        path,
        len(chunk),
        (h, w),
        split=split,
        index=index,
        compression=config.compression,
        gzip_level=config.gzip_level,
    ) as writer:
        for (item, label), img in zip(chunk, _loaded(chunk, source.load, threads), strict=True):
            if isinstance(img, SkipItem):
                dropped.append(skip_row(item.key, item.identity, img.reason, img.detail))
            elif img.shape != (h, w, 3):
                raise InputError(
                    f"crop {item.file} is {img.shape[1]}x{img.shape[0]}, expected {w}x{h}",
                    "all packed crops must share one size; align them with the same --size",
                )
            else:
                writer.add(img, label, item.key, item.source)
            pending += 1
            if on_image and pending == 64:
                on_image(pending)
                pending = 0
        writer.close(allow_fewer=True)
    if on_image and pending:
        on_image(pending)
    return dropped


def _split_counts(plan: Plan, lost: set[str]) -> dict[str, np.ndarray]:
    """Images per label of each split, less the ``lost`` keys (unreadable while writing)."""
    out = {}
    for s in SPLITS:
        labels = plan.labels[s]
        if lost:
            keep = [plan.source_items[i].key not in lost for i in plan.index[s].tolist()]
            labels = labels[np.asarray(keep, bool)]
        out[s] = np.bincount(labels, minlength=len(plan.classes)).astype(np.int64)
    return out


def finalize(
    so: StageOutput,
    work: Path,
    plan: Plan,
    config: PackConfig,
    source: PackInput,
    written: Written,
) -> PackResult:
    """Write the class map, the skip listing and the histogram, then commit the manifest."""
    spec = source.spec
    dropped = written.dropped_rows
    per_split = _split_counts(plan, {r["key"] for r in dropped})
    totals = [int(t) for t in per_split["train"] + per_split["val"]]
    classes = [
        PackClass(name, i, totals[i], int(per_split["train"][i]), int(per_split["val"][i]))
        for i, name in enumerate(plan.classes)
    ]
    skipped = plan.skipped + dropped
    write_classes(work, classes)
    write_skipped(work / SKIPPED, sorted(skipped, key=lambda r: (r["reason"], r["key"])))
    write_histogram(totals, work / HISTOGRAM)
    (work / PROGRESS).unlink(missing_ok=True)

    shards = plan.shards(config.shard_size)
    files = {r: written.hashes[r] for r in sorted(written.hashes)}
    for rel in (CLASSES, SKIPPED, HISTOGRAM):
        files[rel] = sha256_file(work / rel)
    skipped_counts = dict(Counter(r["reason"] for r in skipped))
    stats = class_stats(totals)
    n_written = plan.n_images - len(dropped)
    counts = {
        "processed": plan.rows,
        "written": n_written,
        "skipped": skipped_counts,
        "classes": len(plan.classes),
        "train": int(per_split["train"].sum()),
        "val": int(per_split["val"].sum()),
        "shards": len(shards),
    }
    shard_list = [
        {"path": shard_path(s, i), "split": s, "images": written.counts[shard_path(s, i)]}
        for s, i, *_ in shards
    ]
    extra = {
        "files": files,
        "image_size": list(spec.size),
        "input_spec": spec.to_dict(),
        "layout": "one HDF5 file per shard under <split>/; see docs/architecture.md",
        "shards": shard_list,
        "source": {"kind": source.kind, **source.source},
        "exclusions": plan.exclusions,
        "overlap_filter": plan.overlap,
        "min_images": plan.min_images,
        "class_stats": stats,
        "class_hist": HISTOGRAM,
        "name_collisions": plan.collisions,
    }
    manifest = so.commit(counts, extra)
    summary = {
        "output": str(so.path),
        "images": n_written,
        "classes": len(plan.classes),
        "train": counts["train"],
        "val": counts["val"],
        "shards": len(shards),
        "resumed_shards": written.resumed,
        "skipped": skipped_counts,
        "exclusions": [
            {k: e[k] for k in ("list", "identities_removed", "images_removed")}
            for e in plan.exclusions
        ],
        "overlap_filter": plan.overlap,
        "min_images": plan.min_images,
        "class_stats": stats,
        "image_size": list(spec.size),
    }
    return PackResult(
        path=so.path, manifest=manifest, resumed_shards=written.resumed, summary=summary
    )
