"""Per-rank checkpoints with a JSON index (facecl.train.sharded_checkpoint): the index alone
gives the step, each rank reads only the files of its rows, every file is checked against
its sha256, and a different world size reshards to the same tensors (issue 17)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from facecl.errors import CheckpointError
from facecl.train import sharded_checkpoint as sc
from facecl.train.last import class_ranges as even

C, D = 10, 3


def full_state(num_classes: int = C, seed: int = 0) -> dict[str, torch.Tensor]:
    """What an unsharded run holds for every class: head rows, centers, counts, momentum."""
    g = torch.Generator().manual_seed(seed)
    return {
        "head_state.weight": torch.randn(num_classes, D, generator=g),
        "head_state.bias": torch.randn(num_classes, generator=g),
        "loss_state.centers": torch.randn(num_classes, D, generator=g),
        "loss_state.class_counts": torch.arange(num_classes, dtype=torch.int64),
        "momentum.head.weight": torch.randn(num_classes, D, generator=g),
    }


SHARED = {"model": {"w": torch.arange(6.0)}, "rng": {"torch": torch.get_rng_state()}, "k": 1}


def save(tmp_path, world: int, step: int = 7, num_classes: int = C, name: str = "last"):
    full = full_state(num_classes)
    ranges = even(num_classes, world)
    rows = [sc.split_rows(full, lo, hi) for lo, hi in ranges]
    meta = {"config": {"lr": 0.1}}
    index = sc.save_set(
        tmp_path / name, step=step, ranges=ranges, rows=rows, shared=SHARED, meta=meta
    )
    return index, full


def test_save_writes_one_file_per_rank_and_an_index(tmp_path):
    index, full = save(tmp_path, world=4)
    ckpt = tmp_path / "last"
    assert sorted(p.name for p in ckpt.iterdir()) == ["index.json", "s000000007"]
    assert sorted(p.name for p in index.data.iterdir()) == [
        "rank-0-of-4.pt",
        "rank-1-of-4.pt",
        "rank-2-of-4.pt",
        "rank-3-of-4.pt",
        "shared.pt",
    ]
    raw = json.loads((ckpt / "index.json").read_text())
    assert raw["step"] == 7 and raw["world"] == 4 and raw["num_classes"] == C
    assert raw["ranges"] == [[0, 3], [3, 6], [6, 8], [8, 10]]
    assert raw["meta"] == {"config": {"lr": 0.1}}
    assert raw["sharded_keys"]["head_state.weight"] == {"dtype": "float32", "shape": [D]}
    assert raw["sharded_keys"]["loss_state.class_counts"] == {"dtype": "int64", "shape": []}
    for entry in raw["ranks"]:
        assert (index.data / entry["file"]).stat().st_size == entry["size"]
    for r, (lo, hi) in enumerate(index.ranges):
        rows = sc.load_rows(index, lo, hi)
        assert set(rows) == set(full)
        for key, t in rows.items():
            assert torch.equal(t, full[key][lo:hi]), (r, key)
    shared = sc.load_shared(index)
    assert torch.equal(shared["model"]["w"], SHARED["model"]["w"]) and shared["k"] == 1


def test_the_step_comes_from_the_index_alone(tmp_path, monkeypatch):
    index, _ = save(tmp_path, world=2, step=123)
    for f in index.data.iterdir():
        f.unlink()  # no tensor file left to read
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("read a tensor file"))
    again = sc.read_index(tmp_path / "last")
    assert (again.step, again.world, again.ranges) == (123, 2, [(0, 5), (5, 10)])
    assert again.meta["config"] == {"lr": 0.1}


def test_a_rank_opens_only_the_files_of_its_rows(tmp_path, monkeypatch):
    index, full = save(tmp_path, world=4)
    opened: list[str] = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda p, **k: opened.append(p.name) or real(p, **k))
    rows = sc.load_rows(index, 3, 6)  # exactly rank 1's rows: a view of its mapped file
    assert opened == ["rank-1-of-4.pt"]
    assert torch.equal(rows["head_state.weight"], full["head_state.weight"][3:6])
    opened.clear()
    sc.load_rows(index, 5, 8)  # across ranks 1 and 2
    assert opened == ["rank-1-of-4.pt", "rank-2-of-4.pt"]


@pytest.mark.parametrize("part", ["rank-2-of-4.pt", "shared.pt"])
def test_a_flipped_byte_is_a_one_line_checkpoint_error(tmp_path, part):
    index, _ = save(tmp_path, world=4)
    path = index.data / part
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the sha256") as e:
        sc.load_shared(index) if part == "shared.pt" else sc.load_rows(index, 5, 8)
    assert e.value.exit_code == 1 and "\n" not in str(e.value) and part in str(e.value)
    sc.load_rows(index, 0, 3)  # the other ranks' files are fine


def test_a_truncated_or_missing_file_is_a_checkpoint_error(tmp_path):
    index, _ = save(tmp_path, world=2)
    path = index.data / "rank-1-of-2.pt"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="bytes, its index says"):
        sc.load_rows(index, 0, C)
    path.unlink()
    with pytest.raises(CheckpointError, match="is missing"):
        sc.load_rows(index, 5, C)


@pytest.mark.parametrize(
    "edit, match",
    [
        ({"dir": "../elsewhere"}, "not a plain name"),
        ({"ranges": [[0, 4], [5, 10]]}, "expected to start at 4"),
        ({"ranges": [[0, 5], [5, 9]]}, "not at num_classes"),
        ({"world": 3}, "world 3 with 2 ranges"),
        ({"version": 99}, "upgrade facecl"),
        ({"format": "other"}, "not a facecl sharded checkpoint"),
    ],
)
def test_a_malformed_index_is_a_checkpoint_error(tmp_path, edit, match):
    save(tmp_path, world=2)
    path = tmp_path / "last" / "index.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **edit}))
    with pytest.raises(CheckpointError, match=match):
        sc.read_index(tmp_path / "last")


def test_a_file_of_other_rows_is_refused(tmp_path):
    """The index's sha matches, but the file holds other rows (copied over by hand)."""
    index, _ = save(tmp_path, world=2)
    raw = json.loads((tmp_path / "last" / "index.json").read_text())
    raw["ranges"] = [[0, 4], [4, 10]]
    (tmp_path / "last" / "index.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match=r"does not hold rows \[0, 4\)"):
        sc.load_rows(sc.read_index(tmp_path / "last"), 0, 4)


def test_a_second_save_replaces_the_first_and_removes_it(tmp_path):
    save(tmp_path, world=2, step=3)
    index, _ = save(tmp_path, world=4, step=5)
    assert sorted(p.name for p in (tmp_path / "last").iterdir()) == ["index.json", "s000000005"]
    again, _ = save(tmp_path, world=4, step=5)  # the same step again (a stop right after it)
    assert again.dir == "s000000005-1" and not index.data.exists()


# --------------------------------------------------------------------------- resharding


@pytest.mark.parametrize("new_world", [1, 2, 3, 4, 5])
def test_resharding_gives_the_rows_of_the_unsharded_state(tmp_path, new_world):
    index, full = save(tmp_path, world=4)
    got: dict[str, list[torch.Tensor]] = {k: [] for k in full}
    for lo, hi in even(C, new_world):
        for key, t in sc.load_rows(index, lo, hi).items():
            assert t.shape[0] == hi - lo
            got[key].append(t)
    for key, parts in got.items():
        assert torch.equal(torch.cat(parts), full[key]), key


def test_a_sharded_run_from_an_unsharded_state(tmp_path):
    """W=1 -> 3: split the full tensors; saving those shards gives back the full state."""
    full = full_state()
    ranges = even(C, 3)
    rows = [sc.split_rows(full, lo, hi) for lo, hi in ranges]
    index = sc.save_set(tmp_path / "last", step=1, ranges=ranges, rows=rows, shared={}, meta={})
    whole = sc.load_rows(index, 0, C)
    assert all(torch.equal(whole[k], full[k]) for k in full)


def test_more_ranks_than_classes(tmp_path):
    full = full_state(num_classes=2)
    ranges = [(0, 1), (1, 1), (1, 2)]  # rank 1 owns no class
    rows = [sc.split_rows(full, lo, hi) for lo, hi in ranges]
    index = sc.save_set(tmp_path / "last", step=1, ranges=ranges, rows=rows, shared={}, meta={})
    assert sc.load_rows(index, 1, 1)["head_state.weight"].shape == (0, D)
    assert torch.equal(sc.load_rows(index, 0, 2)["head_state.bias"], full["head_state.bias"])


RESHARD_RSS = """
import sys
from facecl.train import sharded_checkpoint as sc
from facecl.train.last import class_ranges as even

def rss_mib():
    with open("/proc/self/status") as f:
        return int(f.read().split("VmHWM:")[1].split()[0]) / 1024  # the peak RSS

index = sc.read_index(sys.argv[1])
before = rss_mib()
rows = sc.load_rows(index, 96, 160)  # half of rank 1's rows and half of rank 2's
assert rows["w"].shape == (64, 1 << 18) and float(rows["w"][0, 0]) == 1.0
assert float(rows["w"][-1, 0]) == 2.0
print(rss_mib() - before)
"""


def test_resharding_reads_about_one_shard_into_memory(tmp_path):
    """Four shards of 64 MiB; the 64 rows asked for (64 MiB, half of two files) raise the
    peak RSS by about that plus half a shard, not by the two whole files (memory-mapped, and
    each file unmapped before the next)."""
    ranges = [(0, 64), (64, 128), (128, 192), (192, 256)]
    rows = [{"w": torch.full((64, 1 << 18), float(r), dtype=torch.float32)} for r in range(4)]
    sc.save_set(tmp_path / "last", step=1, ranges=ranges, rows=rows, shared={}, meta={})
    del rows
    out = subprocess.run(
        [sys.executable, "-c", RESHARD_RSS, str(tmp_path / "last")],
        capture_output=True,
        text=True,
        check=True,
    )
    grown = float(out.stdout.strip().splitlines()[-1])
    assert grown < 64 + 48, f"resharding grew the peak RSS by {grown:.0f} MiB (the rows are 64 MiB)"


# --------------------------------------------------------------------------- payloads


def test_a_payload_splits_into_shared_and_rows_and_back():
    w, m, c = torch.randn(4, 2), torch.randn(4, 2), torch.randn(4, 2)
    payload = {
        "model": {"conv.weight": torch.ones(1)},
        "head_state": {"weight": w, "lambda_step": torch.tensor(3)},
        "loss_state": {"centers": c},
        "optimizer": {"state": {0: {"momentum_buffer": torch.ones(1)}, 3: {"momentum_buffer": m}}},
        "step": 5,
    }
    paths = [
        ("head_state", "weight"),
        ("loss_state", "centers"),
        ("optimizer", "state", 3, "momentum_buffer"),
    ]
    shared, rows = sc.split_payload(payload, paths)
    assert set(rows) == {
        "head_state/weight",
        "loss_state/centers",
        "optimizer/state/3/momentum_buffer",
    }
    assert "weight" not in shared["head_state"] and shared["optimizer"]["state"][3] == {}
    assert "weight" in payload["head_state"]  # the payload itself is left as it was
    back = sc.merge_payload(shared, rows)
    assert back["optimizer"]["state"][3]["momentum_buffer"] is m and back["step"] == 5
    assert back["head_state"]["weight"] is w and back["head_state"]["lambda_step"] == 3
    with pytest.raises(ValueError, match="cannot be part of a sharded key"):
        sc.row_key(("head_state", "a/b"))
