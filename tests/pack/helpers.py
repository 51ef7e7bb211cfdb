"""Build align-stage artifacts for pack tests without the align code (its contract only).

A ``facecl.align/1`` artifact holds ``aligned/<identity>/<stem>.png`` RGB crops and a
``faces.csv`` with ``source, identity, output, status, reason`` (``output`` relative to the
artifact, empty when no crop was made). The crops here are a centre crop of the 150 px LFW
originals resized to the requested size: real faces, not a real alignment.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

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
    ``no_face``: how many extra rows (taken from the first identity) get no crop, half with
    status ``skipped`` and half with an empty output.
    """
    people = dict(people) if people is not None else lfw_mini_people()
    rename = dict(rename or {})
    so = StageOutput(tmp_path / name, "align", {"size": f"{size[0]}x{size[1]}"}, [input_ref(root)])
    work = so.begin()
    rows = []
    files = {}
    for folder, srcs in people.items():
        ident = rename.get(folder, folder)
        (work / "aligned" / ident).mkdir(parents=True, exist_ok=True)
        for src in srcs:
            rel = f"aligned/{ident}/{src.stem}.png"
            cv2.imwrite(str(work / rel), centre_crop(src, size)[..., ::-1])
            files[rel] = sha256_file(work / rel)
            rows.append(
                {
                    "source": str(src),
                    "identity": ident,
                    "output": rel,
                    "status": "center",
                    "reason": "",
                }
            )
    first = next(iter(people))
    for i in range(no_face):
        rows.append(
            {
                "source": f"{root}/{first}/missing_{i:04d}.jpg",
                "identity": rename.get(first, first),
                "output": "",
                "status": "skipped" if i % 2 == 0 else "",
                "reason": "no_face" if i % 2 == 0 else "",
            }
        )
    with open(work / "faces.csv", "w", newline="", encoding="utf-8") as f:
        wr = csv.DictWriter(f, fieldnames=["source", "identity", "output", "status", "reason"])
        wr.writeheader()
        wr.writerows(rows)
    so.commit(
        {"processed": len(rows), "written": len(files), "skipped": {"no_face": no_face}},
        {"files": files},
    )
    return tmp_path / name


def read_png_rgb(path: Path) -> np.ndarray:
    return np.ascontiguousarray(cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1])
