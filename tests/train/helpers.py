"""A small synthetic pack artifact written with the pack stage's real shard writer.

Each class is a smooth colour pattern plus noise, so a tiny net can learn it in a few steps.
Layout as ``facecl pack`` writes it: ``train/shard-NNNNN.h5``, ``classes.json``, manifest
with ``extra.shards`` and ``extra.image_size``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facecl.artifacts import StageOutput, sha256_file
from facecl.pack.artifact import CLASSES, PackClass, shard_path, write_classes
from facecl.pack.shards import ShardWriter


def synthetic_images(
    classes: int, per_class: int, size: tuple[int, int], seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, H, W, 3) images and int64 (N,) labels, class-dependent patterns."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    images, labels = [], []
    for c in range(classes):
        phase = 2 * np.pi * c / classes
        base = np.stack(
            [
                np.sin(6 * xx + phase),
                np.cos(5 * yy - phase),
                np.sin(4 * (xx + yy) + 2 * phase),
            ],
            axis=-1,
        )  # (H, W, 3) in [-1, 1]
        for _ in range(per_class):
            img = 127.5 + 90 * base + rng.normal(0, 20, base.shape)
            images.append(np.clip(img, 0, 255).astype(np.uint8))
            labels.append(c)
    return np.stack(images), np.asarray(labels, np.int64)


def make_pack(
    root: Path,
    classes: int = 4,
    per_class: int = 6,
    size: tuple[int, int] = (24, 20),
    name: str = "pack",
    shard_size: int = 10,
    seed: int = 0,
) -> Path:
    """A ``facecl.pack/1`` artifact at ``root/name`` with a train split only."""
    images, labels = synthetic_images(classes, per_class, size, seed)
    so = StageOutput(root / name, "pack", {"synthetic": True, "classes": classes, "seed": seed}, [])
    work = so.begin()
    (work / shard_path("train", 0)).parent.mkdir(exist_ok=True)
    shards, files = [], {}
    order = np.random.default_rng(seed).permutation(len(labels))
    for index, lo in enumerate(range(0, len(order), shard_size)):
        chunk = order[lo : lo + shard_size]
        rel = shard_path("train", index)
        writer = ShardWriter(work / rel, len(chunk), size, split="train", index=index)
        for i in chunk:
            key = f"id{labels[i]:03d}/img{i:04d}"
            writer.add(images[i], int(labels[i]), key, f"/synthetic/{key}.png")
        writer.close()
        shards.append({"path": rel, "split": "train", "images": len(chunk)})
        files[rel] = sha256_file(work / rel)
    write_classes(
        work, [PackClass(f"id{c:03d}", c, per_class, per_class, 0) for c in range(classes)]
    )
    files[CLASSES] = sha256_file(work / CLASSES)
    so.commit(
        {"processed": len(labels), "written": len(labels), "skipped": {}},
        {"files": files, "image_size": list(size), "shards": shards},
    )
    return root / name
