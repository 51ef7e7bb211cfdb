"""Crops warped and written behind the detector: the align stage's output side.

The main thread only decodes (ahead, in the stage's decode pool) and detects; each image's
warp + PNG encode + write is a job of a small thread pool (``cv2`` and file writes release
the GIL), so the detector never waits on the disk. Jobs finish in any order but are taken
back in listing order, so ``faces.csv`` rows, chunk part files and crops are the same bytes
as a serial run (``writers=0`` runs each job at once, on the main thread). The jobs in
flight are bounded (images and decoded pixels), so memory stays bounded too.

A job's error (a full disk, a failed encode) is raised by :meth:`CropWriter.take` on the main
thread, as if the run were serial; the chunks finished before it keep their part files.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from facecl.align.artifact import ALIGNED, FaceRow
from facecl.align.inmemory import Aligner, FaceResult
from facecl.align.io import Decoded, Item


class CropWriter:
    """Ordered, bounded warp-and-write jobs: ``submit`` per image, ``take`` the finished rows.

    ``max_images`` / ``max_pixels``: jobs in flight (their decoded images are held) before
    ``submit`` waits for the oldest one.
    """

    def __init__(
        self, work: Path, aligner: Aligner, threads: int, max_images: int, max_pixels: int
    ):
        self.work, self.aligner = work, aligner
        self.pool = ThreadPoolExecutor(threads, "facecl-write") if threads > 0 else None
        self.max_images, self.max_pixels = max(1, max_images), max_pixels
        self.pending: deque[tuple[Any, int, Future[list[FaceRow]]]] = deque()
        self.pixels = 0

    def __enter__(self) -> CropWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:  # on an error: drop the jobs not started, wait for the rest
            self.pool.shutdown(wait=True, cancel_futures=exc[0] is not None)

    def submit(self, key: Any, item: Item, dec: Decoded, det: Any) -> None:
        px = 0 if dec.image is None else int(dec.image.shape[0] * dec.image.shape[1])
        if self.pool is None:
            fut = _run_now(self._job, item, dec, det)
        else:
            fut = self.pool.submit(self._job, item, dec, det)
        self.pending.append((key, px, fut))
        self.pixels += px

    def take(self, *, wait_all: bool = False) -> Iterator[tuple[Any, list[FaceRow]]]:
        """(key, rows) of each finished image, oldest first: those already done, those
        past the bounds, or (``wait_all``) every one; raises a job's error."""
        while self.pending and (
            wait_all
            or self.pending[0][2].done()
            or len(self.pending) > self.max_images
            or self.pixels > self.max_pixels
        ):
            key, px, fut = self.pending[0]
            rows = fut.result()  # a job's error surfaces here, on the main thread
            self.pending.popleft()
            self.pixels -= px
            yield key, rows

    def _job(self, item: Item, dec: Decoded, det: Any) -> list[FaceRow]:
        rows = []
        for r in self.aligner.results(item, dec, det):
            if r.crop is not None:
                r.output = f"{ALIGNED}/{_base_of(r, self.aligner.cfg.all_faces)}.png"
                write_png(self.work / r.output, r.crop)
            rows.append(r.face_row())
        return rows


def _run_now(fn: Callable[..., list[FaceRow]], *args: Any) -> Future[list[FaceRow]]:
    """``fn(*args)`` on this thread, as a finished Future (its error kept for ``take``)."""
    fut: Future[list[FaceRow]] = Future()
    try:
        fut.set_result(fn(*args))
    except Exception as e:  # noqa: BLE001 - re-raised by take(), in listing order
        fut.set_exception(e)
    return fut


def _base_of(r: FaceResult, all_faces: bool) -> str:
    return f"{r.base}.face{r.face_index}" if all_faces else r.base


def write_png(path: Path, rgb: np.ndarray) -> None:
    """``rgb`` (H, W, 3) uint8 as a PNG at ``path``, atomically (a temp file, then rename)."""
    import cv2

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise OSError(f"PNG encoding failed for {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buf.tobytes())
    os.replace(tmp, path)
