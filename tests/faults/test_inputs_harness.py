"""The bad-input harness (issue 13): feed every bad-input kind of ``hostile.build`` to
``facecl align`` and ``facecl embed`` (real processes) and check that inputs = rows +
counted skips: each entry is one row with its reason, hidden files are counted, nothing
is unaccounted and nothing crashes; a re-run is a clean no-op."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import h5py
import pytest

from facecl.artifacts import read_manifest
from facecl.models import create_backbone
from facecl.train.checkpoint import save_checkpoint

from .hostile import build

DECODE_FAILS = {"truncated", "corrupt", "empty_file", "not_an_image", "missing"}


def facecl(*args, check=True):
    r = subprocess.run(
        [sys.executable, "-m", "facecl", *map(str, args)], capture_output=True, text=True
    )
    assert "Traceback" not in r.stderr, r.stderr
    if check:
        assert r.returncode == 0, r.stderr
    return r


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    return build(tmp_path_factory.mktemp("h"))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """An untrained 'tiny' backbone for 112x96 crops: embed only has to run."""
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    net = create_backbone("tiny", feature_dim=8)
    payload = {
        "arch": "tiny",
        "arch_kwargs": {"feature_dim": 8},
        "feature_dim": 8,
        "input_size": [112, 96],
        "loss": "cl",
        "config": {},
        "model": net.state_dict(),
    }
    save_checkpoint(path, payload)
    return path


def test_align_accounts_for_every_input(hostile, tmp_path):
    out = tmp_path / "a"
    facecl("align", hostile.root, "-o", out, "--device", "cpu", "--json")
    with open(out / "faces.csv", newline="", encoding="utf-8") as f:
        rows = {r["source"]: r for r in csv.DictReader(f)}
    assert set(rows) == set(hostile.rows)  # inputs = rows: none lost, none invented
    for source, reason in hostile.rows.items():
        got = rows[source]
        if reason:
            assert (got["status"], got["reason"]) == ("skipped", reason), source
        else:  # decodable: a crop, or at worst "no_face", never a decode failure
            assert got["reason"] not in DECODE_FAILS, (source, got["reason"], got["detail"])
    counts = read_manifest(out, stage="align").counts
    assert counts["processed"] == len(hostile.rows)
    assert counts["ignored_hidden"] == hostile.hidden
    assert sum(counts["status"].values()) == len(hostile.rows)
    again = facecl("align", hostile.root, "-o", out, "--device", "cpu", "--json")
    assert json.loads(again.stdout)["noop"] is True  # the non-UTF-8 names hash fine


def test_embed_accounts_for_every_input(hostile, ckpt, tmp_path):
    out = tmp_path / "e"
    facecl("embed", ckpt, hostile.root, "-o", out, "--device", "cpu", "--json")
    with h5py.File(out / "embeddings.h5") as f:
        keys = [k.decode() for k in f["keys"][:]]
        status = dict(zip(keys, (s.decode() for s in f["status"][:]), strict=True))
    assert len(keys) == len(hostile.rows)  # one row per listed entry, hidden ones counted
    m = read_manifest(out, stage="embed")
    assert m.counts["processed"] == len(hostile.rows)
    assert m.extra["ignored_hidden"] == hostile.hidden
    assert "root_photo" in status and not any(k.startswith(".") for k in keys)
    for source, reason in hostile.rows.items():
        if reason in ("link_loop", "unsafe_name", "read_error"):  # found while listing
            key = source.rsplit(".", 1)[0] if reason == "unsafe_name" else source
            assert status[key] == reason, source
    # aligned here with align's decoder: extension-less files and GIFs are read
    for key in ("Odd/photo_without_extension", "Odd/gif_photo", "Linked/a1", "Linked/a3"):
        assert status[key] in ("ok", "no_face"), (key, status[key])
    assert status["Bad/bad_crc"] == "corrupt" and status["Bad/truncated"] == "truncated"


def test_embed_of_crops_counts_every_failure(hostile, ckpt, tmp_path):
    """``--aligned`` on photos that are not crops: nothing embeds, and the one-line error
    accounts for every input (the reasons add up to the listing)."""
    r = facecl("embed", ckpt, hostile.root, "-o", tmp_path / "e", "--aligned", check=False)
    assert r.returncode == 1
    line = " ".join(r.stderr.split())
    assert f"{len(hostile.rows)} of {len(hostile.rows)} inputs failed" in line
    reasons = line.split("inputs failed (", 1)[1].split(")", 1)[0]
    assert sum(int(part.rsplit(":", 1)[1]) for part in reasons.split(";")) == len(hostile.rows)
    assert "link_loop: 1" in reasons and "unsafe_name: 2" in reasons
