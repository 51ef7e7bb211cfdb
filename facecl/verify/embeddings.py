"""What ``facecl verify`` evaluates: an embed artifact, or a plain .h5/.npz with its datasets.

The layout and the reader are the embed stage's (:mod:`facecl.embed.artifact`); this module
only adds the plain-file inputs, read by the same code: a ``.h5`` or ``.npz`` holding the
artifact's datasets (only ``embeddings`` and ``keys`` required).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from facecl.artifacts import input_ref
from facecl.embed.artifact import Embeddings, from_arrays, read_datasets, read_embeddings
from facecl.errors import FaceclError, InputError, UsageError

H5_SUFFIXES = (".h5", ".hdf5")


def load_embeddings(path: str | os.PathLike) -> Embeddings:
    """An embeddings artifact directory, or a plain .h5 / .npz file with the same datasets."""
    p = Path(path)
    if p.is_dir():
        return read_embeddings(p)
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
    elif p.suffix in H5_SUFFIXES:
        data = read_datasets(p)
    else:
        raise InputError(
            f"unsupported embeddings file {p}",
            "pass an embed artifact directory, a .h5 or a .npz",
        )
    return from_arrays(data, p, input_ref(p))


def stored_fusion(emb: Embeddings) -> str | None:
    """How image and flip features were fused in ``emb`` (its embed manifest), if known."""
    from facecl.artifacts import read_manifest

    if not emb.source.is_dir():
        return None
    try:
        return str(read_manifest(emb.source).config.get("fusion"))
    except FaceclError:  # not an artifact directory: unknown
        return None


def with_fusion(emb: Embeddings, fusion: str) -> tuple[Embeddings, str | None]:
    """``emb`` with the features ``fusion`` asks for, and the fusion they then have.

    ``stored``: as embedded. ``sum``: insightface's features, FC1(image) + FC1(flip): the two
    halves of concat-fused vectors are added (sum-fused ones are used as they are).
    ``concat``: the vectors must be concat-fused. Anything else is a one-line error.
    """
    have = stored_fusion(emb)
    if fusion == "stored" or fusion == have:
        return emb, have
    if fusion == "sum" and have == "concat":
        d = emb.dim // 2
        summed = emb.vectors[:, :d] + emb.vectors[:, d:]  # (N, D): a + b of [a, b]
        return dataclasses.replace(emb, vectors=summed), "sum"
    raise UsageError(
        f"--fusion {fusion} needs {'concat' if fusion == 'sum' else fusion}-fused embeddings, "
        f"{emb.source} holds {have or 'embeddings of unknown fusion'}",
        f"embed with 'facecl embed ... --fusion {fusion}', or use --fusion stored",
    )


__all__ = ["Embeddings", "load_embeddings", "stored_fusion", "with_fusion"]
