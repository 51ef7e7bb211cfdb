"""Warp + PNG writing behind the detector (``--writers``): same bytes as a serial run, and a
writer thread's error is the usual one-line error with every finished chunk kept."""

from __future__ import annotations

import errno
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

import facecl.align.writer as writer
from facecl.align.artifact import crop_hashes, read_faces
from facecl.align.config import AlignConfig, AlignRuntime
from facecl.align.stage import PARTS, run_align
from facecl.artifacts import read_manifest
from facecl.cli import app

from .test_stage import _snapshot, _tree


@pytest.fixture
def mixed_tree(tmp_path, mini_paths) -> Path:
    """12 lfw_mini photos and two files that give no crop (skipped rows in the middle)."""
    src = _tree(tmp_path / "src", mini_paths[::14][:12])
    (src / "Broken").mkdir()
    (src / "Broken" / "zero.jpg").write_bytes(b"")
    (src / "Broken" / "text.jpg").write_bytes(b"not a jpeg")
    return src


def _finish_out_of_order(monkeypatch, outputs: list[str]) -> None:
    """Every third crop's write waits until the next crop's write is done, so jobs finish
    out of listing order (a wait of at most 10 s: never a deadlock)."""
    real = writer.write_png
    names = [Path(o).name for o in outputs]
    done = {n: threading.Event() for n in names}
    after = {names[k]: names[k + 1] for k in range(0, len(names) - 1, 3)}

    def write(path: Path, rgb) -> None:
        if path.name in after:
            done[after[path.name]].wait(10)
        real(path, rgb)
        done[path.name].set()

    monkeypatch.setattr(writer, "write_png", write)


def test_overlapped_writers_give_the_bytes_of_a_serial_run(
    tmp_path, mixed_tree, detector, monkeypatch
):
    cfg = AlignConfig(chunk_size=5, on_miss="center")
    serial = run_align(
        cfg, mixed_tree, tmp_path / "serial", runtime=AlignRuntime(batch_size=4, writers=0),
        detector=detector,
    )  # fmt: skip
    _finish_out_of_order(monkeypatch, [r.output for r in read_faces(tmp_path / "serial")])
    seen = []
    over = run_align(
        cfg, mixed_tree, tmp_path / "over", runtime=AlignRuntime(batch_size=4, writers=3),
        detector=detector, on_progress=lambda done, total: seen.append(done),
    )  # fmt: skip
    assert serial.counts == over.counts and over.counts["processed"] == 14
    assert over.counts["skipped"] == {"empty_file": 1, "not_an_image": 1}
    assert _snapshot(tmp_path / "over") == _snapshot(tmp_path / "serial")
    ms, mo = read_manifest(tmp_path / "serial"), read_manifest(tmp_path / "over")
    assert ms.extra["files"] == mo.extra["files"] and len(mo.extra["files"]) == 2
    assert crop_hashes(tmp_path / "serial") == crop_hashes(tmp_path / "over")
    assert len(crop_hashes(tmp_path / "over")) == 12
    assert mo.extra["runtime"]["writers"] == 3  # recorded, not fingerprinted: same artifact
    assert seen == sorted(seen) and seen[-1] == 14


def test_a_writer_error_is_one_line_and_finished_chunks_are_kept(
    tmp_path, mixed_tree, detector, monkeypatch
):
    cfg = AlignConfig(chunk_size=4)
    run_align(cfg, mixed_tree, tmp_path / "straight", detector=detector)
    rows = read_faces(tmp_path / "straight")
    victim = Path(next(r.output for r in rows if r.output and 8 <= r.index < 12)).name
    monkeypatch.setattr("facecl.align.mtcnn.MTCNN", lambda **kw: detector)
    real = writer.write_png

    def full_disk(path: Path, rgb) -> None:
        if path.name == victim:  # a crop of the third chunk
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, rgb)

    monkeypatch.setattr(writer, "write_png", full_disk)
    out = tmp_path / "out"
    args = ["align", str(mixed_tree), "-o", str(out), "--chunk-size", "4", "--device", "cpu"]
    r = CliRunner().invoke(app, [*args, "--writers", "3", "--batch-size", "4"])
    assert r.exit_code == 1, r.output
    assert "no space left on the device" in r.output and "Traceback" not in r.output
    assert len([ln for ln in r.output.splitlines() if "error:" in ln]) == 1
    parts = sorted(p.name for p in (Path(f"{out}.partial") / PARTS).glob("part-*.csv"))
    assert parts == ["part-0000000.csv", "part-0000001.csv"]  # chunks before the error
    assert not out.exists()

    monkeypatch.setattr(writer, "write_png", real)  # the disk has room again: resume
    s = run_align(cfg, mixed_tree, out, detector=detector)
    assert s.resumed and s.reused_chunks == 2
    assert s.counts == read_manifest(tmp_path / "straight").counts
    assert _snapshot(out) == _snapshot(tmp_path / "straight")


def test_writers_option_is_checked():
    from facecl.errors import ConfigError

    with pytest.raises(ConfigError, match="--writers"):
        AlignRuntime(writers=-1)
    r = CliRunner().invoke(app, ["align", "--help"])
    assert "--writers" in r.output
