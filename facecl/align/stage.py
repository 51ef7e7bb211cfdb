"""The align stage: images -> the in-memory aligner -> an artifact of crops + faces.csv.

The artifact's layout (``faces.csv``, ``aligned/``) is :mod:`facecl.align.artifact`'s; the
aligning itself is :mod:`facecl.align.inmemory`'s.

Work is done in chunks of ``chunk_size`` images of the global (sorted) listing. A finished
chunk leaves ``_parts/part-<chunk>.csv`` in ``OUT.partial/`` (written after its PNGs), so a
killed run resumes without redoing it. ``--shard K/N`` takes every N-th chunk from K-1; a
merge concatenates shard outputs in global order, which equals one run over everything.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from facecl.align.artifact import (
    CROPS_SHA256,
    FACES_CSV,
    STATUSES,
    FaceRow,
    concat_faces,
    iter_faces_file,
    read_faces,
    read_faces_file,
    write_crop_hashes,
    write_faces,
)
from facecl.align.config import AlignConfig, AlignRuntime
from facecl.align.inmemory import PIXEL_BUDGET, Aligner, stream_detect
from facecl.align.io import Item, LandmarkTable, open_listing
from facecl.align.transform import template_for
from facecl.align.writer import CropWriter
from facecl.errors import ArtifactError, InputError, UsageError

PARTS = "_parts"


# --------------------------------------------------------------------------- the stage


@dataclass(frozen=True)
class AlignSummary:
    output: str
    noop: bool
    resumed: bool
    reused_chunks: int
    counts: dict[str, Any]
    elapsed_s: float
    images_per_s: float
    device: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _chunks(n_items: int, cfg: AlignConfig) -> list[int]:
    """Chunk numbers this run processes (all of them, or the shard's interleaved slice)."""
    n_chunks = -(-n_items // cfg.chunk_size)
    kn = cfg.shard_kn
    if kn is None:
        return list(range(n_chunks))
    k, n = kn
    return [c for c in range(n_chunks) if c % n == k - 1]


def run_align(
    cfg: AlignConfig,
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    runtime: AlignRuntime | None = None,
    landmarks: str | os.PathLike | None = None,
    force: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
    detector: Any = None,
) -> AlignSummary:
    """Align every image of ``source`` (a tree or a list file) into the artifact ``out``.

    ``on_progress(done_images, total_images)`` is called after each batch.
    """
    from facecl.artifacts import StageOutput, input_ref

    runtime = runtime or AlignRuntime()
    source = Path(source)
    t0 = time.perf_counter()
    _check_landmark_options(cfg, landmarks)
    table = LandmarkTable.read(Path(landmarks)) if landmarks is not None else None
    listing = open_listing(source)  # one walk of a tree: its items and its hash
    items, listing_notes = listing.items, listing.notes
    if not items:
        raise InputError(
            f"no images found in {source}",
            "expected ROOT/<identity>/<image> files or a list of '<path> <identity>' lines",
        )
    inputs = [input_ref(source, listing.tree_sha256)]
    inputs += [input_ref(landmarks)] if landmarks is not None else []
    so = StageOutput(out, "align", cfg, inputs, force=force, verify_inputs=runtime.verify_inputs)
    if so.existing is not None:  # up to date
        return AlignSummary(str(so.path), True, False, 0, so.existing.counts, 0.0, 0.0)
    if detector is None:
        runtime.torch_device()  # --device cuda without CUDA fails before OUT.partial exists
    work = so.begin()
    parts = work / PARTS
    parts.mkdir(exist_ok=True)
    mine = _chunks(len(items), cfg)
    chunks = _Chunks(items, cfg.chunk_size)  # each chunk's items are made when it is aligned
    total = sum(chunks.size(c) for c in mine)
    finished = _finished(work)  # killed between writing faces.csv and commit
    done = _intact_chunks(work, [c for c in mine if (parts / _part_name(c)).is_file()])
    todo = [] if finished else [c for c in mine if c not in done]
    n_done = sum(chunks.size(c) for c in done)
    aligner = Aligner(cfg, runtime, table, detector)
    device = str(aligner.detector.device) if todo else ""
    if on_progress:
        on_progress(n_done if not finished else total, total)

    def progress(n: int) -> None:
        if on_progress:
            on_progress(n_done + n, total)

    processed_now = _align_chunks(work, chunks, todo, aligner, runtime, progress)
    if not finished:
        concat_faces(work / FACES_CSV, [parts / _part_name(c) for c in mine])
    shutil.rmtree(parts, ignore_errors=True)
    counts = _counts(iter_faces_file(work / FACES_CSV), total, listing_notes)
    if cfg.shard is None:
        _check_some_crops(work, counts)
    extra = {
        "files": _file_hashes(work),
        "runtime": asdict(runtime),
        "device": device,
        "n_items_listed": len(items),
        "chunks": len(mine),
        "template": template_for(cfg.size).tolist(),
        "detector": "facecl MTCNN (Zhang et al. 2016), weights from facenet-pytorch 2.6.0",
    }
    so.commit(counts, extra)
    elapsed = time.perf_counter() - t0
    speed = round(processed_now / elapsed, 2) if elapsed > 0 else 0.0
    return AlignSummary(
        str(so.path), False, so.resumed, len(done), counts, round(elapsed, 3), speed, device
    )


def _check_some_crops(work: Path, counts: dict[str, Any]) -> None:
    """Raise (and leave nothing behind) when not one image gave a crop: an artifact of no
    faces is an error, with the reasons counted."""
    if counts["written"]:
        return
    shutil.rmtree(work, ignore_errors=True)
    reasons = {**counts["skipped"], **counts["fallback"]}
    hidden = counts.get("ignored_hidden", 0)
    text = "; ".join(f"{r}: {n}" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
    raise InputError(
        f"no face aligned: {counts['processed']} of {counts['processed']} images gave no crop "
        f"({text or 'no reason recorded'})"
        + (f", {hidden} hidden files ignored" if hidden else ""),
        "check the images (faces visible, files readable) and --on-miss",
    )


def _check_landmark_options(cfg: AlignConfig, landmarks: str | os.PathLike | None) -> None:
    if cfg.on_miss == "landmarks" and landmarks is None:
        raise UsageError("--on-miss landmarks needs --landmarks FILE", "or use --on-miss skip")
    if landmarks is not None and cfg.on_miss != "landmarks":
        raise UsageError("--landmarks is only used with --on-miss landmarks", "add it or drop it")


@dataclass(frozen=True)
class _Chunks:
    """The listing cut in chunks of ``size`` images; a chunk's items are made on demand."""

    items: Sequence[Item]
    chunk_size: int

    def size(self, c: int) -> int:
        return max(0, min(self.chunk_size, len(self.items) - c * self.chunk_size))

    def __getitem__(self, c: int) -> Sequence[Item]:
        return self.items[c * self.chunk_size : (c + 1) * self.chunk_size]


def _align_chunks(
    work: Path,
    chunks: _Chunks,
    todo: list[int],
    aligner: Aligner,
    runtime: AlignRuntime,
    on_progress: Callable[[int], None],
) -> int:
    """Align the images of the chunks ``todo`` (numbers), writing the crops and one
    ``_parts/part-<chunk>.csv`` per finished chunk. Returns the number of images processed;
    ``on_progress(images_processed)`` is called as results come back.

    Decoding runs ahead in ``runtime.workers`` threads, detection on this thread, warping
    and PNG writing behind it in ``runtime.writers`` threads (:class:`CropWriter`)."""
    parts = work / PARTS
    processed = 0
    rows: dict[int, list[FaceRow]] = {c: [] for c in todo}
    left = {c: chunks.size(c) for c in todo}
    bound = 2 * aligner.runtime.detector_batch()  # a batch being written, one queued
    keyed = ((c, it) for c in todo for it in chunks[c])
    with (
        ThreadPoolExecutor(runtime.workers) as pool,
        CropWriter(work, aligner, runtime.writers, bound, PIXEL_BUDGET) as writer,
    ):

        def take(wait_all: bool = False) -> None:
            nonlocal processed
            n0 = processed
            for c, these in writer.take(wait_all=wait_all):
                rows[c] += these
                left[c] -= 1
                processed += 1
                if left[c] == 0:  # chunk complete: record it (atomically) so a resume skips it
                    write_faces(parts / _part_name(c), rows.pop(c))
            if processed != n0:
                on_progress(processed)

        for c, batch, decs, dets in stream_detect(keyed, aligner, pool):
            for item, dec, det in zip(batch, decs, dets, strict=True):
                writer.submit(c, item, dec, det)
            take()
        take(wait_all=True)
    return processed


def _finished(work: Path) -> bool:
    """Whether ``faces.csv`` is written and every crop it names is there (else it is removed
    and the chunks are redone)."""
    if not (work / FACES_CSV).is_file():
        return False
    if all((work / r.output).is_file() for r in iter_faces_file(work / FACES_CSV) if r.output):
        return True
    (work / FACES_CSV).unlink()
    return False


def _intact_chunks(work: Path, chunks: list[int]) -> set[int]:
    """The finished chunks whose crops are all still on disk; a chunk with a crop missing
    (deleted or lost in a crash) is redone (its part file removed) and reported."""
    from facecl.console import console

    ok = set()
    for c in chunks:
        part = work / PARTS / _part_name(c)
        rows = read_faces_file(part)
        lost = [r.output for r in rows if r.output and not (work / r.output).is_file()]
        if lost:
            console.print(
                f"[yellow]redoing chunk {c}[/]: {len(lost)} of its crops are missing "
                f"from {work.name}/ (e.g. {lost[0]})",
                highlight=False,
            )
            part.unlink()
            continue
        ok.add(c)
    return ok


def _part_name(c: int) -> str:
    return f"part-{c:07d}.csv"


def _counts(rows: Iterable[FaceRow], images: int, listing_notes: dict[str, int]) -> dict[str, Any]:
    """The manifest counts of ``rows`` (one pass: the rows may be streamed)."""
    status: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    fallback: Counter[str] = Counter()
    notes: Counter[str] = Counter()
    written = 0
    for r in rows:
        status[r.status] += 1
        if r.status == "skipped":
            skipped[r.reason] += 1
        elif r.status in ("landmarks", "center"):
            fallback[r.reason] += 1
        notes.update(r.notes)
        written += bool(r.output)
    return {
        "processed": images,
        "written": written,
        "status": {s: status.get(s, 0) for s in STATUSES},
        "skipped": dict(sorted(skipped.items())),
        "fallback": dict(sorted(fallback.items())),
        "decode_notes": dict(sorted(notes.items())),
        **{k: v for k, v in listing_notes.items() if v},
    }


def _file_hashes(work: Path) -> dict[str, str]:
    """Write ``crops.sha256`` (each crop of ``faces.csv``, streamed) and return the
    manifest's ``files``: the hashes of ``faces.csv`` and of that sidecar."""
    from facecl.artifacts import sha256_file

    write_crop_hashes(work, (r.output for r in iter_faces_file(work / FACES_CSV) if r.output))
    return {name: sha256_file(work / name) for name in (FACES_CSV, CROPS_SHA256)}


# --------------------------------------------------------------------------- merge


def merge_shards(
    shards: Sequence[str | os.PathLike], out: str | os.PathLike, *, force: bool = False
) -> AlignSummary:
    """Merge the outputs of ``--shard 1/N .. N/N`` into one artifact equal to a single run."""
    from facecl.artifacts import StageOutput, input_ref, read_manifest

    t0 = time.perf_counter()
    if not shards:
        raise UsageError("--merge needs the shard outputs", "facecl align --merge A B ... -o OUT")
    from facecl.inspect.verify import verify_artifact

    manifests = [read_manifest(s, stage="align") for s in shards]
    for s, m in zip(shards, manifests, strict=True):
        verify_artifact(Path(s), m)  # every crop and faces.csv as the shard's manifest says
    cfg = _merged_config(shards, [m.config for m in manifests])
    if any(m.inputs != manifests[0].inputs for m in manifests):
        raise UsageError("the shards have different inputs", "merge shards of the same source")
    so = StageOutput(out, "align", cfg, [input_ref(s) for s in shards], force=force)
    if so.existing is not None:  # up to date
        return AlignSummary(str(so.path), True, False, 0, so.existing.counts, 0.0, 0.0)
    shard_rows = [read_faces(s) for s in shards]  # every row checked before anything is written
    work = so.begin()
    rows = []
    for s, these in zip(shards, shard_rows, strict=True):
        for r in these:
            if r.output:
                _link_or_copy(Path(s) / r.output, work / r.output)
        rows.extend(these)
    rows.sort(key=lambda r: (r.index, r.face_index))
    write_faces(work / FACES_CSV, rows)
    listing = {}
    for m in manifests:
        for k in ("ignored_hidden",):
            if k in m.counts:
                listing[k] = m.counts[k]
    counts = _counts(rows, sum(m.counts.get("processed", 0) for m in manifests), listing)
    _check_some_crops(work, counts)
    extra = {
        "files": _file_hashes(work),
        "merged_from": [str(Path(s).resolve()) for s in shards],
        "template": manifests[0].extra.get("template"),
        "detector": manifests[0].extra.get("detector"),
    }
    so.commit(counts, extra)
    return AlignSummary(
        str(so.path), False, False, 0, counts, round(time.perf_counter() - t0, 3), 0.0
    )


def _merged_config(shards: Sequence[str | os.PathLike], cfgs: list[dict[str, Any]]) -> AlignConfig:
    """The config of the whole run the shards are parts of; raises unless they are the
    shards 1/N .. N/N of one config."""
    if any(c.get("shard") is None for c in cfgs):
        bad = next(s for s, c in zip(shards, cfgs, strict=True) if c.get("shard") is None)
        raise UsageError(f"{bad} is not a shard (made without --shard)", "merge only shards")
    kns = [tuple(map(int, c["shard"].split("/"))) for c in cfgs]
    n = kns[0][1]
    base_cfgs = [{**c, "shard": None} for c in cfgs]
    if any(b != base_cfgs[0] for b in base_cfgs) or any(kn[1] != n for kn in kns):
        raise UsageError(
            "the shards were made with different settings", "re-run them with the same options"
        )
    ks = sorted(kn[0] for kn in kns)
    if ks != list(range(1, n + 1)):
        missing = sorted(set(range(1, n + 1)) - set(ks))
        dup = sorted(k for k, v in Counter(ks).items() if v > 1)
        raise UsageError(
            f"shards do not cover 1..{n} exactly once (missing {missing}, repeated {dup})",
            "pass every shard output once",
        )
    return config_from_dict(base_cfgs[0])


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (a copy across file systems); an existing ``dst`` stays."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def config_from_dict(d: dict[str, Any]) -> AlignConfig:
    """An AlignConfig back from a manifest's ``config`` (lists become tuples)."""
    from dataclasses import fields

    names = {f.name for f in fields(AlignConfig)}
    kw = {k: v for k, v in d.items() if k in names}
    if "thresholds" in kw:
        kw["thresholds"] = tuple(kw["thresholds"])
    try:
        return replace(AlignConfig(), **kw)
    except TypeError as e:
        raise ArtifactError(f"align config not understood: {e}", "re-run the shards") from None
