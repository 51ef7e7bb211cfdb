"""B54-B57, B60, B61: ``--verify-inputs``: content hashes of the input trees decide "up to
date", so an edit that keeps a photo's size and mtime is seen; without it, it is not (the
documented limitation of the stat cache behind the tree hash: a file whose size and mtime
are the ones it hashed is not read again). The trees are aged first: a file modified in the
last 2 s is never cached (the racy rule), so without aging every run would read it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from facecl import lock
from facecl.artifacts import INPUT_CONTENT, MANIFEST, StageOutput, input_ref, runtime_fields
from facecl.errors import ArtifactError

from .conftest import ALIGN_ARGS, make_source, ok
from .helpers import facecl, one_line_error


def age(root: Path, seconds: int = 3600) -> Path:
    """Every file under ``root`` last modified ``seconds`` ago (old enough to be cached)."""
    import time

    then = time.time_ns() - seconds * 10**9
    for f in root.rglob("*"):
        if f.is_file():
            os.utime(f, ns=(then, then))
    return root


def edit_keeping_size_and_mtime(path: Path) -> None:
    """Flip one byte of ``path`` in place, then put its mtime back."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)


def test_align_verify_inputs_sees_an_edit_that_keeps_size_and_mtime(tmp_path):
    """B54 (real processes): recorded, then an in-place edit restoring size and mtime is
    "up to date" without the option and stale with it; --force rebuilds."""
    src = age(make_source(tmp_path / "src", per_identity=1))
    out = tmp_path / "A"
    ok(facecl("align", src, "-o", out, *ALIGN_ARGS, "--verify-inputs"))
    recorded = json.loads((out / MANIFEST).read_text())["extra"][INPUT_CONTENT]
    assert list(recorded) == [str(src.resolve())]
    target = sorted(src.rglob("*.jpg"))[0]
    edit_keeping_size_and_mtime(target)
    # without it: the tree hash (names, sizes, mtimes) cannot see the edit
    assert "up to date" in ok(facecl("align", src, "-o", out, *ALIGN_ARGS)).stderr
    r = facecl("align", src, "-o", out, *ALIGN_ARGS, "--verify-inputs")
    one_line_error(r, 1, "changed since", str(src.resolve()), "--force")
    ok(facecl("align", src, "-o", out, *ALIGN_ARGS, "--verify-inputs", "--force"))
    again = json.loads((out / MANIFEST).read_text())["extra"][INPUT_CONTENT]
    assert again != recorded
    assert (
        "up to date" in ok(facecl("align", src, "-o", out, *ALIGN_ARGS, "--verify-inputs")).stderr
    )


def test_an_artifact_without_content_hashes_is_stale_under_verify_inputs(pipeline):
    """B55: the session's align was written without the option: with it, it is not taken as
    up to date (nothing to compare), and the message says why."""
    r = facecl("align", pipeline.src, "-o", pipeline.align, *ALIGN_ARGS, "--verify-inputs")
    one_line_error(r, 1, "no input content hashes", "--force --verify-inputs")
    assert (
        "up to date" in ok(facecl("align", pipeline.src, "-o", pipeline.align, *ALIGN_ARGS)).stderr
    )


def _tree(root: Path) -> Path:
    (root / "A").mkdir(parents=True)
    (root / "A" / "a.jpg").write_bytes(b"one")
    (root / "A" / "b.jpg").write_bytes(b"two")
    return age(root)


def _write(out: Path, src: Path, verify: bool) -> StageOutput:
    so = StageOutput(out, "align", {"k": 1}, [input_ref(src)], verify_inputs=verify)
    if not so.up_to_date:
        so.begin()
        so.commit({"processed": 2})
    return so


def test_verify_inputs_leaves_the_fingerprint_alone(tmp_path):
    """B56: the option is runtime-only: the same fingerprint with and without it (so no
    existing artifact changes), and only the recorded extra differs."""
    src = _tree(tmp_path / "src")
    plain = _write(tmp_path / "plain", src, False)
    hashed = _write(tmp_path / "hashed", src, True)
    assert plain.fingerprint == hashed.fingerprint
    m_plain = json.loads((tmp_path / "plain" / MANIFEST).read_text())
    m_hashed = json.loads((tmp_path / "hashed" / MANIFEST).read_text())
    assert (
        INPUT_CONTENT not in m_plain["extra"] and m_plain["fingerprint"] == m_hashed["fingerprint"]
    )
    assert _write(tmp_path / "hashed", src, True).up_to_date
    assert _write(tmp_path / "hashed", src, False).up_to_date
    from facecl.embed.config import EmbedConfig

    assert "verify_inputs" in runtime_fields(EmbedConfig)


def test_a_partial_of_other_content_is_not_resumed(tmp_path):
    """B57: a killed --verify-inputs run is resumed only if the tree's bytes are the ones
    it started on; after an edit keeping size and mtime it starts over."""
    src = _tree(tmp_path / "src")
    out = tmp_path / "o"
    so = StageOutput(out, "align", {"k": 1}, [input_ref(src)], verify_inputs=True)
    (so.begin() / "done.txt").write_text("chunk")
    lock.release(so.path)  # as a kill would leave it (the lock of a dead PID is taken over)
    again = StageOutput(out, "align", {"k": 1}, [input_ref(src)], verify_inputs=True)
    assert (again.begin() / "done.txt").is_file() and again.resumed
    lock.release(again.path)
    edit_keeping_size_and_mtime(src / "A" / "a.jpg")
    edited = StageOutput(out, "align", {"k": 1}, [input_ref(src)], verify_inputs=True)
    assert edited.fingerprint == so.fingerprint  # names, sizes and mtimes are the same
    work = edited.begin()
    assert not edited.resumed and not (work / "done.txt").exists()
    edited.commit({"processed": 2})
    edit_keeping_size_and_mtime(src / "A" / "b.jpg")
    with pytest.raises(ArtifactError, match="changed since"):
        StageOutput(out, "align", {"k": 1}, [input_ref(src)], verify_inputs=True)


def test_pack_prealigned_verify_inputs(tmp_path):
    """B60: pack of a --prealigned folder: the same as align (runtime option, stale on an
    edit that keeps size and mtime)."""
    from typer.testing import CliRunner

    from facecl.cli import app
    from tests.pack.test_prealigned import crop_folder

    root = tmp_path / "crops"
    crop_folder(root, (112, 96), per_id=2)
    age(root)
    args = ["pack", str(root), "--prealigned", "--min-images", "1", "-o", str(tmp_path / "p")]
    r = CliRunner().invoke(app, [*args, "--verify-inputs"])
    assert r.exit_code == 0, r.output
    edit_keeping_size_and_mtime(sorted(root.rglob("*.png"))[0])
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0 and "up to date" in r.output, r.output
    r = CliRunner().invoke(app, [*args, "--verify-inputs"])
    assert r.exit_code == 1 and "changed since" in r.output, r.output


def test_embed_aligned_folder_verify_inputs(tmp_path, pipeline):
    """B61 (real processes): embed of a folder of crops: the same runtime option."""
    import shutil

    from .hostile import CROPS

    crops = tmp_path / "crops"
    for f in sorted(CROPS.glob("*.png"))[:3]:
        (crops / f.stem).mkdir(parents=True)
        shutil.copy(f, crops / f.stem / f.name)
    age(crops)
    args = ("embed", pipeline.run, crops, "--aligned", "-o", tmp_path / "E", "--device", "cpu")
    ok(facecl(*args, "--verify-inputs"))
    edit_keeping_size_and_mtime(sorted(crops.rglob("*.png"))[0])
    assert "up to date" in ok(facecl(*args)).stderr
    one_line_error(facecl(*args, "--verify-inputs"), 1, "changed since", str(crops.resolve()))
