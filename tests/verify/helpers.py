"""Build embed-stage artifacts for verify tests with the embed stage's own writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facecl.artifacts import StageOutput, sha256_file
from facecl.embed.artifact import OK, STAGE, write_embeddings
from facecl.verify.protocols import read_lfw_pairs


def make_embed_artifact(
    tmp_path: Path,
    keys: list[str],
    vectors: np.ndarray,
    status: list[str] | None = None,
    name: str = "emb",
    paths: list[str] | None = None,
    issame: np.ndarray | None = None,
    config: dict | None = None,
) -> Path:
    """A ``facecl.embed/1`` artifact written by ``facecl.embed.artifact.write_embeddings``.

    Rows whose status is not ``ok`` get NaN vectors, as the embed stage writes them.
    """
    vectors = np.asarray(vectors, dtype=np.float32).copy()
    status = list(status) if status is not None else [OK] * len(keys)
    for i, s in enumerate(status):
        if s != OK:
            vectors[i] = np.nan
    paths = paths if paths is not None else [f"/data/lfw/{k}.jpg" for k in keys]
    config = {"test": True, "n": len(keys), **(config or {})}
    so = StageOutput(tmp_path / name, STAGE, config, [])
    work = so.begin()
    ids = [k.split("/", 1)[0] for k in keys]
    h5 = write_embeddings(
        work, vectors, keys=keys, paths=paths, identities=ids, status=status, issame=issame
    )
    so.commit(
        {"processed": len(keys), "written": sum(x == OK for x in status), "skipped": {}},
        {"files": {h5.name: sha256_file(h5)}},
    )
    return tmp_path / name


def identity_vectors(
    keys: list[str], dim: int = 32, noise: float = 0.6, seed: int = 0
) -> np.ndarray:
    """Random unit identity centres plus per-image noise: same-identity pairs score higher."""
    rng = np.random.default_rng(seed)
    ids = sorted({k.split("/", 1)[0] for k in keys})
    centre = {i: rng.normal(size=dim) for i in ids}
    out = np.stack([centre[k.split("/", 1)[0]] + noise * rng.normal(size=dim) for k in keys])
    return out.astype(np.float32)


def pair_keys(pairs_txt: Path) -> list[str]:
    """Every image key named by an LFW pairs file, sorted."""
    pl = read_lfw_pairs(pairs_txt)
    return sorted(set(pl.a) | set(pl.b))
