"""`run_pack` on real fixture faces: round trip, filtering, split, integrity, kill-and-resume."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap
from collections import Counter

import h5py
import numpy as np
import pytest

from facecl.align.artifact import FACES_CSV, read_faces
from facecl.artifacts import read_manifest, sha256_file
from facecl.errors import ArtifactError, ConfigError, InputError, IntegrityError
from facecl.pack.config import PackConfig
from facecl.pack.dataset import ShardDataset, iter_pack_images
from facecl.pack.shards import open_shard
from facecl.pack.stage import run_pack, split_identity

from .helpers import lfw_mini_people, make_align_artifact, read_png_rgb


def _keys_by_split(pack):
    return {s: sorted(k for k, _, _ in iter_pack_images(pack, split=s)) for s in ("train", "val")}


def test_round_trip_pixels_labels_and_manifest(tmp_path, aligned):
    res = run_pack([aligned], tmp_path / "p", PackConfig(shard_size=50, compression="lzf"))
    pack = res.path
    m = read_manifest(pack, stage="pack")
    rows = [r for r in read_faces(aligned) if r.output]
    classes = json.loads((pack / "classes.json").read_text())["classes"]

    seen = 0
    for key, img, label in iter_pack_images(pack):
        ident = key.split("/")[0]
        assert img.dtype == np.uint8 and img.shape == (112, 96, 3)
        np.testing.assert_array_equal(img, read_png_rgb(aligned / "aligned" / f"{key}.png"))
        assert classes[ident]["label"] == label
        seen += 1
    assert seen == len(rows) == m.counts["written"] == 176
    assert m.counts["processed"] == 179
    assert m.counts["skipped"] == {"align:no_face": 2, "align:too_small": 1}
    assert sorted(classes) == sorted({r.identity for r in rows})
    assert [classes[n]["label"] for n in sorted(classes)] == list(range(len(classes)))
    per_id = Counter(r.identity for r in rows)
    assert {n: c["images"] for n, c in classes.items()} == dict(per_id)
    # 176 train images in shards of 50: 4 shards, every file hashed for inspect --verify
    assert [s["images"] for s in m.extra["shards"]] == [50, 50, 50, 26]
    assert set(m.extra["files"]) == {s["path"] for s in m.extra["shards"]} | {
        "classes.json",
        "skipped.csv",
        "class_hist.png",
    }
    for rel, digest in m.extra["files"].items():
        assert sha256_file(pack / rel) == digest
    st = m.extra["class_stats"]
    assert (st["min"], st["max"], st["median"]) == (
        min(per_id.values()),
        max(per_id.values()),
        float(np.median(list(per_id.values()))),
    )
    assert (pack / "class_hist.png").read_bytes()[:4] == b"\x89PNG"
    with open_shard(pack / "train/shard-00000.h5") as f:
        assert f["images"].chunks == (1, 112, 96, 3) and f["images"].compression == "lzf"
        assert f["labels"].dtype == np.int64
    assert not list(pack.rglob("_pack_progress.json"))


def test_rerun_is_noop_and_output_is_reproducible(tmp_path, aligned):
    cfg = PackConfig(shard_size=64, val_fraction=0.25, seed=3)
    a = run_pack([aligned], tmp_path / "a", cfg)
    assert run_pack([aligned], tmp_path / "a", cfg).up_to_date
    b = run_pack([aligned], tmp_path / "b", cfg)
    shard_files = {s["path"] for s in a.manifest.extra["shards"]}
    # byte-identical shards: the same inputs give the same sha256
    assert {k: v for k, v in a.manifest.extra["files"].items() if k in shard_files} == {
        k: v for k, v in b.manifest.extra["files"].items() if k in shard_files
    }
    with pytest.raises(ArtifactError, match="different config"):
        run_pack([aligned], tmp_path / "a", PackConfig(shard_size=10))


def test_exclusion_with_tricky_name_variants(tmp_path):
    people = lfw_mini_people(
        ["Amelie_Mauresmo", "Ann_Veneman", "Alec_Baldwin", "Angelina_Jolie", "Andre_Agassi"]
    )
    rename = {
        "Amelie_Mauresmo": "Amélie Mauresmo",
        "Ann_Veneman": "Paul_ONeill",
        "Alec_Baldwin": "alec-baldwin",
        "Angelina_Jolie": "Angelina_Jolie-Pitt",  # not on the list: stays
        "Andre_Agassi": "André_Agassi",
    }
    art = make_align_artifact(tmp_path, people, rename=rename)
    names = tmp_path / "eval_names.txt"
    names.write_text("AMELIE  MAURESMO\nPaul O'Neill\nAlec Baldwin\n")
    res = run_pack([art], tmp_path / "p", PackConfig(exclude=(str(names), "lfw")))
    m = res.manifest
    ex = {e["list"]: e for e in m.extra["exclusions"]}
    assert list(ex) == [str(names.resolve()), "lfw"]
    assert ex[str(names.resolve())]["removed"] == ["Amélie Mauresmo", "Paul_ONeill", "alec-baldwin"]
    assert ex[str(names.resolve())]["images_removed"] == 8 + 8 + 2
    assert ex["lfw"]["removed"] == ["André_Agassi"] and ex["lfw"]["images_removed"] == 8
    classes = json.loads((res.path / "classes.json").read_text())["classes"]
    assert list(classes) == ["Angelina_Jolie-Pitt"]
    assert m.counts["skipped"]["excluded"] == 26
    skipped = list(csv.DictReader(open(res.path / "skipped.csv")))
    assert {r["identity"] for r in skipped if r["reason"] == "excluded"} == {
        "Amélie Mauresmo",
        "Paul_ONeill",
        "alec-baldwin",
        "André_Agassi",
    }
    # the list file is an input: editing it changes the fingerprint
    assert any(i["path"] == str(names.resolve()) for i in m.inputs)


def test_lfw_exclusion_removes_every_lfw_identity(tmp_path, aligned):
    with pytest.raises(InputError, match="nothing left to pack"):
        run_pack([aligned], tmp_path / "p", PackConfig(exclude=("lfw",)))
    assert not (tmp_path / "p").exists()


def test_min_images(tmp_path, aligned):
    res = run_pack([aligned], tmp_path / "p", PackConfig(min_images=4))
    per_id = Counter(r.identity for r in read_faces(aligned) if r.output)
    keep = {i for i, n in per_id.items() if n >= 4}
    classes = json.loads((res.path / "classes.json").read_text())["classes"]
    assert set(classes) == keep and 0 < len(keep) < len(per_id)
    mi = res.manifest.extra["min_images"]
    assert mi["identities_removed"] == len(per_id) - len(keep)
    assert mi["images_removed"] == sum(n for i, n in per_id.items() if i not in keep)
    assert res.manifest.counts["skipped"]["min_images"] == mi["images_removed"]
    assert res.manifest.extra["class_stats"]["min"] >= 4


def test_val_split_is_deterministic_per_identity_and_by_image(tmp_path, aligned):
    cfg = PackConfig(val_fraction=0.3, seed=7)
    a = _keys_by_split(run_pack([aligned], tmp_path / "a", cfg).path)
    b = _keys_by_split(run_pack([aligned], tmp_path / "b", cfg).path)
    c = _keys_by_split(
        run_pack([aligned], tmp_path / "c", PackConfig(val_fraction=0.3, seed=8)).path
    )
    assert a == b and a["val"] != c["val"]
    assert not set(a["train"]) & set(a["val"])
    per_id = Counter(k.split("/")[0] for k in a["train"] + a["val"])
    val_id = Counter(k.split("/")[0] for k in a["val"])
    for ident, n in per_id.items():
        # n * 0.3 rounded down or up, and at least one train image each
        assert val_id[ident] in {min(int(n * 0.3), n - 1), min(int(n * 0.3) + 1, n - 1)}
    # unbiased: about 30% of the images of identities that can give one (n >= 2), even though
    # they hold only 2-8 images each (rounding down would give 23 of 131)
    multi = sum(n for n in per_id.values() if n >= 2)
    assert abs(len(a["val"]) - 0.3 * multi) < 8
    # an identity's split does not depend on which other identities are packed
    sub = make_align_artifact(tmp_path, lfw_mini_people(["Ali_Naimi", "Abdullah_Gul"]), name="s")
    d = _keys_by_split(run_pack([sub], tmp_path / "d", cfg).path)
    assert d["val"] == [k for k in a["val"] if k.split("/")[0] in ("Ali_Naimi", "Abdullah_Gul")]
    # the dataset sees the same split
    assert len(ShardDataset(tmp_path / "a", split="val")) == len(a["val"])


def test_split_identity_unit():
    keys = [f"x/{i}" for i in range(10)]
    assert split_identity(keys, "x", 0.0, 0) == set()
    assert split_identity(keys[:1], "x", 0.9, 0) == set()
    assert len(split_identity(keys[:2], "x", 0.99, 0)) == 1
    v = split_identity(keys, "x", 0.35, 1)
    assert len(v) in (3, 4) and v == split_identity(list(reversed(keys)), "x", 0.35, 1)
    assert len(split_identity(keys, "x", 0.3, 2)) == 3  # 3.0 exactly: never rounded up
    # stochastic rounding over many 4-image identities: 0.1 * 4 = 0.4 images on average
    sizes = [len(split_identity(keys[:4], f"id{i}", 0.1, 0)) for i in range(2000)]
    assert set(sizes) == {0, 1} and abs(np.mean(sizes) - 0.4) < 0.05


def test_several_align_artifacts_merge_and_duplicates_are_refused(tmp_path):
    people = lfw_mini_people(["Ali_Naimi", "Abdullah_Gul", "Alec_Baldwin"])
    first = {k: v[: len(v) // 2] for k, v in people.items()}
    second = {k: v[len(v) // 2 :] for k, v in people.items()}
    a1 = make_align_artifact(tmp_path, first, name="a1")
    a2 = make_align_artifact(tmp_path, second, name="a2")
    res = run_pack([a1, a2], tmp_path / "p", PackConfig())
    assert res.manifest.counts["written"] == sum(map(len, people.values()))
    assert res.manifest.counts["classes"] == 3
    assert len(res.manifest.inputs) == 2
    dup = make_align_artifact(tmp_path, {"Ali_Naimi": people["Ali_Naimi"][:1]}, name="dup")
    with pytest.raises(InputError, match="appears twice"):
        run_pack([a1, dup], tmp_path / "q", PackConfig())


def test_bad_inputs(tmp_path, aligned):
    run_pack([aligned], tmp_path / "p", PackConfig())
    with pytest.raises(ArtifactError, match="expected 'align'"):
        run_pack([tmp_path / "p"], tmp_path / "q", PackConfig())
    mixed = make_align_artifact(
        tmp_path,
        lfw_mini_people(["Ali_Naimi"]),
        rename={"Ali_Naimi": "Square"},
        size=(112, 112),
        name="square",
    )
    with pytest.raises(InputError, match="share one size"):
        run_pack([aligned, mixed], tmp_path / "r", PackConfig())
    broken = make_align_artifact(tmp_path, lfw_mini_people(["Alec_Baldwin"]), name="broken")
    (broken / FACES_CSV).write_text("source,identity\nx,y\n")  # not the manifest's faces.csv
    with pytest.raises(IntegrityError, match="faces.csv was changed after align wrote it"):
        run_pack([broken], tmp_path / "s", PackConfig())
    with pytest.raises(ConfigError, match="compression"):
        PackConfig(compression="zstd")
    with pytest.raises(ConfigError, match="val_fraction"):
        PackConfig(val_fraction=1.0)


def test_integrity_flipped_byte_and_truncation(tmp_path, aligned):
    from facecl.inspect.verify import verify_artifact

    pack = run_pack([aligned], tmp_path / "p", PackConfig(shard_size=100)).path
    m = read_manifest(pack)
    assert verify_artifact(pack, m)["files"] == len(m.extra["files"])
    shard = pack / "train/shard-00001.h5"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="altered or truncated"):
        verify_artifact(pack, m)
    with pytest.raises(IntegrityError, match="shard-00001.h5 is altered or truncated"):
        ShardDataset(pack)  # the loader checks what it reads (docs/reliability.md, part B)
    shard.write_bytes(bytes(data[:2000]))
    with pytest.raises(IntegrityError, match="truncated or not HDF5"):
        ShardDataset(pack, verify=False)


KILL_SCRIPT = """
import os, signal, sys
from facecl.pack import shards

orig = shards.ShardWriter.add
calls = {{"n": 0}}

def add(self, *a, **k):
    orig(self, *a, **k)
    calls["n"] += 1
    if calls["n"] == {kill_after}:
        os.kill(os.getpid(), signal.SIGKILL)  # a hard kill mid-shard: no cleanup runs

shards.ShardWriter.add = add
from facecl.cli import app
app(sys.argv[1:])
"""


def test_killed_pack_leaves_nothing_complete_and_resumes(tmp_path, aligned):
    out = tmp_path / "p"
    args = ["pack", str(aligned), "-o", str(out), "--shard-size", "40", "--val-fraction", "0.2"]
    script = textwrap.dedent(KILL_SCRIPT.format(kill_after=95))  # 2 shards + 15 images
    proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    partial = tmp_path / "p.partial"
    assert not out.exists()
    with pytest.raises(ArtifactError, match="incomplete"):
        read_manifest(out)
    assert sorted(p.name for p in (partial / "train").iterdir()) == [
        "shard-00000.h5",
        "shard-00001.h5",
        "shard-00002.h5.tmp",
    ]
    done = json.loads((partial / "_pack_progress.json").read_text())["shards"]
    assert sorted(done) == ["train/shard-00000.h5", "train/shard-00001.h5"]

    res = run_pack([aligned], out, PackConfig(shard_size=40, val_fraction=0.2))
    assert res.resumed_shards == 2 and not partial.exists()
    fresh = run_pack([aligned], tmp_path / "fresh", PackConfig(shard_size=40, val_fraction=0.2))
    assert res.manifest.extra["files"] == fresh.manifest.extra["files"]
    assert res.manifest.fingerprint == fresh.manifest.fingerprint
    with h5py.File(out / "train/shard-00002.h5") as f:
        assert f["images"].shape[0] == 40


def test_resume_rewrites_a_damaged_finished_shard(tmp_path, aligned):
    out = tmp_path / "p"
    args = ["pack", str(aligned), "-o", str(out), "--shard-size", "60"]
    script = textwrap.dedent(KILL_SCRIPT.format(kill_after=130))
    proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True)
    assert proc.returncode == -9
    first = tmp_path / "p.partial" / "train" / "shard-00000.h5"
    first.write_bytes(first.read_bytes()[:-10])  # damaged while the run was dead
    res = run_pack([aligned], out, PackConfig(shard_size=60))
    assert res.resumed_shards == 1  # shard 1 reused, shard 0 rewritten
    assert len(ShardDataset(out)) == 176
