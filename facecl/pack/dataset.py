"""Reading a pack: the training ``ShardDataset``, a class-balanced sampler, and a plain
sequential iterator for the embed stage.

``ShardDataset`` opens one read-only HDF5 handle per shard per process, lazily, on first
access: a handle is never shared across ``fork`` (a DataLoader worker that inherits the
dataset sees a different pid and opens its own). At most ``max_open`` handles
(``MAX_OPEN_SHARDS`` by default) stay open per process; past that the least recently used
one is closed, so a pack of thousands of shards never runs into the open-file limit.
Randomness (flip, albumentations) is drawn from torch's RNG, which DataLoader seeds
differently in each worker.
"""

from __future__ import annotations

import difflib
import os
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from facecl.artifacts import read_manifest, safe_relpath
from facecl.errors import ConfigError, IntegrityError, UnknownNameError
from facecl.models.input_spec import InputSpec, normalise
from facecl.pack.artifact import CLASSES, PackClass, manifest_input_spec, read_classes
from facecl.pack.shards import decompress_chunk, open_shard, verify_shard

SPLIT_CHOICES = ("train", "val", "all")
MAX_OPEN_SHARDS = 64
"""Shard files a ShardDataset keeps open per process (least recently used closed first)."""

# A transform spec: an albumentations name, {"name": ..., **kwargs}, or (name, kwargs).
TransformSpec = str | Mapping[str, Any] | tuple[str, Mapping[str, Any]]


def _shards(root: Path, split: str) -> tuple[Any, list[dict[str, Any]]]:
    if split not in SPLIT_CHOICES:
        raise ConfigError(f"unknown split {split!r}", f"use one of {', '.join(SPLIT_CHOICES)}")
    m = read_manifest(root, stage="pack")
    shards = [s for s in m.extra["shards"] if split == "all" or s["split"] == split]
    for s in shards:
        if not safe_relpath(s.get("path")):
            raise IntegrityError(
                f"{root}: manifest names the shard {s.get('path')!r}, outside the pack",
                "the manifest was edited; rebuild the pack with --force",
            )
    return m, shards


def _verify(root: Path, manifest: Any, shards: list[dict[str, Any]]) -> None:
    """Check each shard against its sha256 in the manifest (shards without one: none)."""
    files = manifest.extra.get("files", {})
    for s in shards:
        if files.get(s["path"]):
            verify_shard(root / s["path"], files[s["path"]])


def build_augment(
    spec: TransformSpec | Sequence[TransformSpec], size: tuple[int, int] = (112, 96)
) -> Any:
    """An ``albumentations.Compose`` from presets, names and keyword arguments, e.g.
    ``["light", "GaussNoise(p=0.2)", {"name": "CLAHE", "p": 0.1}]`` (the presets and the
    call syntax: :mod:`facecl.pack.augment`; ``size`` (H, W) sizes the presets' crops).

    The pipeline sees uint8 (H, W, 3) RGB and must return the same kind of image; the
    dataset normalises afterwards.
    """
    import albumentations as A

    from facecl.pack.augment import expand

    items = [spec] if isinstance(spec, (str, Mapping, tuple)) else list(spec)
    items = expand(items, size)
    transforms = []
    valid = sorted(
        n
        for n in dir(A)
        if isinstance(getattr(A, n), type) and issubclass(getattr(A, n), A.BasicTransform)
    )
    for item in items:
        if isinstance(item, str):
            name, kwargs = item, {}
        elif isinstance(item, Mapping):
            kwargs = dict(item)
            name = kwargs.pop("name", None)
        else:
            name, kwargs = item[0], dict(item[1])
        if name not in valid:
            close = difflib.get_close_matches(str(name), valid, n=1)
            raise UnknownNameError(
                f"unknown albumentations transform {name!r}",
                (f"did you mean {close[0]!r}? " if close else "")
                + "see https://albumentations.ai/docs for the transform names",
            )
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                transforms.append(getattr(A, name)(**kwargs))
            for w in caught:  # albumentations only warns about unknown arguments
                if "not valid" in str(w.message):
                    raise ValueError(str(w.message))
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        except (TypeError, ValueError) as e:
            raise ConfigError(
                f"bad arguments for {name}: {e}", "check the transform's docs"
            ) from None
    return A.Compose(transforms)


class _Augment:
    """Adapts a transform (albumentations or a plain ``fn(image) -> image``) to uint8 HWC."""

    def __init__(self, transform: Any, size: tuple[int, int] = (112, 96)):
        import albumentations as A

        if isinstance(transform, (str, Mapping, tuple, list)):
            transform = build_augment(transform, size)
        self.transform = transform
        self.is_album = isinstance(transform, (A.BaseCompose, A.BasicTransform))
        self._seeded_pid: int | None = None

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if not self.is_album:
            return np.asarray(self.transform(image))
        if self._seeded_pid != os.getpid() and hasattr(self.transform, "set_random_seed"):
            # albumentations keeps its own RNG: derive it from torch's per-worker seed.
            self.transform.set_random_seed(torch.initial_seed() % 2**32)
            self._seeded_pid = os.getpid()
        return self.transform(image=image)["image"]


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) RGB -> float32 (3, H, W), normalised as every backbone's input
    (:func:`facecl.models.input_spec.normalise`)."""
    return torch.from_numpy(normalise(image))


def _split_counts(
    classes: Sequence[PackClass], split: str, labels: np.ndarray, root: Path
) -> np.ndarray:
    """Images per class of ``split`` from the class map (``classes.json``), checked against
    the shards' labels: (C,) int64 in label order."""
    train, val = split in ("train", "all"), split in ("val", "all")
    counts = np.asarray([c.train * train + c.val * val for c in classes], np.int64)
    held = np.bincount(labels, minlength=len(classes))
    if held.shape != counts.shape or not np.array_equal(held, counts):
        bad = int(np.flatnonzero(held[: len(counts)] != counts[: len(held)])[0])
        raise IntegrityError(
            f"{root / CLASSES}: label {bad} has {counts[bad]} {split} images listed but "
            f"{held[bad]} in the shards",
            "rebuild the pack with 'facecl pack --force'",
        )
    return counts


class ShardDataset(Dataset):
    """A pack artifact as a torch Dataset of ``(image (3, H, W) float32, label int)``.

    ``split``: ``train``, ``val`` or ``all``. ``flip``: random horizontal flip, p = 0.5.
    ``transform``: optional augmentation before normalisation: an albumentations transform,
    a spec for :func:`build_augment`, or any ``fn(uint8 HWC) -> uint8 HWC``.
    ``verify``: check every shard's sha256 against the manifest once, here (before any
    worker forks); see docs/benchmarks.md for what it costs.
    ``max_open``: shard files kept open per process (least recently used closed first).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        split: str = "train",
        flip: bool = False,
        transform: Any = None,
        verify: bool = True,
        max_open: int = MAX_OPEN_SHARDS,
    ):
        if max_open < 1:
            raise ConfigError(f"max_open must be >= 1, got {max_open}", "e.g. 64")
        self.root = Path(path)
        self.max_open = max_open
        self.split = split
        self.flip = flip
        manifest, shards = _shards(self.root, split)
        if verify:
            _verify(self.root, manifest, shards)
        classes = read_classes(self.root)
        self.class_names: list[str] = [c.name for c in classes]
        self.num_classes = len(self.class_names)
        h, w = manifest.extra["image_size"]
        self.image_size: tuple[int, int] = (int(h), int(w))
        self._input_spec = manifest_input_spec(manifest)
        self._files = [self.root / s["path"] for s in shards]
        labels = []
        for s, f in zip(shards, self._files, strict=True):
            with open_shard(f) as h5:
                n = h5["images"].shape[0]
                if n != s["images"]:
                    raise IntegrityError(
                        f"{f} holds {n} images, the manifest says {s['images']}",
                        "rebuild the pack with --force",
                    )
                labels.append(h5["labels"][:].astype(np.int64))
        self.labels: np.ndarray = np.concatenate(labels) if labels else np.zeros(0, np.int64)
        self.class_counts = _split_counts(classes, split, self.labels, self.root)
        self._offsets = np.cumsum([0] + [s["images"] for s in shards])
        if isinstance(transform, (str, list)):  # presets expanded: "none" adds no pipeline
            from facecl.pack.augment import expand

            transform = expand([transform] if isinstance(transform, str) else transform,
                               self.image_size) or None  # fmt: skip
        self.transform = _Augment(transform, self.image_size) if transform is not None else None
        self._pid: int | None = None
        self._handles: OrderedDict[int, tuple[Any, str]] = OrderedDict()

    @property
    def input_spec(self) -> InputSpec:
        """The crop geometry (size, align template) and normalisation of the images."""
        return self._input_spec

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"], state["_pid"] = OrderedDict(), None
        return state

    def _locate(self, index: int) -> tuple[int, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        shard = int(np.searchsorted(self._offsets, index, side="right")) - 1
        return shard, index - int(self._offsets[shard])

    def _images(self, shard: int) -> tuple[Any, str]:
        """The shard's ``images`` dataset in this process, and how to read one chunk."""
        pid = os.getpid()
        if self._pid != pid:  # new process (forked worker): never reuse the parent's handles
            self._handles, self._pid = OrderedDict(), pid
        entry = self._handles.get(shard)
        if entry is not None:
            self._handles.move_to_end(shard)
        else:
            while len(self._handles) >= self.max_open:
                self._handles.popitem(last=False)[1][0].file.close()
            ds = open_shard(self._files[shard])["images"]
            one_chunk = ds.chunks == (1, *ds.shape[1:])
            mode = {None: "raw", "gzip": "zlib"}.get(ds.compression) if one_chunk else None
            if ds.shuffle or ds.fletcher32 or ds.scaleoffset is not None:
                mode = None
            entry = self._handles[shard] = (ds, mode or "h5py")
        return entry

    def _read_into(self, index: int, out: np.ndarray) -> None:
        """Copy image ``index`` into ``out``, uint8 (H, W, 3)."""
        shard, row = self._locate(index)
        ds, mode = self._images(shard)
        if mode == "h5py":  # e.g. lzf: let HDF5 decode the chunk
            try:
                ds.read_direct(out, source_sel=np.s_[row])
            except OSError as e:
                raise IntegrityError(
                    f"shard {self._files[shard]}: image {row} unreadable "
                    f"({str(e).splitlines()[0]})",
                    "rebuild the pack with 'facecl pack --force'",
                ) from None
            return
        # One image per chunk: read the chunk's bytes directly, skipping HDF5's selection
        # machinery (about 6x faster per image).
        mask, buf = ds.id.read_direct_chunk((row, 0, 0, 0))
        if mode == "zlib" and mask == 0:  # mask != 0: HDF5 stored this chunk unfiltered
            buf = decompress_chunk(buf, self._files[shard], row)
        out[...] = np.frombuffer(buf, np.uint8).reshape(out.shape)

    def image(self, index: int) -> np.ndarray:
        """The stored crop, uint8 (H, W, 3) RGB, without augmentation."""
        out = np.empty((*self.image_size, 3), np.uint8)
        self._read_into(index, out)
        return out

    def key(self, index: int) -> str:
        """The image's key, "identity/stem"."""
        shard, row = self._locate(index)
        return self._images(shard)[0].file["paths"].asstr()[row]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img = self.image(index)  # (H, W, 3) uint8
        if self.transform is not None:
            img = self.transform(img)
        if self.flip and torch.rand(()) < 0.5:
            img = img[:, ::-1]
        return to_tensor(img), int(self.labels[index])  # (3, H, W) float32

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        """A whole batch at once (DataLoader calls this): one uint8 buffer, one vectorised
        flip and normalisation. Same samples and distribution as ``__getitem__``."""
        if self.transform is not None:  # a transform may change the image size
            return [self[i] for i in indices]
        n = len(indices)
        img = np.empty((*self.image_size, 3), np.uint8)  # (H, W, 3)
        batch = np.empty((n, 3, *self.image_size), np.uint8)  # (B, 3, H, W)
        flip = (torch.rand(n) < 0.5).tolist() if self.flip else [False] * n
        for j, i in enumerate(indices):
            self._read_into(int(i), img)
            chw = img.transpose(2, 0, 1)  # the flip rides along with the transposing copy
            batch[j] = chw[:, :, ::-1] if flip[j] else chw
        # normalise takes (..., H, W, C): hand it an HWC view of the CHW buffer, which it turns
        # back into CHW, so its one fused pass reads memory in order
        x = torch.from_numpy(normalise(batch.transpose(0, 2, 3, 1)))  # (B, 3, H, W) float32
        return [(x[j], int(self.labels[i])) for j, i in enumerate(indices)]

    def close(self) -> None:
        for ds, _ in self._handles.values():
            ds.file.close()
        self._handles = OrderedDict()


def iter_pack_images(
    path: str | os.PathLike, split: str = "all", batch: int = 256
) -> Iterator[tuple[str, np.ndarray, int]]:
    """Every packed image in shard order as ``(key, uint8 (H, W, 3) RGB, label)``."""
    root = Path(path)
    manifest, shards = _shards(root, split)
    for s in shards:
        _verify(root, manifest, [s])  # each shard checked when it is opened
        with open_shard(root / s["path"]) as h5:
            images, labels, keys = h5["images"], h5["labels"], h5["paths"].asstr()
            for start in range(0, images.shape[0], batch):
                stop = min(start + batch, images.shape[0])
                try:
                    imgs, labs, ks = images[start:stop], labels[start:stop], keys[start:stop]
                except OSError as e:  # a chunk HDF5 cannot decode
                    raise IntegrityError(
                        f"shard {root / s['path']}: images {start}..{stop - 1} unreadable "
                        f"({str(e).splitlines()[0]})",
                        "rebuild the pack with 'facecl pack --force'",
                    ) from None
                for k, img, lab in zip(ks, imgs, labs, strict=True):
                    yield k, img, int(lab)
