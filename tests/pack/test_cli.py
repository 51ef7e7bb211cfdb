"""`facecl pack` and `facecl inspect --verify` end to end through the CLI."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from facecl.artifacts import read_manifest
from facecl.cli import app
from facecl.pack.dataset import ShardDataset

from .helpers import lfw_mini_people, make_align_artifact

runner = CliRunner()


def test_pack_cli_end_to_end(tmp_path, aligned):
    names = tmp_path / "names.txt"
    names.write_text("Ali Naimi\nALEJANDRO TOLEDO\n")
    out = tmp_path / "packed"
    args = [
        "pack",
        str(aligned),
        "-o",
        str(out),
        "--shard-size",
        "64",
        "--compression",
        "gzip",
        "--exclude",
        str(names),
        "--min-images",
        "2",
        "--val-fraction",
        "0.2",
        "--seed",
        "5",
        "--json",
    ]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    m = read_manifest(out, stage="pack")
    assert summary["images"] == m.counts["written"] == summary["train"] + summary["val"]
    assert summary["exclusions"] == [
        {"list": str(names.resolve()), "identities_removed": 2, "images_removed": 16}
    ]
    assert m.config["compression"] == "gzip" and m.config["seed"] == 5
    assert m.extra["min_images"]["identities_removed"] > 0
    assert "excluded 2 identities (16 images)" in r.stderr
    ds = ShardDataset(out, split="train")
    assert len(ds) == summary["train"] and ds.num_classes == summary["classes"]

    again = runner.invoke(app, args)
    assert again.exit_code == 0 and json.loads(again.stdout)["up_to_date"] is True

    ok = runner.invoke(app, ["inspect", str(out), "--verify", "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["verified"]["files"] == len(m.extra["files"])

    shard = out / "train" / "shard-00000.h5"
    data = bytearray(shard.read_bytes())
    data[len(data) * 2 // 3] ^= 0x80  # one flipped bit inside the image data
    shard.write_bytes(bytes(data))
    bad = runner.invoke(app, ["inspect", str(out), "--verify"])
    assert bad.exit_code == 1
    assert "shard-00000.h5 is altered or truncated" in bad.stderr.replace("\n", "")


def test_pack_cli_errors(tmp_path):
    art = make_align_artifact(tmp_path, lfw_mini_people(["Ali_Naimi"]))
    r = runner.invoke(app, ["pack", str(art), "-o", str(tmp_path / "p"), "--exclude", "lfw"])
    assert r.exit_code == 1 and "nothing left to pack" in r.stderr
    r = runner.invoke(app, ["pack", str(art), "-o", str(tmp_path / "p"), "--exclude", "nope"])
    assert r.exit_code == 1 and "neither a built-in list nor a file" in r.stderr
    r = runner.invoke(app, ["pack", str(art), "-o", str(tmp_path / "p"), "--compression", "x"])
    assert r.exit_code == 2 and "'none', 'lzf', 'gzip'" in " ".join(
        r.output.replace("│", " ").split()
    )
    plain = tmp_path / "plain"  # a folder that is not an artifact (and does not hold -o)
    plain.mkdir()
    r = runner.invoke(app, ["pack", str(plain), "-o", str(tmp_path / "p")])
    assert r.exit_code == 1 and "no facecl artifact" in r.stderr
