"""Build align-stage artifacts for pack tests without running the detector.

A ``facecl.align/2`` artifact holds ``aligned/<identity>/<stem>.png`` RGB crops, a
``crops.sha256`` and a ``faces.csv``, written with the align stage's own writers
(``facecl.align.artifact``). The crops here are a centre crop of the 150 px LFW originals
resized to the requested size: real faces, not a real alignment (so their rows have
status ``center``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from facecl.align.artifact import (
    ALIGNED,
    CROPS_SHA256,
    FACES_CSV,
    FaceRow,
    write_crop_hashes,
    write_faces,
)
from facecl.artifacts import StageOutput, input_ref, sha256_file

ROOT = Path(__file__).resolve().parents[2]
LFW_MINI_IMAGES = ROOT / "tests" / "data" / "lfw_mini" / "lfw_original_150px"


def centre_crop(src: Path, size: tuple[int, int] = (112, 96)) -> np.ndarray:
    """uint8 (H, W, 3) RGB: the central box of ``src`` with the aspect of ``size``, resized."""
    bgr = cv2.imread(str(src), cv2.IMREAD_COLOR)
    assert bgr is not None, src
    h, w = size
    ih, iw = bgr.shape[:2]
    ch = int(ih * 0.8)
    cw = min(iw, round(ch * w / h))
    y0, x0 = (ih - ch) // 2, (iw - cw) // 2
    crop = cv2.resize(bgr[y0 : y0 + ch, x0 : x0 + cw], (w, h), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(crop[..., ::-1])


def lfw_mini_people(
    identities: Sequence[str] | None = None, max_per_identity: int | None = None
) -> dict[str, list[Path]]:
    """identity -> its fixture images (sorted)."""
    dirs = sorted(p for p in LFW_MINI_IMAGES.iterdir() if p.is_dir())
    out = {}
    for d in dirs:
        if identities is not None and d.name not in identities:
            continue
        files = sorted(d.glob("*.jpg"))[:max_per_identity]
        out[d.name] = files
    return out


def make_align_artifact(
    tmp_path: Path,
    people: Mapping[str, Sequence[Path]] | None = None,
    *,
    rename: Mapping[str, str] | None = None,
    size: tuple[int, int] = (112, 96),
    no_face: int = 0,
    name: str = "aligned",
    root: Path = LFW_MINI_IMAGES,
) -> Path:
    """An align artifact at ``tmp_path/name``.

    ``people``: identity folder -> source images (default: all of lfw_mini). ``rename`` maps
    a folder name to the identity written in the artifact (to test name variants).
    ``no_face``: how many extra rows (taken from the first identity) get no crop, with the
    skip reasons ``no_face`` and ``too_small`` in turn.
    """
    people = dict(people) if people is not None else lfw_mini_people()
    rename = dict(rename or {})
    so = StageOutput(tmp_path / name, "align", {"size": f"{size[0]}x{size[1]}"}, [input_ref(root)])
    work = so.begin()
    rows = []
    crops = []
    for folder, srcs in people.items():
        ident = rename.get(folder, folder)
        (work / ALIGNED / ident).mkdir(parents=True, exist_ok=True)
        for src in srcs:
            rel = f"{ALIGNED}/{ident}/{src.stem}.png"
            cv2.imwrite(str(work / rel), centre_crop(src, size)[..., ::-1])
            crops.append(rel)
            rows.append(FaceRow(str(src), ident, rel, "center", "no_face", index=len(rows)))
    first = next(iter(people))
    for i in range(no_face):
        src = f"{root}/{first}/missing_{i:04d}.jpg"
        reason = "no_face" if i % 2 == 0 else "too_small"
        rows.append(FaceRow(src, rename.get(first, first), "", "skipped", reason, index=len(rows)))
    written = write_crop_hashes(work, crops)
    write_faces(work / FACES_CSV, rows)
    files = {n: sha256_file(work / n) for n in (FACES_CSV, CROPS_SHA256)}
    so.commit(
        {"processed": len(rows), "written": written, "skipped": {"no_face": no_face}},
        {"files": files},
    )
    return tmp_path / name


def read_png_rgb(path: Path) -> np.ndarray:
    return np.ascontiguousarray(cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1])
