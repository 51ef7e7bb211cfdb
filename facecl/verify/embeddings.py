"""What ``facecl verify`` evaluates: an embed artifact, or a plain .h5/.npz with its datasets.

The layout and the reader are the embed stage's (:mod:`facecl.embed.artifact`); this module
only adds the plain-file inputs, read by the same code: a ``.h5`` or ``.npz`` holding the
artifact's datasets (only ``embeddings`` and ``keys`` required).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from facecl.artifacts import input_ref
from facecl.embed.artifact import Embeddings, from_arrays, read_datasets, read_embeddings
from facecl.errors import InputError

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


__all__ = ["Embeddings", "load_embeddings"]
