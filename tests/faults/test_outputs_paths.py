"""Output paths (issue 13 items 1, 7, 8): an -o that is, contains or is inside an input, an
artifact of another stage under --force, and -o paths the file system cannot hold, are
refused in one line before anything is written, and the inputs are left untouched."""

from __future__ import annotations

import shutil

import pytest

from tests.faults.conftest import ALIGN_ARGS, PACK_ARGS, TRAIN_ARGS, make_source
from tests.faults.helpers import facecl, one_line_error, tree_state


@pytest.fixture
def copies(pipeline, tmp_path):
    """Private copies of the pipeline's artifacts (a refused run must leave them as they were)."""
    out = {}
    for name in ("align", "pack", "run", "emb"):
        out[name] = tmp_path / name
        shutil.copytree(getattr(pipeline, name), out[name])
    return out


def _untouched(path, before):
    assert tree_state(path) == before
    assert not path.with_name(path.name + ".partial").exists()
    assert not path.with_name(path.name + ".lock").exists()


@pytest.mark.parametrize(
    "case",
    ["pack A -o A", "train P -o P", "embed R A -o A", "embed R A -o R"],
)
def test_force_never_replaces_an_input(copies, case):
    """A1-A4: --force over an input of the same command is a usage error (exit 2)."""
    words = case.split()
    names = {"A": copies["align"], "P": copies["pack"], "R": copies["run"]}
    args = [names.get(w, w) for w in words]
    target = names[words[-1]]
    before = tree_state(target)
    extra = ["--device", "cpu"] if words[0] == "embed" else []
    extra += list(TRAIN_ARGS) if words[0] == "train" else []
    r = facecl(*args, "--force", *extra)
    one_line_error(r, 2, "is an input", "choose an -o outside the inputs")
    _untouched(target, before)


def test_force_over_an_artifact_of_another_stage_is_refused(copies):
    """A5: `pack A2 -o R --force` would delete a trained run: refused, the run stays."""
    before = tree_state(copies["run"])
    r = facecl("pack", copies["align"], "-o", copies["run"], "--force")
    one_line_error(r, 1, "is a 'train' artifact", "only an artifact of the same stage")
    _untouched(copies["run"], before)


def test_output_inside_the_input_tree_is_refused(tmp_path):
    """A6: `align base -o base/_out` would pollute the next listing of base."""
    base = make_source(tmp_path / "base", per_identity=1)
    before = tree_state(base)
    r = facecl("align", base, "-o", base / "_out", *ALIGN_ARGS)
    one_line_error(r, 2, "is inside", "choose an -o outside")
    assert tree_state(base) == before and not (base / "_out.partial").exists()


def test_output_inside_an_input_artifact_is_refused(copies):
    """A7: `pack A -o A/sub` writes into the align artifact."""
    r = facecl("pack", copies["align"], "-o", copies["align"] / "sub", *PACK_ARGS)
    one_line_error(r, 2, "is inside")


def test_output_containing_an_input_is_refused(copies, tmp_path):
    """A8: an -o that contains an input (the input would be deleted under --force)."""
    outer = tmp_path / "outer"
    shutil.move(copies["align"], outer / "A")
    r = facecl("pack", outer / "A", "-o", outer, "--force")
    one_line_error(r, 2, "contains the input")
    assert (outer / "A" / "manifest.json").is_file()


def test_symlink_to_an_input_is_seen_through(copies, tmp_path):
    """A9: -o a symlink pointing at the input is the input."""
    link = tmp_path / "link"
    link.symlink_to(copies["align"], target_is_directory=True)
    before = tree_state(copies["align"])
    r = facecl("pack", copies["align"], "-o", link, "--force")
    one_line_error(r, 2, "is an input")
    assert tree_state(copies["align"]) == before


def test_output_under_a_regular_file(copies, tmp_path):
    """A10: -o under a regular file: one line, exit 1, nothing written."""
    f = tmp_path / "notes.txt"
    f.write_text("x")
    r = facecl("pack", copies["align"], "-o", f / "P", *PACK_ARGS)
    one_line_error(r, 1, "is a file, not a directory")
    assert f.read_text() == "x"


def test_output_name_too_long(copies, tmp_path):
    """A11: a 300-character -o name is refused up front (OUT.partial must fit too)."""
    r = facecl("pack", copies["align"], "-o", tmp_path / ("p" * 300), *PACK_ARGS)
    one_line_error(r, 1, "bytes, more than the", "shorter -o name")
    r = facecl("pack", copies["align"], "-o", tmp_path / ("p" * 250), *PACK_ARGS)
    one_line_error(r, 1, "shorter -o name")  # 250 + '.partial' > 255


def test_output_that_is_a_mount_point(copies, tmpfs):
    """A12: a mount point as -o would fail at the final rename (EBUSY) after the whole run:
    refused up front."""
    mnt = tmpfs("4m")
    r = facecl("pack", copies["align"], "-o", mnt, *PACK_ARGS)
    one_line_error(r, 1, "is a mount point", "inside it")
    assert not any(mnt.iterdir())


def test_read_only_output(copies, tmpfs):
    """A13: a read-only file system (root ignores chmod, so a real ro tmpfs)."""
    ro = tmpfs("1m", ro=True)
    r = facecl("pack", copies["align"], "-o", ro / "P", *PACK_ARGS)
    one_line_error(r, 1, "not writable")


def test_pack_checks_free_space_up_front(copies, tmpfs):
    """A14: an uncompressed pack has a known size: 6 crops of 112x96x3 (194 kB) do not fit
    in 100 kB, refused before any shard is written."""
    small = tmpfs("100k")
    r = facecl("pack", copies["align"], "-o", small / "P", *PACK_ARGS)
    one_line_error(r, 1, "not enough free space", "needed")
    assert not (small / "P.partial").exists()


def test_output_named_partial_is_refused(copies, tmp_path):
    """A15: an -o ending in .partial would never be readable as an artifact."""
    r = facecl("pack", copies["align"], "-o", tmp_path / "P.partial", *PACK_ARGS)
    one_line_error(r, 2, ".partial")


@pytest.mark.parametrize("target", ["embeddings", "pairs file"])
def test_verify_never_writes_over_its_inputs(copies, tmp_path, target):
    """A73-A74: `verify E --pairs X -o E --force` / `-o X`: exit 2, the input stays."""
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("a.png,b.png,1\n")
    out = copies["emb"] if target == "embeddings" else pairs
    before = tree_state(copies["emb"]), pairs.read_text()
    r = facecl("verify", copies["emb"], "-p", "pairs", "--pairs", pairs, "-o", out, "--force")
    one_line_error(r, 2, "is an input")
    assert (tree_state(copies["emb"]), pairs.read_text()) == before
