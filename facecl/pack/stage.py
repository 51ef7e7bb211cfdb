"""`run_pack`: align artifacts -> identity-filtered, split, checksummed HDF5 shards.

Order of work: read every align artifact's ``faces.csv`` -> drop rows without a crop ->
drop identities on exclusion lists -> drop identities below ``min_images`` -> labels by
sorted identity name -> per-identity seeded validation split -> a deterministic shard plan
-> write the shards (resuming finished ones) -> classes.json, skipped.csv, class_hist.png
and the manifest.
"""

from __future__ import annotations

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

from facecl.align.artifact import ALIGNED, check_crop, crop_hashes, read_faces
from facecl.artifacts import (
    StageOutput,
    atomic_write_json,
    input_ref,
    read_manifest,
    sha256_file,
)
from facecl.errors import InputError
from facecl.models.input_spec import InputSpec
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
from facecl.pack.overlap import (
    BUILTIN_LISTS,
    NameList,
    filter_identities,
    load_name_list,
    normalization_collisions,
)
from facecl.pack.shards import ShardWriter

PROGRESS = "_pack_progress.json"


@dataclass(frozen=True)
class Item:
    """One aligned crop to pack."""

    key: str  # "<identity>/<stem>", unique in the pack
    identity: str
    file: Path  # the crop PNG
    source: str  # the align stage's source of the crop
    sha256: str = ""  # the crop's hash in its align manifest ("" when not recorded)


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
    items: list[Item] = []
    skipped: list[dict[str, str]] = []
    hashes = crop_hashes(artifact)
    for row in read_faces(artifact):
        output = row.output.strip()
        status = row.status.strip()
        if not output or status == "skipped":
            reason = row.reason.strip() or status or "no_crop"
            skipped.append(
                {
                    "key": row.source,
                    "identity": row.identity,
                    "reason": f"align:{reason}",
                    "detail": str(artifact),
                }
            )
            continue
        rel = Path(output).with_suffix("")
        if rel.parts[0] == ALIGNED and len(rel.parts) > 2:
            rel = Path(*rel.parts[1:])  # aligned/<identity>/<stem>.png -> <identity>/<stem>
        file = artifact / output
        items.append(Item(rel.as_posix(), row.identity, file, row.source, hashes.get(output, "")))
    return items, skipped


def align_input_spec(artifacts: Sequence[Path]) -> InputSpec:
    """The crop geometry shared by the align artifacts (their ``size``); raises unless they
    were all aligned with the same ``--size``."""
    sizes: dict[str, list[Path]] = defaultdict(list)
    for a in artifacts:
        size = read_manifest(a, stage="align").config.get("size")
        if not isinstance(size, str) or not size:
            raise InputError(
                f"align artifact {a} records no crop size", "pass an output of 'facecl align'"
            )
        sizes[size].append(a)
    if len(sizes) > 1:
        seen = ", ".join(f"{s} ({', '.join(p.name for p in ps)})" for s, ps in sizes.items())
        raise InputError(
            f"the align artifacts have different crop sizes: {seen}",
            "all packed crops must share one size; align them with the same --size",
        )
    return InputSpec.for_template(next(iter(sizes)))


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

    @property
    def n_images(self) -> int:
        """Images to pack (every split)."""
        return sum(len(v) for v in self.items.values())

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

    kept: list[str] = []
    few: list[str] = []
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
    min_images: dict[str, Any] = {
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


def read_rgb(path: Path, sha256: str = "") -> np.ndarray:
    """A crop as uint8 (H, W, 3) RGB, checked against its manifest hash when given."""
    import cv2

    from facecl.align.io import PNG_MAGIC, png_problem

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(
            f"aligned crop {path} is missing", "the align artifact is damaged"
        ) from None
    except OSError as e:
        raise InputError(f"cannot read aligned crop {path}: {e.strerror}", "check it") from None
    check_crop(path, data, sha256)
    problem = png_problem(data) if data.startswith(PNG_MAGIC) else ""
    bgr = None if problem else cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(
            f"cannot decode aligned crop {path}{': ' + problem if problem else ''}",
            "the align artifact is damaged; re-run 'facecl align'",
        )
    return np.ascontiguousarray(bgr[..., ::-1])


def _decoded(items: Sequence[tuple[Item, int]], threads: int) -> Iterator[np.ndarray]:
    with ThreadPoolExecutor(threads) as pool:  # cv2 decodes without the GIL
        yield from pool.map(lambda x: read_rgb(x[0].file, x[0].sha256), items)


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
    spec = align_input_spec(artifacts)
    lists = [load_name_list(s) for s in config.exclude]
    inputs = [input_ref(a) for a in artifacts] + [input_ref(nl.path) for nl in lists]

    so = StageOutput(out, "pack", config, inputs, force=force)
    if so.existing is not None:  # same config and inputs: up to date if its files are intact
        from facecl.inspect.verify import verify_artifact

        verify_artifact(so.path, so.existing)
        return PackResult(path=so.path, manifest=so.existing, up_to_date=True)

    plan = make_plan(artifacts, config, lists)
    if plan.n_images == 0:
        raise InputError(
            f"nothing left to pack: {plan.rows} rows, {len(plan.skipped)} skipped",
            "check the exclusion lists and --min-images (see the reasons in the align output)",
        )
    work = so.begin()
    written = write_shards(
        work,
        plan,
        config,
        spec,
        resume=so.resumed,
        threads=threads,
        on_plan=on_plan,
        on_image=on_image,
    )
    return finalize(so, work, plan, config, spec, written)


@dataclass
class Written:
    """What :func:`write_shards` leaves: every shard's sha256 and how many were reused."""

    hashes: dict[str, str]  # shard path -> sha256
    resumed: int


def write_shards(
    work: Path,
    plan: Plan,
    config: PackConfig,
    spec: InputSpec,
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
    done: dict[str, str] = {}
    if resume and progress_file.is_file():
        done = json.loads(progress_file.read_text()).get("shards", {})
    for split in SPLITS:
        (work / split).mkdir(exist_ok=True)
        for stale in (work / split).glob("*.tmp"):
            stale.unlink()
    resumed = 0
    todo = []
    for split, index, chunk in plan.shards(config.shard_size):
        rel = shard_path(split, index)
        f = work / rel
        if rel in done and f.is_file() and sha256_file(f) == done[rel]:
            resumed += 1
            if on_image:
                on_image(len(chunk))
        else:
            done.pop(rel, None)
            f.unlink(missing_ok=True)
            todo.append((rel, split, index, chunk))
    if on_plan:
        on_plan(plan, sum(len(c) for *_, c in todo))
    size = _crop_size(plan, spec)
    for rel, split, index, chunk in todo:
        _write_shard(work / rel, split, index, chunk, size, config, threads, on_image)
        done[rel] = sha256_file(work / rel)
        atomic_write_json(progress_file, {"shards": done})
    return Written(hashes=done, resumed=resumed)


def _crop_size(plan: Plan, spec: InputSpec) -> tuple[int, int]:
    """(H, W) of the first planned crop, checked against the align artifacts' size."""
    first = next(items[0][0] for items in (plan.items[s] for s in SPLITS) if items)
    h, w = read_rgb(first.file).shape[:2]
    if (h, w) != spec.size:
        raise InputError(
            f"crop {first.file} is {h} px high and {w} px wide, but its align artifact was "
            f"made with --size {spec.size_text}",
            "the align artifact is damaged; re-run 'facecl align'",
        )
    return h, w


def _write_shard(
    path: Path,
    split: str,
    index: int,
    chunk: Sequence[tuple[Item, int]],
    size: tuple[int, int],
    config: PackConfig,
    threads: int,
    on_image: Callable[[int], None] | None,
) -> None:
    h, w = size
    with ShardWriter(
        path,
        len(chunk),
        size,
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


def finalize(
    so: StageOutput,
    work: Path,
    plan: Plan,
    config: PackConfig,
    spec: InputSpec,
    written: Written,
) -> PackResult:
    """Write the class map, the skip listing and the histogram, then commit the manifest."""
    per_split = {s: Counter(lab for _, lab in plan.items[s]) for s in SPLITS}
    totals = [per_split["train"][i] + per_split["val"][i] for i in range(len(plan.classes))]
    classes = [
        PackClass(name, i, totals[i], per_split["train"][i], per_split["val"][i])
        for i, name in enumerate(plan.classes)
    ]
    write_classes(work, classes)
    write_skipped(work / SKIPPED, sorted(plan.skipped, key=lambda r: (r["reason"], r["key"])))
    write_histogram(totals, work / HISTOGRAM)
    (work / PROGRESS).unlink(missing_ok=True)

    shards = plan.shards(config.shard_size)
    done = written.hashes
    files = {r: done[r] for r in sorted(done)}
    for rel in (CLASSES, SKIPPED, HISTOGRAM):
        files[rel] = sha256_file(work / rel)
    skipped_counts = dict(Counter(r["reason"] for r in plan.skipped))
    stats = class_stats(totals)
    counts = {
        "processed": plan.rows,
        "written": plan.n_images,
        "skipped": skipped_counts,
        "classes": len(plan.classes),
        "train": len(plan.items["train"]),
        "val": len(plan.items["val"]),
        "shards": len(shards),
    }
    extra = {
        "files": files,
        "image_size": list(spec.size),
        "input_spec": spec.to_dict(),
        "layout": "one HDF5 file per shard under <split>/; see docs/architecture.md",
        "shards": [{"path": shard_path(s, i), "split": s, "images": len(c)} for s, i, c in shards],
        "exclusions": plan.exclusions,
        "min_images": plan.min_images,
        "class_stats": stats,
        "class_hist": HISTOGRAM,
        "name_collisions": plan.collisions,
    }
    manifest = so.commit(counts, extra)
    summary = {
        "output": str(so.path),
        "images": plan.n_images,
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
        "min_images": plan.min_images,
        "class_stats": stats,
        "image_size": list(spec.size),
    }
    return PackResult(
        path=so.path, manifest=manifest, resumed_shards=written.resumed, summary=summary
    )
