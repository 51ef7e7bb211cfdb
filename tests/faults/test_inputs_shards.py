"""B16-B20: a pack's consumers check what they read. Flipped bytes inside an image of a
shard (uncompressed or gzip) are a one-line error for the training dataset, embed of the
pack, and a re-run of ``pack`` (not "up to date"); a gzip chunk that does not inflate is an
``IntegrityError``, never a ``zlib.error`` traceback."""

from __future__ import annotations

import h5py
import pytest
from pack.helpers import lfw_mini_people, make_align_artifact
from typer.testing import CliRunner

from facecl.cli import app
from facecl.errors import IntegrityError
from facecl.pack.config import PackConfig
from facecl.pack.dataset import ShardDataset, iter_pack_images
from facecl.pack.stage import run_pack

runner = CliRunner()
SHARD = "train/shard-00000.h5"


@pytest.fixture(scope="module")
def aligned(tmp_path_factory):
    people = lfw_mini_people(["Ann_Veneman", "Ali_Naimi", "Alec_Baldwin"], 4)
    return make_align_artifact(tmp_path_factory.mktemp("a"), people)


def flip_in_image(shard, row=1, n_bytes=2):
    """Flip ``n_bytes`` bits in the middle of image ``row``'s stored chunk."""
    with h5py.File(shard, "r") as f:
        info = f["images"].id.get_chunk_info_by_coord((row, 0, 0, 0))
    data = bytearray(shard.read_bytes())
    for i in range(n_bytes):
        data[info.byte_offset + info.size // 2 + i] ^= 0x10
    shard.write_bytes(bytes(data))


@pytest.mark.parametrize("compression", ["none", "gzip", "lzf"])
def test_flipped_bytes_are_caught_by_every_consumer(aligned, tmp_path, compression):
    out = tmp_path / "p"
    args = [
        "pack",
        str(aligned),
        "-o",
        str(out),
        "--compression",
        compression,
        "--val-fraction",
        "0",
    ]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert len(ShardDataset(out, split="all")) >= 3
    flip_in_image(out / SHARD)
    with pytest.raises(IntegrityError, match="shard-00000.h5 is altered or truncated"):
        ShardDataset(out, split="all")  # what train opens
    with pytest.raises(IntegrityError, match="altered or truncated"):
        next(iter_pack_images(out))  # what embed of a pack reads
    again = runner.invoke(app, args)  # same config and inputs, damaged output
    assert again.exit_code == 1 and "altered or truncated" in again.stderr, again.output
    assert "up to date" not in again.output


def test_a_gzip_chunk_that_does_not_inflate_is_one_error(aligned, tmp_path):
    out = run_pack([aligned], tmp_path / "p", PackConfig(compression="gzip", val_fraction=0)).path
    flip_in_image(out / SHARD, row=2, n_bytes=8)
    ds = ShardDataset(out, split="all", verify=False)  # past the hash: the decoder's turn
    ds.image(0)
    with pytest.raises(IntegrityError, match="image 2 does not decompress"):
        ds.image(2)


def test_embed_of_a_damaged_pack_is_one_line(aligned, tmp_path):
    out = run_pack([aligned], tmp_path / "p", PackConfig(val_fraction=0)).path
    flip_in_image(out / SHARD)
    from facecl.embed.sources import pack_source

    with pytest.raises(IntegrityError, match="altered or truncated"):
        list(pack_source(out).images(0))


def test_a_manifest_shard_path_outside_the_pack_is_refused(aligned, tmp_path):
    import json

    out = run_pack([aligned], tmp_path / "p", PackConfig(val_fraction=0)).path
    m = json.loads((out / "manifest.json").read_text())
    m["extra"]["shards"][0]["path"] = "../../elsewhere.h5"
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IntegrityError, match="names the shard '../../elsewhere.h5', outside"):
        ShardDataset(out, split="all")
    with pytest.raises(IntegrityError, match="outside the pack"):
        next(iter_pack_images(out))
