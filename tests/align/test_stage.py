"""The align stage end to end: artifact, statuses, fallbacks, resume, shards."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facecl.align.artifact import COLUMNS, CROPS_SHA256, FACES_CSV, read_faces
from facecl.align.config import AlignConfig
from facecl.align.inmemory import align_images
from facecl.align.stage import merge_shards, run_align
from facecl.artifacts import read_manifest, sha256_file
from facecl.errors import UsageError
from facecl.inspect.verify import verify_artifact

CONTRACT = [
    "source", "identity", "output", "status", "reason", "face_index",
    "x1", "y1", "x2", "y2", "score",
    *[f"lm_{a}{i}" for i in range(1, 6) for a in "xy"],
]  # fmt: skip


def _tree(dst: Path, paths: list[Path]) -> Path:
    for p in paths:
        (dst / p.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, dst / p.parent.name / p.name)
    return dst


def _snapshot(out: Path) -> dict[str, str]:
    """faces.csv text and every crop's hash: what must be equal between two runs."""
    snap = {FACES_CSV: (out / FACES_CSV).read_text()}
    for p in sorted((out / "aligned").rglob("*.png")):
        snap[p.relative_to(out).as_posix()] = sha256_file(p)
    return snap


@pytest.fixture
def small_tree(tmp_path, mini_paths) -> Path:
    return _tree(tmp_path / "src", mini_paths[::15])  # 12 images


def test_artifact_layout_and_contract(tmp_path, small_tree, detector):
    out = tmp_path / "out"
    s = run_align(AlignConfig(), small_tree, out, detector=detector)
    assert not s.noop and s.counts["processed"] == 12 and s.counts["written"] == 12
    m = read_manifest(out, stage="align")
    assert m.config["size"] == "112x96" and m.counts["status"]["ok"] == 12
    assert verify_artifact(out, m)["files"] == 14  # 12 crops, faces.csv, crops.sha256
    assert set(m.extra["files"]) == {FACES_CSV, CROPS_SHA256}
    with open(out / FACES_CSV, newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames[: len(CONTRACT)] == CONTRACT
        assert reader.fieldnames == list(COLUMNS)
        rows = list(reader)
    for r in rows:
        assert r["status"] == "ok" and r["reason"] == "" and r["face_index"] == "0"
        assert r["output"] == f"aligned/{r['identity']}/{Path(r['source']).stem}.png"
        assert r["source"] == f"{r['identity']}/{Path(r['source']).name}"
        crop = np.asarray(Image.open(out / r["output"]))
        assert crop.shape == (112, 96, 3) and crop.dtype == np.uint8
    assert [r.record() for r in read_faces(out)] == rows
    again = run_align(AlignConfig(), small_tree, out, detector=detector)
    assert again.noop


def test_112x112_equals_insightface_norm_crop(tmp_path, mini_paths, detector):
    fa = pytest.importorskip("insightface.utils.face_align")
    paths = mini_paths[::20]
    res = align_images(paths, AlignConfig(size="112x112"), detector=detector)
    assert len(res) == len(paths)
    for p, r in zip(paths, res, strict=True):
        img = np.asarray(Image.open(p).convert("RGB"))
        with pytest.warns(FutureWarning):  # skimage's estimate(), inside insightface
            ref = fa.norm_crop(img, r.landmarks)
        assert r.status == "ok" and r.crop.shape == (112, 112, 3)
        assert np.abs(r.crop.astype(int) - ref.astype(int)).max() <= 1


def _bad_corpus(root: Path, face_path: Path) -> dict[str, tuple[str, str]]:
    """Files -> (status, reason) expected with --on-miss skip."""
    face = Image.open(face_path).convert("RGB")
    d = root / "Bad"
    d.mkdir(parents=True)
    (d / "empty.jpg").write_bytes(b"")
    data = face_path.read_bytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (d / "notes.txt").write_text("not an image")
    (d / "photo.heic").write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(64))
    face.resize((600, 600)).save(d / "huge.png")
    face.resize((750, 750)).save(d / "huge.jpg", quality=90)
    face.resize((12, 12)).save(d / "tiny.png")
    face.convert("L").save(d / "gray.jpg")
    face.convert("RGBA").save(d / "rgba.png")
    face.quantize(128).save(d / "palette.png")
    Image.fromarray(np.asarray(face.convert("L")).astype(np.uint16) * 257).save(d / "g16.png")
    face.convert("CMYK").save(d / "cmyk.jpg", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 8
    face.transpose(Image.Transpose.ROTATE_270).save(d / "exif.jpg", exif=exif, quality=95)
    Image.new("RGB", (120, 100), (128, 128, 128)).save(d / "blank.png")
    (root / "loose.jpg").write_bytes(data)
    ok = ("ok", "")
    return {
        "Bad/empty.jpg": ("skipped", "empty_file"),
        "Bad/truncated.jpg": ("skipped", "truncated"),
        "Bad/notes.txt": ("skipped", "not_an_image"),
        "Bad/photo.heic": ("skipped", "unsupported_format"),
        "Bad/huge.png": ("skipped", "too_large"),
        "Bad/huge.jpg": ok,
        "Bad/tiny.png": ("skipped", "too_small"),
        "Bad/gray.jpg": ok,
        "Bad/rgba.png": ok,
        "Bad/palette.png": ok,
        "Bad/g16.png": ok,
        "Bad/cmyk.jpg": ok,
        "Bad/exif.jpg": ok,
        "Bad/blank.png": ("skipped", "no_face"),
        "loose.jpg": ("skipped", "no_identity"),
    }


def test_bad_files_get_statuses_and_counts(tmp_path, mini_paths, detector):
    src = tmp_path / "src"
    expected = _bad_corpus(src, mini_paths[0])
    out = tmp_path / "out"
    s = run_align(AlignConfig(max_pixels=250_000), src, out, detector=detector)
    rows = {r.source: r for r in read_faces(out)}
    assert set(rows) == set(expected)
    for name, (status, reason) in expected.items():
        assert (rows[name].status, rows[name].reason) == (status, reason), name
        assert bool(rows[name].output) == (status != "skipped")
        if status == "skipped":
            assert rows[name].detail
    skipped = {}
    for st, reason in expected.values():
        if st == "skipped":
            skipped[reason] = skipped.get(reason, 0) + 1
    assert s.counts["skipped"] == skipped
    assert s.counts["status"]["ok"] == 7
    # the upright EXIF image and the reduced huge JPEG give the original's landmarks
    ref = detector.detect([np.asarray(Image.open(mini_paths[0]).convert("RGB"))])[0]
    lm_ref = ref.landmarks[0]

    def lms(name):
        return rows[name].landmarks_array()

    assert np.abs(lms("Bad/exif.jpg") - lm_ref).max() < 2.5
    assert np.abs(lms("Bad/huge.jpg") / 5 - lm_ref).max() < 2.5  # 750 / 150
    assert "reduced" in rows["Bad/huge.jpg"].notes


def test_on_miss_center_and_landmarks(tmp_path, small_tree, detector):
    blank = small_tree / "Nobody"
    blank.mkdir()
    Image.new("RGB", (150, 150), (90, 90, 90)).save(blank / "a.png")
    Image.new("RGB", (150, 150), (90, 90, 90)).save(blank / "b.png")
    out = tmp_path / "center"
    run_align(AlignConfig(on_miss="center"), small_tree, out, detector=detector)
    rows = {r.source: r for r in read_faces(out)}
    assert rows["Nobody/a.png"].status == "center"
    assert rows["Nobody/a.png"].reason == "no_face"
    assert (out / rows["Nobody/a.png"].output).is_file()
    lmf = tmp_path / "lm.txt"
    lmf.write_text("Nobody/a.png 50 60 90 60 70 80 55 100 85 100\n")
    with pytest.raises(UsageError, match="--landmarks"):
        run_align(AlignConfig(on_miss="landmarks"), small_tree, tmp_path / "x", detector=detector)
    out2 = tmp_path / "lm"
    run_align(AlignConfig(on_miss="landmarks"), small_tree, out2, landmarks=lmf, detector=detector)
    rows = {r.source: r for r in read_faces(out2)}
    a, b = rows["Nobody/a.png"], rows["Nobody/b.png"]
    assert (a.status, a.reason, a.record()["lm_x1"]) == ("landmarks", "no_face", "50.000")
    assert (b.status, b.reason) == ("skipped", "no_face")
    assert "no provided landmarks" in b.detail
    assert sum(r.status == "ok" for r in rows.values()) == 12


def test_all_faces_and_central_choice(tmp_path, mini_paths, detector):
    a = np.asarray(Image.open(mini_paths[0]).convert("RGB"))
    b = np.asarray(Image.open(mini_paths[40]).convert("RGB"))
    big = np.zeros((150, 450, 3), np.uint8)
    big[:, :150], big[:, 150:300], big[:, 300:] = b, a, b  # `a` in the centre
    d = tmp_path / "src" / "Group"
    d.mkdir(parents=True)
    Image.fromarray(big).save(d / "three.png")
    out = tmp_path / "one"
    run_align(AlignConfig(), tmp_path / "src", out, detector=detector)
    (row,) = read_faces(out)
    assert row.n_faces == 3 and 150 < row.landmarks[2][0] < 300
    out = tmp_path / "all"
    run_align(AlignConfig(all_faces=True), tmp_path / "src", out, detector=detector)
    rows = read_faces(out)
    assert [r.face_index for r in rows] == [0, 1, 2]
    assert [r.output for r in rows] == [f"aligned/Group/three.face{k}.png" for k in range(3)]
    assert rows[0].landmarks[0] == row.landmarks[0]


def test_list_file_input_and_unsafe_identity(tmp_path, mini_paths, detector):
    lst = tmp_path / "list.txt"
    lst.write_text(f"{mini_paths[0]} Alice\n{mini_paths[1]} ../../escape\n{mini_paths[2]}\n")
    out = tmp_path / "out"
    run_align(AlignConfig(), lst, out, detector=detector)
    rows = read_faces(out)
    assert [r.status for r in rows] == ["ok", "skipped", "ok"]
    assert rows[1].reason == "unsafe_name"
    assert rows[0].output == f"aligned/Alice/{mini_paths[0].stem}.png"
    assert rows[2].identity == mini_paths[2].parent.name
    written = {p.relative_to(out).as_posix() for p in out.rglob("*.png")}
    assert written == {rows[0].output, rows[2].output}
    assert not list(tmp_path.glob("escape*"))


def test_shards_merge_equal_a_single_run(tmp_path, mini_paths, detector):
    src = _tree(tmp_path / "src", mini_paths[::16])  # 11 images, 6 chunks of 2
    base = AlignConfig(chunk_size=2)
    run_align(base, src, tmp_path / "single", detector=detector)
    shards = []
    for k in (1, 2, 3):
        out = tmp_path / f"shard{k}"
        s = run_align(AlignConfig(chunk_size=2, shard=f"{k}/3"), src, out, detector=detector)
        assert s.counts["processed"] < 11
        shards.append(out)
    merged = merge_shards(shards[::-1], tmp_path / "merged")
    assert merged.counts == read_manifest(tmp_path / "single").counts
    assert _snapshot(tmp_path / "merged") == _snapshot(tmp_path / "single")
    m = read_manifest(tmp_path / "merged", stage="align")
    assert m.config == read_manifest(tmp_path / "single").config
    verify_artifact(tmp_path / "merged", m)
    with pytest.raises(UsageError, match="exactly once"):
        merge_shards(shards[:2], tmp_path / "m2")
    with pytest.raises(UsageError, match="not a shard"):
        merge_shards([tmp_path / "single"], tmp_path / "m3")


def test_align_images_library_call(mini_paths, detector, tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"")
    res = align_images([mini_paths[0], tmp_path / "bad.jpg"], AlignConfig(), detector=detector)
    assert [r.status for r in res] == ["ok", "skipped"]
    assert res[0].crop.shape == (112, 96, 3) and res[1].crop is None
    assert res[1].reason == "empty_file" and res[0].index == 0


def test_kill_and_resume_equals_uninterrupted_run(tmp_path, mini_paths, detector):
    src = _tree(tmp_path / "src", mini_paths[::11])  # 16 images, 8 chunks of 2
    cfg = AlignConfig(chunk_size=2)
    run_align(cfg, src, tmp_path / "straight", detector=detector)

    out = tmp_path / "out"
    parts = Path(str(out) + ".partial") / "_parts"
    env = {**os.environ, "OMP_NUM_THREADS": "2"}  # as the in-process detector: same numerics
    cmd = [sys.executable, "-m", "facecl", "align", str(src), "-o", str(out)]
    cmd += ["--chunk-size", "2", "--device", "cpu"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if parts.is_dir() and len(list(parts.glob("part-*.csv"))) >= 2:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = len(list(parts.glob("part-*.csv")))
    assert not out.exists(), "the run finished before it could be killed"
    assert 2 <= n_before < 8

    s = run_align(cfg, src, out, detector=detector)
    assert s.resumed and s.reused_chunks == n_before
    assert s.counts == read_manifest(tmp_path / "straight").counts
    assert _snapshot(out) == _snapshot(tmp_path / "straight")
    assert not (out / "_parts").exists()


def test_stream_batches_respect_batch_size_pixel_budget_and_keys(tmp_path, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor
    from types import SimpleNamespace

    import facecl.align.inmemory as inmemory
    from facecl.align.config import AlignRuntime
    from facecl.align.io import Item

    sizes = [(40, 40)] * 7 + [(400, 300)] * 5  # 1,600 px and 120,000 px images
    items = []
    for i, (h, w) in enumerate(sizes):
        Image.new("RGB", (w, h)).save(tmp_path / f"{i}.png")
        items.append(Item(i, f"{i}.png", tmp_path / f"{i}.png", "x", str(i)))
    seen = []
    fake = SimpleNamespace(
        cfg=AlignConfig(),
        runtime=AlignRuntime(batch_size=4, workers=2),
        align=lambda its, decs: (seen.append([d.image.size for d in decs]), [[]] * len(its))[1],
    )
    monkeypatch.setattr(inmemory, "PIXEL_BUDGET", 250_000)
    keyed = [(i // 6, it) for i, it in enumerate(items)]  # keys: two chunks of 6
    with ThreadPoolExecutor(2) as pool:
        out = list(inmemory.stream_align(keyed, fake, pool))
    assert [it.index for _, its, _ in out for it in its] == list(range(12))  # order kept
    for key, its, _ in out:
        assert len(its) <= 4 and {k for k, it in keyed if it in its} == {key}
    for batch in seen:  # budget: a batch stops once it reaches it
        assert sum(batch[:-1]) < 250_000 * 3
