import json
import shutil
import subprocess
import sys
import textwrap

import pytest

from facecl.artifacts import (
    MANIFEST,
    SCHEMA_VERSIONS,
    StageOutput,
    input_ref,
    lineage,
    read_manifest,
)
from facecl.errors import ArtifactError, SchemaVersionError


def _build(out, config, inputs, **kw):
    so = StageOutput(out, "align", config, inputs, **kw)
    if so.up_to_date:
        return so, so.existing
    work = so.begin()
    (work / "data.txt").write_text("hello")
    return so, so.commit({"processed": 1, "written": 1, "skipped": {}}, {"note": "x"})


def test_manifest_round_trip(tmp_path):
    src = tmp_path / "src.txt"
    src.write_text("raw")
    so, m = _build(tmp_path / "out", {"size": "112x96"}, [input_ref(src)])
    back = read_manifest(tmp_path / "out", stage="align")
    assert back == m
    assert back.schema == f"facecl.align/{SCHEMA_VERSIONS['align']}"
    assert back.config == {"size": "112x96"}
    assert back.inputs[0]["kind"] == "file" and len(back.inputs[0]["sha256"]) == 64
    assert back.counts["processed"] == 1
    assert (tmp_path / "out" / "data.txt").read_text() == "hello"
    assert not (tmp_path / "out.partial").exists()


def test_wrong_stage_newer_schema_and_corrupt(tmp_path):
    _build(tmp_path / "out", {"a": 1}, [])
    with pytest.raises(ArtifactError, match="expected 'pack'"):
        read_manifest(tmp_path / "out", stage="pack")
    mpath = tmp_path / "out" / MANIFEST
    raw = json.loads(mpath.read_text())
    raw["schema"] = "facecl.align/99"
    mpath.write_text(json.dumps(raw))
    with pytest.raises(SchemaVersionError, match="upgrade facecl"):
        read_manifest(tmp_path / "out")
    mpath.write_text("{not json")
    with pytest.raises(ArtifactError, match="corrupt manifest"):
        read_manifest(tmp_path / "out")
    mpath.unlink()
    with pytest.raises(ArtifactError, match="missing manifest.json"):
        read_manifest(tmp_path / "out")
    with pytest.raises(ArtifactError, match="malformed schema"):
        mpath.write_text(json.dumps({**raw, "schema": "nonsense"}))
        read_manifest(tmp_path / "out")


def test_noop_rerun_force_and_conflict(tmp_path):
    out = tmp_path / "out"
    so1, m1 = _build(out, {"a": 1}, [])
    so2 = StageOutput(out, "align", {"a": 1}, [])
    assert so2.up_to_date and so2.existing == m1
    with pytest.raises(ArtifactError, match="different config"):
        StageOutput(out, "align", {"a": 2}, [])
    so3, m3 = _build(out, {"a": 2}, [], force=True)
    assert read_manifest(out).config == {"a": 2}
    assert m3.fingerprint != m1.fingerprint
    assert not list(tmp_path.glob(".out.old-*"))


def test_resume_partial_with_same_fingerprint(tmp_path):
    out = tmp_path / "out"
    so = StageOutput(out, "align", {"a": 1}, [])
    work = so.begin()
    (work / "done-1").write_text("1")
    # A crash here leaves only out.partial; the directory never looks complete.
    with pytest.raises(ArtifactError, match="incomplete"):
        read_manifest(out)
    again = StageOutput(out, "align", {"a": 1}, [])
    work2 = again.begin()
    assert again.resumed and (work2 / "done-1").exists()
    other = StageOutput(out, "align", {"a": 2}, [])
    work3 = other.begin()
    assert not other.resumed and not (work3 / "done-1").exists()


def test_killed_writer_leaves_no_complete_output(tmp_path):
    """A real process killed in the middle of a stage leaves only the .partial directory."""
    out = tmp_path / "out"
    script = textwrap.dedent(
        f"""
        import os, signal
        from facecl.artifacts import StageOutput
        so = StageOutput({str(out)!r}, "align", {{"a": 1}}, [])
        work = so.begin()
        (work / "half.bin").write_bytes(b"x" * 1000)
        os.kill(os.getpid(), signal.SIGKILL)
        so.commit({{}})
        """
    )
    proc = subprocess.run([sys.executable, "-c", script])
    assert proc.returncode != 0
    assert not out.exists()
    assert (tmp_path / "out.partial" / "half.bin").exists()
    with pytest.raises(ArtifactError, match="incomplete"):
        read_manifest(out)


def test_lineage_follows_artifact_inputs(tmp_path):
    raw = tmp_path / "raw"
    (raw / "a").mkdir(parents=True)
    (raw / "a" / "1.jpg").write_bytes(b"123")
    _build(tmp_path / "aligned", {"a": 1}, [input_ref(raw)])
    so = StageOutput(tmp_path / "packed", "pack", {"b": 1}, [input_ref(tmp_path / "aligned")])
    so.begin()
    so.commit({"written": 1})
    tree = lineage(tmp_path / "packed")
    assert tree["schema"].startswith("facecl.pack/")
    child = tree["inputs"][0]
    assert child["schema"].startswith("facecl.align/") and child["changed_since"] is False
    assert child["inputs"][0]["kind"] == "tree"


def _stage(out, stage, inputs, config=None, force=False):
    so = StageOutput(out, stage, config or {"stage": stage}, inputs, force=force)
    work = so.begin()
    (work / "data.bin").write_bytes(stage.encode())
    so.commit({"processed": 1})
    return out


def test_lineage_expands_an_ancestor_reached_twice_and_flags_changes(tmp_path):
    """align -> pack -> train and align -> embed, both into verify: the align node appears
    (expanded, with its raw tree) under both branches; stages are named in every node."""
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "1.jpg").write_bytes(b"123")
    align = _stage(tmp_path / "aligned", "align", [input_ref(raw)])
    pack = _stage(tmp_path / "packed", "pack", [input_ref(align)])
    run = _stage(tmp_path / "run", "train", [input_ref(pack)])
    model = {**input_ref(run / "data.bin"), "role": "model"}
    emb = _stage(tmp_path / "emb", "embed", [input_ref(run), model, input_ref(align)])
    tree = lineage(_stage(tmp_path / "rep", "verify", [input_ref(emb)]))
    e = tree["inputs"][0]
    assert (tree["stage"], e["stage"]) == ("verify", "embed")
    t, m, a = e["inputs"]
    assert t["stage"] == "train" and m["kind"] == "file" and m["role"] == "model"
    assert t["inputs"][0]["stage"] == "pack"
    via_pack = t["inputs"][0]["inputs"][0]
    for node in (via_pack, a):
        assert node["stage"] == "align" and node["path"] == str(align.resolve())
        assert node["inputs"][0]["kind"] == "tree" and node["changed_since"] is False
    # A rebuilt input is flagged where it is referenced; a deleted one is missing.
    _stage(pack, "pack", [input_ref(align)], config={"other": 1}, force=True)
    assert lineage(run)["inputs"][0]["changed_since"] is True
    shutil.rmtree(pack)
    assert lineage(run)["inputs"][0]["missing"] is True


def test_output_that_is_not_an_artifact_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("user data")
    with pytest.raises(ArtifactError, match="not a facecl artifact"):
        StageOutput(out, "align", {}, [])
