"""The align stage: images -> MTCNN -> 5-point similarity -> aligned crops + faces.csv.

Artifact layout (``facecl.align/1``)::

    OUT/manifest.json
    OUT/faces.csv                      one row per face (or per image without a crop)
    OUT/aligned/<identity>/<stem>.png  RGB crops, lossless

Work is done in chunks of ``chunk_size`` images of the global (sorted) listing. A finished
chunk leaves ``_parts/part-<chunk>.csv`` in ``OUT.partial/`` (written after its PNGs), so a
killed run resumes without redoing it. ``--shard K/N`` takes every N-th chunk from K-1; a
merge concatenates shard outputs in global order, which equals one run over everything.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from facecl.align.config import AlignConfig, AlignRuntime
from facecl.align.io import Decoded, Item, LandmarkTable, decode_image, list_source
from facecl.errors import ArtifactError, InputError, UsageError

STATUSES = ("ok", "landmarks", "center", "skipped")
_LM_COLS = [f"lm_{a}{i}" for i in range(1, 6) for a in "xy"]
# faces.csv columns. Contract with pack/embed: source, identity, output, status, reason,
# face_index, x1..score, lm_x1..lm_y5 keep these names; more may be added at the end.
FACES_COLUMNS = [
    "source",
    "identity",
    "output",
    "status",
    "reason",
    "face_index",
    "x1",
    "y1",
    "x2",
    "y2",
    "score",
    *_LM_COLS,
    "n_faces",
    "width",
    "height",
    "index",
    "detail",
    "notes",
]
PARTS = "_parts"
FACES_CSV = "faces.csv"


@dataclass
class FaceResult:
    """One face of one image (or one image that gave no crop)."""

    index: int  # position of the image in the input list
    source: str
    identity: str
    status: str  # ok | landmarks | center | skipped
    reason: str = ""  # "" for ok; why a fallback or a skip happened
    detail: str = ""
    face_index: int = 0  # rank of this face in the image (0 = the one kept by default)
    n_faces: int = 0  # faces detected in the image
    box: np.ndarray | None = None  # (4,) x1, y1, x2, y2 in original-image pixels
    score: float | None = None
    landmarks: np.ndarray | None = None  # (5, 2) in original-image pixels
    crop: np.ndarray | None = field(default=None, repr=False)  # (h, w, 3) uint8 RGB
    width: int = 0
    height: int = 0
    notes: tuple[str, ...] = ()
    output: str = ""  # relative path in the artifact once written
    base: str = field(default="", repr=False)  # output name without suffix, from the listing

    def row(self) -> dict[str, str]:
        r = {c: "" for c in FACES_COLUMNS}
        r.update(
            source=self.source,
            identity=self.identity,
            output=self.output,
            status=self.status,
            reason=self.reason,
            face_index=str(self.face_index),
            n_faces=str(self.n_faces),
            width=str(self.width) if self.width else "",
            height=str(self.height) if self.height else "",
            index=str(self.index),
            detail=self.detail,
            notes=" ".join(self.notes),
        )
        if self.box is not None:
            r.update(zip(("x1", "y1", "x2", "y2"), (f"{v:.2f}" for v in self.box), strict=True))
        if self.score is not None:
            r["score"] = f"{self.score:.5f}"
        if self.landmarks is not None:
            flat = np.asarray(self.landmarks, np.float64).reshape(10)
            r.update(zip(_LM_COLS, (f"{v:.3f}" for v in flat), strict=True))
        return r


# --------------------------------------------------------------------------- the aligner


class Aligner:
    """Decoded images -> :class:`FaceResult` lists, per the config's rules."""

    def __init__(
        self,
        cfg: AlignConfig,
        runtime: AlignRuntime | None = None,
        landmarks: LandmarkTable | None = None,
        detector: Any = None,
    ):
        from facecl.align.transform import parse_size, template_for

        self.cfg = cfg
        self.runtime = runtime or AlignRuntime()
        self.landmarks = landmarks
        self.hw = parse_size(cfg.size)
        self.template = template_for(cfg.size)
        self._detector = detector

    @property
    def detector(self):
        if self._detector is None:
            from facecl.align.mtcnn import MTCNN

            self._detector = MTCNN(
                min_face=self.cfg.min_face,
                thresholds=self.cfg.thresholds,
                factor=self.cfg.factor,
                device=self.runtime.torch_device(),
                max_side=self.cfg.max_side,
            )
        return self._detector

    def align(self, items: list[Item], decoded: list[Decoded]) -> list[list[FaceResult]]:
        """Detect (in batches of ``runtime.batch_size``) and align; one list per item."""
        todo = [
            i
            for i, d in enumerate(decoded)
            if d.image is not None and min(d.image.shape[:2]) >= self.cfg.min_face
        ]
        dets: dict[int, Any] = {}
        bs = self.runtime.batch_size
        for s in range(0, len(todo), bs):
            idx = todo[s : s + bs]
            for i, d in zip(
                idx, self.detector.detect([decoded[i].image for i in idx]), strict=True
            ):
                dets[i] = d
        return [
            self._results(it, dec, dets.get(i))
            for i, (it, dec) in enumerate(zip(items, decoded, strict=True))
        ]

    def _results(self, item: Item, dec: Decoded, det: Any) -> list[FaceResult]:
        from facecl.align.select import rank_faces
        from facecl.align.transform import center_landmarks, estimate_transform, warp

        base = dict(
            index=item.index,
            source=item.source,
            identity=item.identity,
            base=item.base,
            width=dec.width,
            height=dec.height,
            notes=dec.notes,
        )
        if dec.image is None:
            return [FaceResult(status="skipped", reason=dec.reason, detail=dec.detail, **base)]
        img = dec.image
        sx, sy = dec.scale

        def crop(lm_dec: np.ndarray) -> np.ndarray:
            return warp(img, estimate_transform(lm_dec, self.template), self.hw)

        if det is not None and len(det):
            order = rank_faces(det.boxes, *img.shape[:2])
            if not self.cfg.all_faces:
                order = order[:1]
            full = det if (sx, sy) == (1.0, 1.0) else det.scaled(sx, sy)
            out = []
            for k, j in enumerate(order):
                # rounded as faces.csv writes them: a crop can be re-made from the CSV exactly
                lm = _round_lm(det.landmarks[j])
                out.append(
                    FaceResult(
                        status="ok",
                        face_index=k,
                        n_faces=len(det),
                        box=full.boxes[j],
                        score=float(det.scores[j]),
                        landmarks=lm if (sx, sy) == (1.0, 1.0) else _to_original(lm, sx, sy),
                        crop=crop(lm),
                        **base,
                    )
                )
            return out
        reason = "too_small" if min(img.shape[:2]) < self.cfg.min_face else "no_face"
        why = (
            f"{img.shape[1]}x{img.shape[0]} px is below --min-face {self.cfg.min_face:g}"
            if reason == "too_small"
            else "no face detected"
        )
        if self.cfg.on_miss == "center":
            lm = center_landmarks(
                img.shape[0], img.shape[1], self.cfg.size, self.cfg.center_fraction
            )
            return [
                FaceResult(
                    status="center",
                    reason=reason,
                    detail=f"{why}; fixed centre crop",
                    landmarks=_to_original(lm, sx, sy),
                    crop=crop(lm),
                    **base,
                )
            ]
        if self.cfg.on_miss == "landmarks":
            given = self.landmarks.get(item) if self.landmarks is not None else None
            if given is not None:
                return [
                    FaceResult(
                        status="landmarks",
                        reason=reason,
                        detail=f"{why}; provided landmarks used",
                        landmarks=np.asarray(given, np.float64),
                        crop=crop(_to_decoded(given, sx, sy)),
                        **base,
                    )
                ]
            why += "; no provided landmarks for it"
        return [FaceResult(status="skipped", reason=reason, detail=why, **base)]


def _round_lm(pts: np.ndarray) -> np.ndarray:
    """(5, 2) float64 rounded to the 1/1000 px that faces.csv keeps."""
    return np.round(np.asarray(pts, np.float64), 3)


def _to_original(pts: np.ndarray, sx: float, sy: float) -> np.ndarray:
    return (np.asarray(pts, np.float64) + 0.5) * [sx, sy] - 0.5


def _to_decoded(pts: np.ndarray, sx: float, sy: float) -> np.ndarray:
    return (np.asarray(pts, np.float64) + 0.5) / [sx, sy] - 0.5


def decode_item(item: Item, cfg: AlignConfig) -> Decoded:
    if item.problem:
        return Decoded(None, item.problem, item.detail)
    return decode_image(item.path, cfg.max_pixels)


# Decoded pixels held in flight (look-ahead plus the batch being detected): bounds memory
# for datasets of large photos; small images still get full batches.
PIXEL_BUDGET = 64_000_000


def stream_align(
    keyed_items: Iterable[tuple[Any, Item]],
    aligner: Aligner,
    pool: ThreadPoolExecutor,
) -> Iterator[tuple[Any, list[Item], list[list[FaceResult]]]]:
    """Decode (in ``pool``, ahead of the detector) and align, batch by batch.

    ``keyed_items``: (key, item) pairs; a batch never mixes keys (the stage uses the chunk
    number). Yields (key, items, results per item). Batches hold at most
    ``runtime.batch_size`` images and about ``PIXEL_BUDGET`` decoded pixels; so does the
    look-ahead, so memory stays bounded whatever the image sizes.
    """
    cfg, bs = aligner.cfg, aligner.runtime.batch_size
    source = iter(keyed_items)
    ahead: deque[tuple[Any, Item, Any]] = deque()
    avg_px = 150.0 * 150.0

    def fill() -> None:
        limit = int(max(2, min(bs, PIXEL_BUDGET // max(avg_px, 1.0))))
        while len(ahead) < limit:
            nxt = next(source, None)
            if nxt is None:
                return
            ahead.append((nxt[0], nxt[1], pool.submit(decode_item, nxt[1], cfg)))

    fill()
    key, items, decs, px = None, [], [], 0
    seen_px, seen_n = 0.0, 0
    while ahead or items:
        if ahead and (not items or ahead[0][0] == key) and len(items) < bs and px < PIXEL_BUDGET:
            k, item, fut = ahead.popleft()
            dec = fut.result()
            n_px = dec.image.shape[0] * dec.image.shape[1] if dec.image is not None else 0
            seen_px, seen_n = seen_px + n_px, seen_n + 1
            avg_px = seen_px / seen_n
            key = k
            items.append(item)
            decs.append(dec)
            px += n_px
            fill()
            continue
        yield key, items, aligner.align(items, decs)
        items, decs, px = [], [], 0


def align_images(
    paths: list[Path],
    cfg: AlignConfig | None = None,
    runtime: AlignRuntime | None = None,
    detector: Any = None,
) -> list[FaceResult]:
    """Align raw images in memory (no artifact): for the embed stage and notebooks.

    Returns the results in input order: one per path (``crop`` None when skipped), or with
    ``cfg.all_faces`` one per face; ``FaceResult.index`` is the position in ``paths``.
    ``on_miss="landmarks"`` needs the stage; here it behaves as ``skip``.
    """
    cfg = cfg or AlignConfig()
    runtime = runtime or AlignRuntime()
    items = [
        Item(i, str(p), Path(p), Path(p).parent.name, Path(p).stem) for i, p in enumerate(paths)
    ]
    aligner = Aligner(cfg, runtime, None, detector)
    out: list[FaceResult] = []
    with ThreadPoolExecutor(runtime.workers) as pool:
        for _, _, results in stream_align(((0, it) for it in items), aligner, pool):
            out.extend(r for rs in results for r in rs)
    return out


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
    from facecl.artifacts import StageOutput, atomic_write_text, input_ref

    runtime = runtime or AlignRuntime()
    source = Path(source)
    t0 = time.perf_counter()
    if cfg.on_miss == "landmarks" and landmarks is None:
        raise UsageError("--on-miss landmarks needs --landmarks FILE", "or use --on-miss skip")
    if landmarks is not None and cfg.on_miss != "landmarks":
        raise UsageError("--landmarks is only used with --on-miss landmarks", "add it or drop it")
    table = LandmarkTable.read(Path(landmarks)) if landmarks is not None else None
    items, listing_notes = list_source(source)
    if not items:
        raise InputError(
            f"no images found in {source}",
            "expected ROOT/<identity>/<image> files or a list of '<path> <identity>' lines",
        )
    inputs = [input_ref(source)] + ([input_ref(landmarks)] if landmarks is not None else [])
    so = StageOutput(out, "align", cfg, inputs, force=force)
    if so.up_to_date:
        m = so.existing
        return AlignSummary(str(so.path), True, False, 0, m.counts, 0.0, 0.0)
    work = so.begin()
    parts = work / PARTS
    parts.mkdir(exist_ok=True)
    mine = _chunks(len(items), cfg)
    total = sum(len(items[c * cfg.chunk_size : (c + 1) * cfg.chunk_size]) for c in mine)
    finished = (work / FACES_CSV).is_file()  # killed between writing faces.csv and commit
    done = {c for c in mine if (parts / _part_name(c)).is_file()}
    todo = [] if finished else [c for c in mine if c not in done]
    n_done = sum(len(items[c * cfg.chunk_size : (c + 1) * cfg.chunk_size]) for c in done)
    aligner = Aligner(cfg, runtime, table, detector)
    device = ""
    if todo:
        device = str(aligner.detector.device)
    processed_now = 0
    if on_progress:
        on_progress(n_done if not finished else total, total)
    with ThreadPoolExecutor(runtime.workers) as pool:
        keyed = (
            (c, it) for c in todo for it in items[c * cfg.chunk_size : (c + 1) * cfg.chunk_size]
        )
        rows: list[dict[str, str]] = []
        left = {c: len(items[c * cfg.chunk_size : (c + 1) * cfg.chunk_size]) for c in todo}
        for c, batch, results in stream_align(keyed, aligner, pool):
            rows += _write_crops(work, results, cfg, pool)  # PNGs are on disk when it returns
            left[c] -= len(batch)
            processed_now += len(batch)
            if left[c] == 0:  # chunk complete: record it (atomically) so a resume skips it
                atomic_write_text(parts / _part_name(c), _csv_text(rows))
                rows = []
            if on_progress:
                on_progress(n_done + processed_now, total)

    if not finished:
        lines = []
        for c in mine:
            with open(parts / _part_name(c), newline="") as f:
                lines.extend(csv.DictReader(f))
        atomic_write_text(work / FACES_CSV, _csv_text(lines))
    shutil.rmtree(parts, ignore_errors=True)
    rows = _read_rows(work / FACES_CSV)
    counts = _counts(rows, total, listing_notes)
    extra = {
        "files": _file_hashes(work, rows),
        "runtime": asdict(runtime),
        "device": device,
        "n_items_listed": len(items),
        "chunks": len(mine),
        "template": aligner.template.tolist(),
        "detector": "facecl MTCNN (Zhang et al. 2016), weights from facenet-pytorch 2.6.0",
    }
    so.commit(counts, extra)
    elapsed = time.perf_counter() - t0
    return AlignSummary(
        str(so.path),
        False,
        so.resumed,
        len(done),
        counts,
        round(elapsed, 3),
        round(processed_now / elapsed, 2) if elapsed > 0 else 0.0,
        device,
    )


def _part_name(c: int) -> str:
    return f"part-{c:07d}.csv"


def _write_crops(
    work: Path, results: list[list[FaceResult]], cfg: AlignConfig, pool: ThreadPoolExecutor
) -> list[dict[str, str]]:
    """Name and write the crops (PNG, in parallel) and return the faces.csv rows."""
    rows, jobs = [], []
    for rs in results:
        for r in rs:
            if r.crop is not None:
                base = _base_of(r, cfg)
                r.output = f"aligned/{base}.png"
                jobs.append(pool.submit(_write_png, work / r.output, r.crop))
            rows.append(r.row())
    for j in jobs:
        j.result()
    return rows


def _base_of(r: FaceResult, cfg: AlignConfig) -> str:
    return f"{r.base}.face{r.face_index}" if cfg.all_faces else r.base


def _write_png(path: Path, rgb: np.ndarray) -> None:
    import cv2

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise OSError(f"PNG encoding failed for {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buf.tobytes())
    os.replace(tmp, path)


def _csv_text(rows: Iterable[dict[str, str]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FACES_COLUMNS, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()


def _read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_faces(artifact: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of an align artifact's faces.csv (after checking its manifest)."""
    from facecl.artifacts import read_manifest

    read_manifest(artifact, stage="align")
    return _read_rows(Path(artifact) / FACES_CSV)


def _counts(
    rows: list[dict[str, str]], images: int, listing_notes: dict[str, int]
) -> dict[str, Any]:
    status = Counter(r["status"] for r in rows)
    skipped = Counter(r["reason"] for r in rows if r["status"] == "skipped")
    fallback = Counter(r["reason"] for r in rows if r["status"] in ("landmarks", "center"))
    notes = Counter(n for r in rows for n in r["notes"].split())
    return {
        "processed": images,
        "written": sum(1 for r in rows if r["output"]),
        "status": {s: status.get(s, 0) for s in STATUSES},
        "skipped": dict(sorted(skipped.items())),
        "fallback": dict(sorted(fallback.items())),
        "decode_notes": dict(sorted(notes.items())),
        **{k: v for k, v in listing_notes.items() if v},
    }


def _file_hashes(work: Path, rows: list[dict[str, str]]) -> dict[str, str]:
    from facecl.artifacts import sha256_file

    files = {FACES_CSV: sha256_file(work / FACES_CSV)}
    for r in rows:
        if r["output"]:
            files[r["output"]] = sha256_file(work / r["output"])
    return files


# --------------------------------------------------------------------------- merge


def merge_shards(
    shards: list[str | os.PathLike], out: str | os.PathLike, *, force: bool = False
) -> AlignSummary:
    """Merge the outputs of ``--shard 1/N .. N/N`` into one artifact equal to a single run."""
    from facecl.artifacts import StageOutput, atomic_write_text, input_ref, read_manifest

    t0 = time.perf_counter()
    if not shards:
        raise UsageError("--merge needs the shard outputs", "facecl align --merge A B ... -o OUT")
    manifests = [read_manifest(s, stage="align") for s in shards]
    cfgs = [m.config for m in manifests]
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
    if any(m.inputs != manifests[0].inputs for m in manifests):
        raise UsageError("the shards have different inputs", "merge shards of the same source")
    ks = sorted(kn[0] for kn in kns)
    if ks != list(range(1, n + 1)):
        missing = sorted(set(range(1, n + 1)) - set(ks))
        dup = sorted(k for k, v in Counter(ks).items() if v > 1)
        raise UsageError(
            f"shards do not cover 1..{n} exactly once (missing {missing}, repeated {dup})",
            "pass every shard output once",
        )
    cfg = config_from_dict(base_cfgs[0])
    so = StageOutput(out, "align", cfg, [input_ref(s) for s in shards], force=force)
    if so.up_to_date:
        return AlignSummary(str(so.path), True, False, 0, so.existing.counts, 0.0, 0.0)
    work = so.begin()
    rows = []
    for s in shards:
        shard_rows = _read_rows(Path(s) / FACES_CSV)
        for r in shard_rows:
            if r["output"]:
                dst = work / r["output"]
                dst.parent.mkdir(parents=True, exist_ok=True)
                if not dst.exists():
                    try:
                        os.link(Path(s) / r["output"], dst)
                    except OSError:
                        shutil.copyfile(Path(s) / r["output"], dst)
        rows.extend(shard_rows)
    rows.sort(key=lambda r: (int(r["index"]), int(r["face_index"])))
    atomic_write_text(work / FACES_CSV, _csv_text(rows))
    listing = {}
    for m in manifests:
        for k in ("ignored_hidden",):
            if k in m.counts:
                listing[k] = m.counts[k]
    counts = _counts(rows, sum(m.counts.get("processed", 0) for m in manifests), listing)
    extra = {
        "files": _file_hashes(work, rows),
        "merged_from": [str(Path(s).resolve()) for s in shards],
        "template": manifests[0].extra.get("template"),
        "detector": manifests[0].extra.get("detector"),
    }
    so.commit(counts, extra)
    return AlignSummary(
        str(so.path), False, False, 0, counts, round(time.perf_counter() - t0, 3), 0.0
    )


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
