"""`facecl pack` of insightface RecordIO sets: the mxnet-written fixture round-trips (pixels
equal the decoded JPEGs, labels match identities.txt), both index layouts, records in parts,
corrupt records counted, --names/--exclude, and kill-and-resume."""

from __future__ import annotations

import csv
import json
import shutil
import struct
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from facecl.artifacts import read_manifest
from facecl.cli import app
from facecl.errors import InputError
from facecl.pack.config import PackConfig
from facecl.pack.dataset import ShardDataset, iter_pack_images
from facecl.pack.stage import run_pack

from .helpers import LFW_MINI_IMAGES
from .recordio_writer import MAGIC, frame, image_record, insightface_layout, write_recordio
from .test_stage import KILL_SCRIPT

ROOT = Path(__file__).resolve().parents[2]
REC = ROOT / "tests" / "data" / "insightface" / "lfw_mini_rec"
runner = CliRunner()


def sequential_records(rec: Path) -> list[bytes]:
    """Every record of a .rec file, read front to back without the index (the oracle)."""
    data, pos, out, parts = rec.read_bytes(), 0, [], []
    while pos < len(data):
        magic, lrec = struct.unpack_from("<II", data, pos)
        assert magic == MAGIC
        n, cflag = lrec & ((1 << 29) - 1), lrec >> 29
        parts.append(data[pos + 8 : pos + 8 + n])
        pos += 8 + n + (-n % 4)
        if cflag in (0, 3):
            out.append(struct.pack("<I", MAGIC).join(parts))
            parts = []
    return out


def header(record: bytes) -> tuple[int, list[float], bytes]:
    """(flag, labels, payload) of an image record."""
    flag, label = struct.unpack_from("<If", record)
    labels = list(struct.unpack_from(f"<{flag}f", record, 24)) if flag else [label]
    return flag, labels, record[24 + 4 * flag :]


def rgb(payload: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]


@pytest.fixture(scope="module")
def records() -> list[bytes]:
    """The fixture's records in key order (record i has key i)."""
    return sequential_records(REC / "train.rec")


@pytest.fixture(scope="module")
def faces(records) -> list[tuple[int, bytes]]:
    """(label, jpeg) of the fixture's 176 faces."""
    n = int(header(records[0])[1][0]) - 1
    return [(int(header(r)[1][0]), header(r)[2]) for r in records[1 : n + 1]]


def identities() -> dict[int, str]:
    rows = (line.split("\t") for line in (REC / "identities.txt").read_text().splitlines())
    return {int(i): name for i, name in rows}


def test_fixture_round_trips_pixels_and_labels(tmp_path, records):
    out = tmp_path / "p"
    args = ["pack", str(REC), "-o", str(out), "--names", str(REC / "identities.txt"), "--json"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    ids = identities()
    ds = ShardDataset(out)
    seen = 0
    for key, img, label in iter_pack_images(out):
        name, rec_key = key.split("/")
        flag, labels, payload = header(records[int(rec_key)])
        assert flag == 0 and ids[int(labels[0])] == name == ds.class_names[label]
        np.testing.assert_array_equal(img, rgb(payload))  # the pixels are the JPEG's, RGB
        seen += 1
    assert seen == 176
    per_name = Counter(ds.class_names[lab] for lab in ds.labels)
    lfw = {d.name: len(list(d.glob("*.jpg"))) for d in LFW_MINI_IMAGES.iterdir() if d.is_dir()}
    assert per_name == lfw  # the fixture holds every lfw_mini face under its own name
    m = read_manifest(out, stage="pack")
    assert m.extra["source"]["layout"] == "identity_ranges"
    assert m.extra["source"]["label_mismatches"] == 0
    assert m.extra["overlap_filter"] == {"ran": True}
    assert m.extra["input_spec"]["template"] == "112x112" and ds.image_size == (112, 112)
    assert json.loads(r.stdout)["images"] == 176


def test_without_names_the_manifest_says_the_overlap_filter_did_not_run(tmp_path):
    out = tmp_path / "p"
    r = runner.invoke(app, ["pack", str(REC), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "no identity could be checked" in r.stderr
    m = read_manifest(out, stage="pack")
    assert m.extra["overlap_filter"]["ran"] is False
    assert "--names" in m.extra["overlap_filter"]["reason"]
    ds = ShardDataset(out)
    assert ds.class_names == [f"{i:02d}" for i in range(75)]  # class ids, in id order
    bad = runner.invoke(app, ["pack", str(REC), "-o", str(tmp_path / "q"), "--exclude", "lfw"])
    assert bad.exit_code == 2 and "--exclude needs identity names" in bad.stderr
    assert "Traceback" not in bad.output and not (tmp_path / "q").exists()


def test_names_and_exclude_remove_identities(tmp_path):
    ids = identities()
    excl = tmp_path / "test_people.txt"
    excl.write_text("Aaron Eckhart\nABDULLAH GUL\n")  # name variants, folded by the filter
    removed = {"Aaron_Eckhart", "Abdullah_Gul"}
    assert removed <= set(ids.values())
    cfg = PackConfig(names=str(REC / "identities.txt"), exclude=(str(excl),))
    res = run_pack([REC], tmp_path / "p", cfg)
    m = res.manifest
    (e,) = m.extra["exclusions"]
    assert set(e["removed"]) == removed and e["identities_removed"] == 2
    names = set(ShardDataset(res.path).class_names)
    assert names == set(ids.values()) - removed
    with open(res.path / "skipped.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["reason"] == "excluded"]
    assert len(rows) == e["images_removed"] == m.counts["skipped"]["excluded"]
    assert m.counts["written"] == 176 - e["images_removed"]


def test_a_names_file_must_name_every_class(tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("".join(f"{i}\tperson_{i}\n" for i in range(74)))  # class 74 unnamed
    with pytest.raises(InputError, match="no name for class 74"):
        run_pack([REC], tmp_path / "p", PackConfig(names=str(names)))


def test_a_names_file_that_is_not_utf8_is_one_line(tmp_path):
    """B62: a Latin-1 names file is exit 1 naming the file, line and byte, not a traceback."""
    names = tmp_path / "names.txt"
    names.write_bytes(b"0\tJos\xe9\n")
    r = runner.invoke(app, ["pack", str(REC), "-o", str(tmp_path / "p"), "--names", str(names)])
    assert r.exit_code == 1 and "names.txt:1: not UTF-8 text (byte 0xe9" in r.stderr
    assert "Traceback" not in r.output


def test_plain_keys_layout_and_records_in_parts(tmp_path, faces):
    """No record 0 header: every key is a face labelled by its header. One record's header
    holds the magic word (its id), so the writer splits it and the reader must rejoin it."""
    recs = [(k, image_record(float(lab), k, jpeg)) for k, (lab, jpeg) in enumerate(faces)]
    recs[5] = (5, image_record(float(faces[5][0]), MAGIC, faces[5][1]))
    assert struct.unpack_from("<II", frame(recs[5][1]))[1] >> 29 == 1  # the first of parts
    write_recordio(tmp_path / "plain", recs)
    res = run_pack([tmp_path / "plain"], tmp_path / "p", PackConfig())
    m = res.manifest
    assert m.extra["source"]["layout"] == "plain_keys" and m.counts["written"] == 176
    assert m.counts["skipped"] == {}
    got = {
        int(k.split("/")[1]): (img, int(k.split("/")[0]))
        for k, img, _ in iter_pack_images(res.path)
    }
    for k, (lab, jpeg) in enumerate(faces):
        img, name = got[k]
        assert name == lab
        np.testing.assert_array_equal(img, rgb(jpeg))


def test_corrupt_records_are_counted_and_recorded(tmp_path, faces):
    recs = insightface_layout(faces)
    recs[10] = (10, image_record(float(faces[9][0]), 10, b"\xff\xd8 not a jpeg"))
    lab = faces[19][0]
    recs[20] = (20, image_record(float(lab + 1), 20, faces[19][1]))  # outside its range
    folder = tmp_path / "bad"
    offsets = write_recordio(folder, recs, "75,112,112")
    rec = folder / "train.rec"
    data = bytearray(rec.read_bytes())
    data[offsets[30] : offsets[30] + 4] = b"XXXX"  # bad magic
    rec.write_bytes(bytes(data))
    idx = (
        (folder / "train.idx")
        .read_text()
        .replace(f"\n40\t{offsets[40]}\n", f"\n40\t{len(data) - 4}\n")
    )
    idx = idx.replace(f"\n50\t{offsets[50]}\n", "\n")  # a face of a range, not indexed
    (folder / "train.idx").write_text(idx)  # key 40 points 4 bytes before the end: truncated

    res = run_pack([folder], tmp_path / "p", PackConfig(shard_size=50))
    m = res.manifest
    assert m.counts["skipped"] == {
        "undecodable": 1,
        "label_mismatch": 1,
        "bad_magic": 1,
        "truncated": 1,
        "not_indexed": 1,
    }
    assert m.counts["written"] == 171 == len(ShardDataset(res.path))
    assert sum(s["images"] for s in m.extra["shards"]) == 171
    assert m.extra["source"]["label_mismatches"] == 1
    with open(res.path / "skipped.csv") as f:
        rows = {r["reason"]: r for r in csv.DictReader(f)}
    assert rows["undecodable"]["key"].endswith("/010")
    assert rows["label_mismatch"]["key"] == "train.rec#20"
    assert "range of class" in rows["label_mismatch"]["detail"]
    assert rows["bad_magic"]["key"] == "train.rec#30"
    assert rows["truncated"]["key"] == "train.rec#40"
    assert rows["not_indexed"]["key"] == "train.rec#50"
    lost = ("/010", "/020", "/030", "/040", "/050")
    assert all(not k.endswith(lost) for k, *_ in iter_pack_images(res.path))


def test_killed_recordio_pack_resumes_to_the_same_shards(tmp_path):
    out = tmp_path / "p"
    args = ["pack", str(REC), "-o", str(out), "--shard-size", "40"]
    script = textwrap.dedent(KILL_SCRIPT.format(kill_after=95))
    proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    res = run_pack([REC], out, PackConfig(shard_size=40))
    assert res.resumed_shards == 2
    fresh = run_pack([REC], tmp_path / "fresh", PackConfig(shard_size=40))
    assert res.manifest.extra["files"] == fresh.manifest.extra["files"]


def test_a_folder_of_rec_files_without_the_standard_names_is_refused(tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    shutil.copy(REC / "train.rec", folder / "faces.rec")
    r = runner.invoke(app, ["pack", str(folder), "-o", str(tmp_path / "p")])
    assert r.exit_code == 1 and "train.rec" in r.stderr and "Traceback" not in r.output
