"""Fixtures for embed/export: a tiny checkpoint, crops, and an align artifact built without
the detector (its faces.csv written by the align stage's own writer)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch

from facecl.align.artifact import ALIGNED, FACES_CSV, FaceRow, write_faces
from facecl.artifacts import StageOutput
from facecl.embed.export import BUNDLED_FACES
from facecl.models import create_backbone
from facecl.train.checkpoint import save_checkpoint

FACES = sorted(BUNDLED_FACES.glob("*.png"))  # real aligned 112x96 LFW faces


def tiny_payload(seed: int = 0, feature_dim: int = 16, input_size=(112, 96)) -> dict:
    torch.manual_seed(seed)
    size = {} if tuple(input_size) == (112, 96) else {"input_size": list(input_size)}
    net = create_backbone("tiny", feature_dim=feature_dim, **size)
    return {
        "arch": "tiny",
        "arch_kwargs": {"feature_dim": feature_dim, **size},
        "feature_dim": feature_dim,
        "input_size": list(input_size),
        "loss": "cl",
        "config": {"lr": 0.1, "seed": seed},
        "model": net.state_dict(),
    }


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, tiny_payload())
    return path


@pytest.fixture(scope="session")
def tiny_ckpt_112(tmp_path_factory) -> Path:
    """A tiny net on 112x112 (ArcFace) crops."""
    path = tmp_path_factory.mktemp("ckpt112") / "tiny112.pt"
    save_checkpoint(path, tiny_payload(seed=3, input_size=(112, 112)))
    return path


@pytest.fixture(scope="session")
def crops(tmp_path_factory) -> Path:
    """Aligned crops as a photo folder: <identity>/<identity>_0001.png."""
    root = tmp_path_factory.mktemp("crops") / "faces"
    for f in FACES:
        ident = f.stem.rsplit("_", 1)[0]
        (root / ident).mkdir(parents=True)
        shutil.copy(f, root / ident / f.name)
    return root


def make_align_artifact(out: Path, crops: Path, extra_rows: bool = True) -> Path:
    """An align artifact as 'facecl align' writes it: aligned/<id>/<stem>.png + faces.csv.

    With ``extra_rows``: one photo without a face (no output), one whose crop file is
    missing and one whose crop is corrupt, so every failure kind is represented.
    """
    so = StageOutput(out, "align", {"size": "112x96"}, [])
    work = so.begin()
    rows = []
    for f in sorted(crops.rglob("*.png")):
        ident = f.parent.name
        dst = work / ALIGNED / ident / f.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dst)
        rows.append(
            FaceRow(f"/photos/{ident}/{f.stem}.jpg", ident, f"{ALIGNED}/{ident}/{f.name}", "ok")
        )
    if extra_rows:
        rows.append(FaceRow("/photos/Nobody/Nobody_0001.jpg", "Nobody", "", "skipped", "no face"))
        rows.append(
            FaceRow("/photos/Gone/Gone_0001.jpg", "Gone", f"{ALIGNED}/Gone/Gone_0001.png", "ok")
        )
        bad = work / ALIGNED / "Broken" / "Broken_0001.png"
        bad.parent.mkdir(parents=True)
        bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
        rows.append(
            FaceRow(
                "/photos/Broken/Broken_0001.jpg",
                "Broken",
                f"{ALIGNED}/Broken/Broken_0001.png",
                "ok",
            )
        )
    rows = [dataclasses.replace(r, index=i) for i, r in enumerate(rows)]
    write_faces(work / FACES_CSV, rows)
    so.commit({"processed": len(rows), "written": len(rows) - 1, "skipped": {"no face": 1}})
    return out


@pytest.fixture(scope="session")
def align_art(tmp_path_factory, crops) -> Path:
    return make_align_artifact(tmp_path_factory.mktemp("align") / "aligned", crops)
