"""Embed's align source as columns (issue 17 item 3): the items, their statuses and their
unique keys are those of a list of rows (``unique_keys`` is the oracle)."""

from __future__ import annotations

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
from facecl.artifacts import StageOutput, sha256_file
from facecl.embed.sources import align_source, unique_keys


def test_rows_keys_and_statuses(tmp_path):
    so = StageOutput(tmp_path / "al", "align", {"size": "112x96"}, [])
    work = so.begin()
    crop = np.full((112, 96, 3), 90, np.uint8)
    rows = []
    for ident, name, out in [
        ("Ann", "a.jpg", True),
        ("Ann", "a.png", False),  # same stem, no crop: key Ann/a~2
        ("Bob", "b.jpg", True),
        ("Ann", "a.gif", False),  # Ann/a~3
        ("Cy", "c.jpg", False),
    ]:
        rel = f"{ALIGNED}/{ident}/{name.split('.')[0]}.png" if out else ""
        if out:
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(work / rel), crop)
        status, reason = ("ok", "") if out else ("skipped", "no_face" if ident == "Ann" else "")
        rows.append(FaceRow(f"{ident}/{name}", ident, rel, status, reason, index=len(rows)))
    write_faces(work / FACES_CSV, rows)
    write_crop_hashes(work, [r.output for r in rows if r.output])
    files = {n: sha256_file(work / n) for n in (FACES_CSV, CROPS_SHA256)}
    so.commit({"processed": len(rows)}, {"files": files})
    src = align_source(tmp_path / "al")
    keys = [it.key for it in src.items]
    assert keys == unique_keys(["Ann/a", "Ann/a", "Bob/b", "Ann/a", "Cy/c"])
    assert [it.status for it in src.items] == ["ok", "no_face", "ok", "no_face", "skipped"]
    images = list(src.images(0))
    assert [isinstance(x, np.ndarray) for x in images] == [True, False, True, False, False]
    assert list(src.images(2))[0].shape == (112, 96, 3) and len(src) == 5
