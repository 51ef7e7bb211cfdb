"""The in-memory aligner: decoded images -> MTCNN -> 5-point similarity -> crops in memory.

:class:`Aligner` turns decoded images into :class:`FaceResult` lists (one per image, crop
included) by the config's rules; :func:`stream_align` feeds it batches decoded ahead in a
thread pool with bounded memory; :func:`align_images` is the whole path for a list of photos
without an artifact (``facecl embed`` of raw photos, notebooks). The align stage
(``facecl.align.stage``) writes the same results as an artifact.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facecl.align.artifact import FaceRow
from facecl.align.config import AlignConfig, AlignRuntime
from facecl.align.io import Decoded, Item, LandmarkTable, decode_image


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

    def face_row(self) -> FaceRow:
        """The result as a ``faces.csv`` row."""
        box = None
        if self.box is not None:
            x1, y1, x2, y2 = (float(v) for v in self.box)
            box = (x1, y1, x2, y2)
        lm = None
        if self.landmarks is not None:
            pts = np.asarray(self.landmarks, np.float64).reshape(5, 2)
            lm = tuple((float(x), float(y)) for x, y in pts)
        return FaceRow(
            source=self.source,
            identity=self.identity,
            output=self.output,
            status=self.status,
            reason=self.reason,
            face_index=self.face_index,
            box=box,
            score=None if self.score is None else float(self.score),
            landmarks=lm,
            n_faces=self.n_faces,
            width=self.width,
            height=self.height,
            index=self.index,
            detail=self.detail,
            notes=self.notes,
        )


class Aligner:
    """Decoded images -> :class:`FaceResult` lists, per the config's rules."""

    def __init__(
        self,
        cfg: AlignConfig,
        runtime: AlignRuntime | None = None,
        landmarks: LandmarkTable | None = None,
        detector: Any = None,
    ):
        from facecl.align.transform import parse_size

        self.cfg = cfg
        self.runtime = runtime or AlignRuntime()
        self.landmarks = landmarks
        self.hw = parse_size(cfg.size)
        self._detector = detector

    @property
    def detector(self) -> Any:
        if self._detector is None:
            from facecl.align.mtcnn import MTCNN

            self._detector = MTCNN(
                min_face=self.cfg.min_face,
                min_face_fraction=self.cfg.min_face_fraction,
                thresholds=self.cfg.thresholds,
                factor=self.cfg.factor,
                device=self.runtime.torch_device(),
                max_side=self.cfg.max_side,
                backend=self.runtime.detector_backend,
            )
        return self._detector

    def align(self, items: list[Item], decoded: list[Decoded]) -> list[list[FaceResult]]:
        """Detect (in batches of ``runtime.batch_size``) and align; one list per item."""
        dets = self.detect(items, decoded)
        return [self.results(*a) for a in zip(items, decoded, dets, strict=True)]

    def detect(self, items: list[Item], decoded: list[Decoded]) -> list[Any]:
        """The detector's output per item (None where nothing was run: undecodable or
        smaller than ``min_face``), in batches of ``runtime.batch_size``."""
        todo = [
            i
            for i, d in enumerate(decoded)
            if d.image is not None and min(d.image.shape[:2]) >= self.cfg.min_face
        ]
        dets: list[Any] = [None] * len(decoded)
        bs = self.runtime.detector_batch()
        for s in range(0, len(todo), bs):
            idx = todo[s : s + bs]
            for i, d in zip(
                idx, self.detector.detect([decoded[i].image for i in idx]), strict=True
            ):
                dets[i] = d
        return dets

    def _crop(self, img: np.ndarray, lm_decoded: np.ndarray) -> np.ndarray:
        from facecl.align.transform import align_face

        return align_face(img, lm_decoded, self.cfg.size)

    def results(self, item: Item, dec: Decoded, det: Any) -> list[FaceResult]:
        """One item's results (crops warped here) from its detections (``detect``); safe
        to call from several threads at once."""
        base: dict[str, Any] = dict(
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
        if det is not None and len(det):
            return self._detected(dec, det, base)
        return [self._missed(item, dec, base)]

    def _detected(self, dec: Decoded, det: Any, base: dict[str, Any]) -> list[FaceResult]:
        """One result per kept face (the central one, or all with ``all_faces``)."""
        from facecl.align.select import rank_faces

        img = dec.image
        assert img is not None
        sx, sy = dec.scale
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
                    crop=self._crop(img, lm),
                    **base,
                )
            )
        return out

    def _missed(self, item: Item, dec: Decoded, base: dict[str, Any]) -> FaceResult:
        """No face found: the ``on_miss`` fallback crop, or a skip with the reason."""
        from facecl.align.transform import center_landmarks

        img = dec.image
        assert img is not None
        sx, sy = dec.scale
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
            return FaceResult(
                status="center",
                reason=reason,
                detail=f"{why}; fixed centre crop",
                landmarks=_to_original(lm, sx, sy),
                crop=self._crop(img, lm),
                **base,
            )
        if self.cfg.on_miss == "landmarks":
            given = self.landmarks.get(item) if self.landmarks is not None else None
            if given is not None:
                return FaceResult(
                    status="landmarks",
                    reason=reason,
                    detail=f"{why}; provided landmarks used",
                    landmarks=np.asarray(given, np.float64),
                    crop=self._crop(img, _to_decoded(given, sx, sy)),
                    **base,
                )
            why += "; no provided landmarks for it"
        return FaceResult(status="skipped", reason=reason, detail=why, **base)


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
    for key, items, decs in stream_decoded(keyed_items, aligner, pool):
        yield key, items, aligner.align(items, decs)


def stream_detect(
    keyed_items: Iterable[tuple[Any, Item]],
    aligner: Aligner,
    pool: ThreadPoolExecutor,
) -> Iterator[tuple[Any, list[Item], list[Decoded], list[Any]]]:
    """As :func:`stream_align`, but stops after detection: yields (key, items, decoded,
    detections) so the caller can warp and write (``Aligner.results``) elsewhere, e.g. in
    threads behind the detector."""
    for key, items, decs in stream_decoded(keyed_items, aligner, pool):
        yield key, items, decs, aligner.detect(items, decs)


def stream_decoded(
    keyed_items: Iterable[tuple[Any, Item]],
    aligner: Aligner,
    pool: ThreadPoolExecutor,
) -> Iterator[tuple[Any, list[Item], list[Decoded]]]:
    """The batches of :func:`stream_align`, decoded in ``pool`` ahead of their use."""
    cfg, bs = aligner.cfg, aligner.runtime.detector_batch()
    source = iter(keyed_items)
    ahead: deque[tuple[Any, Item, Future[Decoded]]] = deque()
    avg_px = 150.0 * 150.0

    def fill() -> None:
        limit = int(max(2, min(bs, PIXEL_BUDGET // max(avg_px, 1.0))))
        while len(ahead) < limit:
            nxt = next(source, None)
            if nxt is None:
                return
            ahead.append((nxt[0], nxt[1], pool.submit(decode_item, nxt[1], cfg)))

    fill()
    key: Any = None
    items: list[Item] = []
    decs: list[Decoded] = []
    px = 0
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
        yield key, items, decs
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
