"""OS errors and bad files as one line, exit 1, nothing that looks complete (issue 13
item 8 and item 15): a real full disk (a small tmpfs) in align, pack and train, a manifest
field of the wrong type, a checkpoint with unknown arch_kwargs, --device cuda without CUDA,
--onnx given a torch checkpoint, warnings, and a one-identity pack."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from tests.faults.conftest import ALIGN_ARGS, PACK_ARGS, TRAIN_ARGS, ok
from tests.faults.helpers import facecl, one_line_error


def _nothing_complete(out):
    """No final directory, and the .partial (if any) holds no manifest."""
    assert not out.exists()
    partial = out.with_name(out.name + ".partial")
    assert not (partial / "manifest.json").exists()
    assert not out.with_name(out.name + ".lock").exists()


def test_align_on_a_full_disk(pipeline, tmpfs):
    """A19: the crops do not fit (32 kB tmpfs): ENOSPC is one line naming the file."""
    disk = tmpfs("32k")
    r = facecl("align", pipeline.src, "-o", disk / "A", *ALIGN_ARGS)
    one_line_error(r, 1, "no space left", "ENOSPC", str(disk))
    _nothing_complete(disk / "A")


def test_train_on_a_full_disk(pipeline, tmpfs):
    """A20: torch.save's iostream RuntimeError on a full disk is one line with the path."""
    disk = tmpfs("64k")
    r = facecl("train", pipeline.pack, "-o", disk / "R", *TRAIN_ARGS)
    one_line_error(r, 1, "no space left", "ENOSPC", str(disk / "R.partial"))
    _nothing_complete(disk / "R")


def test_pack_on_a_full_disk_with_compression(pipeline, tmpfs):
    """A21: a compressed pack's size is not known up front: ENOSPC while writing a shard
    (h5py's error text) is one line."""
    disk = tmpfs("24k")
    r = facecl("pack", pipeline.align, "-o", disk / "P", *PACK_ARGS, "--compression", "gzip")
    one_line_error(r, 1, "ENOSPC")
    _nothing_complete(disk / "P")


def test_full_disk_run_resumes_once_there_is_space(pipeline, tmp_path, tmpfs):
    """A22: the align killed by ENOSPC resumes (on a bigger copy of its .partial) to the
    same result as an uninterrupted run."""
    disk = tmpfs("48k")
    r = facecl("align", pipeline.src, "-o", disk / "A", *ALIGN_ARGS)
    assert r.returncode == 1
    shutil.copytree(disk / "A.partial", tmp_path / "A.partial")
    ok(facecl("align", pipeline.src, "-o", tmp_path / "A", *ALIGN_ARGS))
    got = json.loads((tmp_path / "A" / "manifest.json").read_text())["extra"]["files"]
    want = json.loads((pipeline.align / "manifest.json").read_text())["extra"]["files"]
    assert got == want


@pytest.mark.parametrize(
    ("field", "value", "expect"),
    [("counts", "12", "'counts' is str"), ("config", [1], "'config' is list"),
     ("inputs", [{"path": 3}], "inputs[0]"), ("extra", None, "'extra' is NoneType")],
)  # fmt: skip
def test_manifest_field_of_the_wrong_type(pipeline, tmp_path, field, value, expect):
    """A23-A26: an edited manifest is one line naming the field, not a traceback."""
    a = tmp_path / "A"
    shutil.copytree(pipeline.align, a)
    m = json.loads((a / "manifest.json").read_text())
    m[field] = value
    (a / "manifest.json").write_text(json.dumps(m))
    r = facecl("pack", a, "-o", tmp_path / "P", *PACK_ARGS)
    one_line_error(r, 1, "corrupt manifest", expect)


def test_checkpoint_with_unknown_arch_kwargs(pipeline, tmp_path):
    """A27: a checkpoint whose arch_kwargs the backbone does not take."""
    from facecl.models import create_backbone
    from facecl.train.checkpoint import save_checkpoint

    net = create_backbone("lenetpp")  # takes no **kwargs (the tiny test net swallows them)
    payload = {"arch": "lenetpp", "arch_kwargs": {"feature_dim": 2, "wings": 2}}
    payload |= {"feature_dim": 2, "input_size": [28, 28], "model": net.state_dict()}
    save_checkpoint(tmp_path / "edited.pt", payload)
    r = facecl("embed", tmp_path / "edited.pt", pipeline.align, "-o", tmp_path / "E")
    one_line_error(r, 1, "arch_kwargs", "wings")
    _nothing_complete(tmp_path / "E")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
@pytest.mark.parametrize("stage", ["align", "train", "embed"])
def test_device_cuda_without_cuda_leaves_nothing(pipeline, tmp_path, stage):
    """A28-A30: --device cuda without CUDA fails before OUT.partial exists."""
    out = tmp_path / "out"
    args = {
        "align": ["align", pipeline.src, "-o", out, *ALIGN_ARGS],
        "train": ["train", pipeline.pack, "-o", out, *TRAIN_ARGS],
        "embed": ["embed", pipeline.run, pipeline.align, "-o", out],
    }[stage]
    r = facecl(*args, "--device", "cuda")
    one_line_error(r, 2, "CUDA is not available")
    assert not (tmp_path / "out.partial").exists() and not out.exists()


def test_onnx_option_refuses_a_torch_checkpoint(pipeline, tmp_path):
    """A31: --onnx model.pt used to run torch silently."""
    r = facecl("embed", "--onnx", pipeline.run / "model.pt", pipeline.align, "-o", tmp_path / "E")
    one_line_error(r, 2, "not an .onnx file")
    assert not (tmp_path / "E.partial").exists()


def test_warnings_are_one_line_each(pipeline, tmp_path):
    """A32: torch's DataLoader warning (more workers than cores) is one 'warning:' line,
    without the source line Python's default adds."""
    r = ok(facecl("train", pipeline.pack, "-o", tmp_path / "R", *TRAIN_ARGS, "--workers", "64"))
    warn = [ln for ln in r.stderr.splitlines() if "worker processes in total" in ln]
    assert len(warn) == 1 and warn[0].startswith("warning:"), r.stderr
    assert "warnings.warn(" not in r.stderr and "UserWarning:" not in r.stderr


def test_one_identity_pack_warns_in_pack_and_train(pipeline, tmp_path):
    """A33: a pack of one identity trains nothing with softmax: both stages say so."""
    names = tmp_path / "others.txt"
    names.write_text("\n".join(p.name for p in sorted(pipeline.src.iterdir())[1:]) + "\n")
    r = ok(facecl("pack", pipeline.align, "-o", tmp_path / "P", "--exclude", names))
    assert "warning: only 1 identity is left" in r.stderr
    r = ok(facecl("train", tmp_path / "P", "-o", tmp_path / "R", *TRAIN_ARGS))
    assert "warning:" in r.stderr and "has 1 class" in r.stderr
