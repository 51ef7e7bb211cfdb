"""Read an embeddings artifact (``facecl embed`` output) or a plain .h5/.npz with its datasets.

The embed stage's contract (schema ``facecl.embed/1``): ``embeddings.h5`` holds

* ``embeddings``  float32 (N, D)
* ``keys``        utf-8 ``<identity>/<stem>``, e.g. ``Abel_Pacheco/Abel_Pacheco_0001``
* ``paths``       the source image paths
* ``identities``  utf-8 identity names
* ``status``      ``ok`` or the reason the image has no embedding (its row is NaN/zero)

A plain ``.h5`` or ``.npz`` with the same datasets is accepted too; only ``embeddings`` and
``keys`` are required there (identities default to the key's folder, status to ``ok``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facecl.artifacts import input_ref, read_manifest
from facecl.errors import ArtifactError, InputError

EMBEDDINGS_FILE = "embeddings.h5"
OK = "ok"


@dataclass
class Embeddings:
    """vectors: (N, D) float32; keys, paths, identities, status: N strings each."""

    vectors: np.ndarray
    keys: list[str]
    paths: list[str]
    identities: list[str]
    status: list[str]
    source: Path
    ref: dict[str, str]
    _by_key: dict[str, int] = field(default_factory=dict, repr=False)
    _by_path: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        n = len(self.vectors)
        for name in ("keys", "paths", "identities", "status"):
            if len(getattr(self, name)) != n:
                raise ArtifactError(
                    f"{self.source}: '{name}' has {len(getattr(self, name))} rows, "
                    f"'embeddings' has {n}",
                    "rebuild the embeddings with 'facecl embed --force'",
                )
        finite = np.isfinite(self.vectors).all(1) & (np.abs(self.vectors).sum(1) > 0)
        self.status = [
            s if s != OK or f else "non-finite or zero vector"
            for s, f in zip(self.status, finite, strict=True)
        ]
        self._by_key = {}
        for i, k in enumerate(self.keys):
            if k in self._by_key:
                raise ArtifactError(
                    f"{self.source}: key {k!r} appears twice", "each image needs a unique key"
                )
            self._by_key[k] = i
        self._by_path = {}
        for i, p in enumerate(self.paths):
            self._by_path.setdefault(os.path.normpath(p), i)

    @property
    def ok(self) -> np.ndarray:
        """(N,) bool: rows with a usable embedding."""
        return np.array([s == OK for s in self.status], dtype=bool)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def find(self, name: str) -> int:
        """Row of an image named by key (``Name/Name_0001``), path, or ``.../Name/Name_0001.jpg``.

        Returns -1 when it is not in the embeddings.
        """
        if name in self._by_key:
            return self._by_key[name]
        norm = os.path.normpath(name)
        if norm in self._by_path:
            return self._by_path[norm]
        p = Path(name)
        key = f"{p.parent.name}/{p.stem}" if p.parent.name else p.stem
        if key in self._by_key:
            return self._by_key[key]
        resolved = os.path.normpath(str(p.resolve())) if p.is_absolute() or p.exists() else None
        if resolved and resolved in self._by_path:
            return self._by_path[resolved]
        return -1

    def reason(self, row: int) -> str:
        """Why a row is unusable ('not in embeddings' for -1), or 'ok'."""
        return "not in embeddings" if row < 0 else self.status[row]


def _strings(values) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in np.asarray(values)]


def _from_arrays(data: dict[str, np.ndarray], source: Path, ref: dict[str, str]) -> Embeddings:
    for required in ("embeddings", "keys"):
        if required not in data:
            raise InputError(
                f"{source} has no '{required}' dataset",
                "expected datasets embeddings, keys[, paths, identities, status]",
            )
    vectors = np.asarray(data["embeddings"], dtype=np.float32)
    if vectors.ndim != 2:
        raise InputError(f"{source}: 'embeddings' has shape {vectors.shape}", "expected (N, D)")
    keys = _strings(data["keys"])
    paths = _strings(data["paths"]) if "paths" in data else list(keys)
    if "identities" in data:
        identities = _strings(data["identities"])
    else:
        identities = [k.split("/", 1)[0] if "/" in k else k.rsplit("_", 1)[0] for k in keys]
    status = _strings(data["status"]) if "status" in data else [OK] * len(keys)
    return Embeddings(vectors, keys, paths, identities, status, source, ref)


def _read_h5(path: Path) -> dict[str, np.ndarray]:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return {k: f[k][()] for k in f.keys() if isinstance(f[k], h5py.Dataset)}
    except OSError as e:
        raise InputError(f"cannot read {path}: {e}", "is it an HDF5 file?") from None


def load_embeddings(path: str | os.PathLike) -> Embeddings:
    """An embeddings artifact directory, or a plain .h5 / .npz file with the same datasets."""
    p = Path(path)
    if p.is_dir():
        read_manifest(p, stage="embed")  # checks stage, schema version and completeness
        h5 = p / EMBEDDINGS_FILE
        if not h5.is_file():
            raise ArtifactError(
                f"{p} has no {EMBEDDINGS_FILE}", "re-run 'facecl embed' with --force"
            )
        return _from_arrays(_read_h5(h5), p, input_ref(p))
    if not p.is_file():
        raise InputError(
            f"embeddings not found: {p}", "pass the output directory of 'facecl embed'"
        )
    if p.suffix == ".npz":
        try:
            with np.load(p, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read {p}: {e}", "is it a numpy .npz file?") from None
    elif p.suffix in (".h5", ".hdf5"):
        data = _read_h5(p)
    else:
        raise InputError(
            f"unsupported embeddings file {p}",
            "pass an embed artifact directory, a .h5 or a .npz",
        )
    return _from_arrays(data, p, input_ref(p))
