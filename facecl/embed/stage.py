"""``run_embed``: a model and a set of faces -> an embeddings artifact.

The artifact's layout (file name, datasets, writer, reader) is :mod:`facecl.embed.artifact`;
its manifest's inputs are the model reference (:mod:`facecl.embed.model_ref`: the train run as
an artifact, and the model file) and the input (align/pack artifact, or the photos). Raw
photos are aligned with the model's own crop geometry (its :class:`InputSpec`).

Every input item has a row; an item without a face, missing or unreadable keeps a NaN vector
and its reason in ``status``. Work is written in chunks of ``chunk_batches`` batches to
``EMB.partial/chunks/NNNNNN.npz``; a killed run started again with the same command resumes
after the last finished chunk, and the batches it computes are the same ones, so the result
is the same file as an uninterrupted run.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facecl.artifacts import (
    Manifest,
    StageOutput,
    atomic_open,
    config_dict,
    runtime_fields,
    sha256_file,
)
from facecl.columns import LazySequence
from facecl.console import console, progress
from facecl.embed.artifact import OK, STAGE, EmbeddingsWriter
from facecl.embed.backends import Backend, ModelFile, load_backend, resolve_model
from facecl.embed.config import EmbedConfig
from facecl.embed.model_ref import model_inputs
from facecl.embed.sources import Item, Source, open_source
from facecl.errors import InputError

CHUNKS = "chunks"
# Test hook: seconds to sleep after each written chunk, so a test can kill a run mid-way.
_CHUNK_DELAY_ENV = "FACECL_EMBED_CHUNK_DELAY"


@dataclass
class EmbedResult:
    path: Path
    manifest: Manifest
    up_to_date: bool
    resumed_from: int  # items already done in the .partial directory (0: fresh)
    seconds: float
    images_per_s: float

    def summary(self) -> dict[str, Any]:
        c = self.manifest.counts
        return {
            "output": str(self.path),
            "up_to_date": self.up_to_date,
            "resumed_from": self.resumed_from,
            "items": c.get("processed", 0),
            "ok": c.get("written", 0),
            "failed": c.get("failed", 0),
            "skipped": c.get("skipped", {}),
            "dim": self.manifest.extra.get("dim"),
            "fusion": self.manifest.config.get("fusion"),
            "l2": self.manifest.config.get("l2"),
            "backend": self.manifest.extra.get("backend"),
            "numeric": self.manifest.extra.get("numeric"),
            "model_sha256": self.manifest.extra.get("model_sha256"),
            "seconds": round(self.seconds, 3),
            "images_per_s": round(self.images_per_s, 1),
        }


def run_embed(
    model: str | os.PathLike,
    input_path: str | os.PathLike,
    out: str | os.PathLike,
    config: EmbedConfig,
    *,
    force: bool = False,
    show_progress: bool = True,
) -> EmbedResult:
    """Embed every face of ``input_path`` with ``model`` into the artifact ``out``.

    Raises ``InputError`` (exit 1; nothing is written) when not one item could be embedded.
    """
    t0 = time.perf_counter()
    model_file = resolve_model(model)
    # The backend first: its InputSpec decides how raw photos are aligned.
    backend = load_backend(
        model_file,
        config.fusion,
        config.l2,
        config.device,
        config.fp16,
        config.precision,
        config.memory_format,
    )
    source = open_source(input_path, config.assume_aligned, backend.spec)
    # The resolved numeric mode (device, dtype) is part of the config and the fingerprint:
    # vectors computed on another device or dtype are another artifact, never resumed into.
    fingerprinted = {**config_dict(config), "numeric": backend.numeric}
    inputs = [*model_inputs(model_file), source.ref]
    so = StageOutput(
        out,
        STAGE,
        fingerprinted,
        inputs,
        force=force,
        runtime=runtime_fields(EmbedConfig),
        verify_inputs=config.verify_inputs,
    )
    if so.up_to_date:
        assert so.existing is not None
        return EmbedResult(so.path, so.existing, True, 0, time.perf_counter() - t0, 0.0)
    work = so.begin()
    chunk_dir = work / CHUNKS
    chunk_dir.mkdir(exist_ok=True)
    start_chunk = _finished_prefix(chunk_dir, len(source), config.chunk_size)
    start = min(start_chunk * config.chunk_size, len(source))
    if start:
        console.print(f"resuming {so.partial.name}: {start}/{len(source)} images already done")
    t1 = time.perf_counter()
    _embed_chunks(backend, source, chunk_dir, config, start_chunk, show_progress)
    computed_s = time.perf_counter() - t1
    counts, extra = _finish(work, chunk_dir, source, backend, config)
    manifest = so.commit(counts, extra)
    done = len(source) - start
    return EmbedResult(
        so.path,
        manifest,
        False,
        start,
        time.perf_counter() - t0,
        done / computed_s if computed_s > 0 else 0.0,
    )


# --------------------------------------------------------------------------- chunks


def _chunk_path(chunk_dir: Path, i: int) -> Path:
    return chunk_dir / f"{i:06d}.npz"


def _finished_prefix(chunk_dir: Path, n: int, chunk_size: int) -> int:
    """Number of leading chunks already on disk; any chunk after a gap is recomputed."""
    n_chunks = -(-n // chunk_size)
    i = 0
    while i < n_chunks and _chunk_path(chunk_dir, i).is_file():
        i += 1
    for stray in chunk_dir.glob("*.npz"):
        if int(stray.stem) >= i:
            stray.unlink()
    for tmp in chunk_dir.glob("*.tmp"):
        tmp.unlink()
    return i


def _save_chunk(path: Path, vectors: np.ndarray, status: list[str]) -> None:
    with atomic_open(path, "wb") as f:
        np.savez(f, embeddings=vectors, status=np.array(status, dtype=str))


def _batches(source: Source, start: int, batch_size: int) -> Iterator[list]:
    batch: list = []
    for img in source.images(start):
        batch.append(img)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _prefetch(it: Iterator, depth: int = 2) -> Iterator:
    """Run ``it`` (image decoding) in a thread, ``depth`` items ahead of the consumer."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    end = object()
    stop = threading.Event()

    def worker() -> None:
        try:
            for x in it:
                while not stop.is_set():
                    try:
                        q.put((x, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((end, None))
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
            q.put((end, e))

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    try:
        while True:
            x, err = q.get()
            if x is end:
                if err is not None:
                    raise err
                return
            yield x
    finally:
        stop.set()


def _embed_batch(backend: Backend, batch: list) -> tuple[np.ndarray, list[str]]:
    """(B,dim) float32 (NaN rows for failures) and the B statuses."""
    h, w = backend.input_size
    status: list[str] = []
    good: list[np.ndarray] = []
    for img in batch:
        if isinstance(img, str):
            status.append(img)
        elif img.shape != (h, w, 3):
            status.append(f"crop is {img.shape[0]}x{img.shape[1]}, model expects {h}x{w}")
        else:
            status.append(OK)
            good.append(img)
    vectors = np.full((len(batch), backend.dim), np.nan, dtype=np.float32)
    if good:
        feats = backend.embed(np.stack(good))  # (G,dim)
        vectors[[i for i, s in enumerate(status) if s == OK]] = feats
    return vectors, status


def _embed_chunks(
    backend: Backend,
    source: Source,
    chunk_dir: Path,
    config: EmbedConfig,
    start_chunk: int,
    show_progress: bool,
) -> None:
    n, cs, bs = len(source), config.chunk_size, config.batch_size
    start = min(start_chunk * cs, n)
    delay = float(os.environ.get(_CHUNK_DELAY_ENV, "0") or 0)
    chunk_i, vecs, stats = start_chunk, [], []
    with progress() as bar:
        task = bar.add_task(
            f"embed ({backend.name})", total=n, completed=start, unit="img", visible=show_progress
        )
        for batch in _prefetch(_batches(source, start, bs)):
            v, s = _embed_batch(backend, batch)
            vecs.append(v)
            stats.extend(s)
            bar.advance(task, len(batch))
            if len(stats) == cs:
                _save_chunk(_chunk_path(chunk_dir, chunk_i), np.concatenate(vecs), stats)
                chunk_i, vecs, stats = chunk_i + 1, [], []
                if delay:
                    time.sleep(delay)
        if stats:
            _save_chunk(_chunk_path(chunk_dir, chunk_i), np.concatenate(vecs), stats)


# --------------------------------------------------------------------------- finish


def _finish(
    work: Path, chunk_dir: Path, source: Source, backend: Backend, config: EmbedConfig
) -> tuple[dict[str, Any], dict[str, Any]]:
    n = len(source)
    with EmbeddingsWriter(work, backend.dim) as writer:
        status = _merge_chunks(chunk_dir, -(-n // config.chunk_size), writer)
        if writer.rows != n:
            raise RuntimeError(f"chunks hold {writer.rows} rows for {n} items")
        # A row that failed before loading (e.g. no face) keeps the source's reason.
        status = [
            it.status if it.status != OK else s for it, s in zip(source.items, status, strict=True)
        ]
        skipped = reason_counts(status)
        ok = n - sum(skipped.values())
        if ok == 0:
            writer.abort()
            shutil.rmtree(work)  # nothing usable: no artifact, and no partial one to resume
            raise InputError(no_face_message(n, skipped), no_face_hint(skipped, backend))
        written = writer.close(
            keys=_Field(source.items, "key"),  # each column made as it is written
            paths=_Field(source.items, "path"),
            identities=_Field(source.items, "identity"),
            status=status,
            issame=source.issame,
        )
    shutil.rmtree(chunk_dir)
    counts = {"processed": n, "written": ok, "failed": n - ok, "skipped": skipped}
    extra = {
        **backend.describe(),
        "input_kind": source.kind,
        **source.notes,
        "files": {written.name: sha256_file(written)},
    }
    return counts, extra


class _Field(LazySequence[str]):
    """One attribute of every item, read as it is iterated (no list of N strings)."""

    def __init__(self, items: Sequence[Item], name: str) -> None:
        self.items, self.name = items, name

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[str]:
        return (getattr(it, self.name) for it in self.items)

    def _item(self, i: int) -> str:
        return str(getattr(self.items[i], self.name))


def _merge_chunks(chunk_dir: Path, n_chunks: int, writer: EmbeddingsWriter) -> list[str]:
    """Append every chunk's vectors to ``writer``, one chunk in memory at a time; returns the
    rows' statuses."""
    status: list[str] = []
    for i in range(n_chunks):
        with np.load(_chunk_path(chunk_dir, i), allow_pickle=False) as z:
            writer.append(z["embeddings"])
            status.extend(OK if s == OK else str(s) for s in z["status"])
    return status


def reason_counts(status: list[str]) -> dict[str, int]:
    """How many rows failed for each reason (rows that are ``ok`` are not counted)."""
    skipped: dict[str, int] = {}
    for s in status:
        if s != OK:
            skipped[s] = skipped.get(s, 0) + 1
    return skipped


def no_face_message(n: int, skipped: dict[str, int]) -> str:
    """One line: ``no face embedded: 12 of 12 inputs failed (no face: 10; crop is ...: 2)``."""
    if n == 0:
        return "no face embedded: the input has no items"
    reasons = "; ".join(f"{r}: {c}" for r, c in sorted(skipped.items(), key=lambda kv: -kv[1]))
    return f"no face embedded: {n} of {n} inputs failed ({reasons})"


def no_face_hint(skipped: dict[str, int], backend: Backend) -> str:
    if any(r.startswith("crop is ") for r in skipped):
        return (
            f"the model takes {backend.spec.size_text} crops: align with "
            f"'facecl align --size {backend.spec.template or backend.spec.size_text}', "
            "or pass the raw photos"
        )
    return "check the input images (faces visible, files readable)"


__all__ = ["EmbedResult", "ModelFile", "run_embed", "resolve_model"]
