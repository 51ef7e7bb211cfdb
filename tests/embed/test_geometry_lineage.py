"""Regression tests of issue #12, through the real CLI on the bundled LFW photos.

* A model trained on 112x112 crops embeds raw photos: they are aligned with the model's own
  geometry (its InputSpec), not the default 112x96 template.
* Embedding 0 of N inputs exits 1 with the reasons counted.
* ``facecl inspect REPORT`` walks report -> embed -> train run -> pack -> align -> raw photos
  (and the evaluation images' align), in ``--json`` and in the tree.
* ``facecl export`` writes the InputSpec into the ONNX metadata; OnnxBackend reads it back.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from facecl.artifacts import read_manifest, sha256_file
from facecl.cli import app
from facecl.embed.artifact import OK, read_embeddings
from facecl.train.checkpoint import checkpoint_input_spec, load_checkpoint, save_checkpoint
from facecl.train.run import MODEL

from .conftest import tiny_payload

runner = CliRunner()
SIZE = "112x112"


def ok(*args: Any) -> Any:
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout) if "--json" in args else r


def copy_people(src: Path, dst: Path, people: list[str], per_person: int) -> Path:
    for name in people:
        (dst / name).mkdir(parents=True)
        for f in sorted((src / name).glob("*.jpg"))[:per_person]:
            shutil.copy(f, dst / name / f.name)
    return dst


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, lfw_mini: Path) -> dict[str, Path]:
    """Training photos (4 people x 4) and evaluation photos (4 other people x 2), each aligned
    at 112x112; the training align packed; a tiny 112x112 model trained on it."""
    root = tmp_path_factory.mktemp("geometry")
    src = lfw_mini / "lfw_original_150px"
    train_people = [
        ln.split()[0] for ln in (lfw_mini / "people_train.txt").read_text().split("\n")[1:5]
    ]
    others = sorted(
        d.name
        for d in src.iterdir()
        if d.name not in train_people and len(list(d.glob("*.jpg"))) >= 2
    )[:4]
    w = {
        "train_photos": copy_people(src, root / "train_photos", train_people, 4),
        "eval_photos": copy_people(src, root / "eval_photos", others, 2),
    }
    for part in ("train", "eval"):
        ok("align", w[f"{part}_photos"], "-o", root / f"{part}_aligned", "--size", SIZE,
           "--device", "cpu", "--workers", 1)  # fmt: skip
        w[f"{part}_aligned"] = root / f"{part}_aligned"
    ok("pack", w["train_aligned"], "-o", root / "pack")
    ok("train", root / "pack", "-o", root / "run", "--arch", "tiny", "--steps", 3,
       "--batch-size", 8, "--workers", 0, "--device", "cpu", "--loss", "cl")  # fmt: skip
    w["pack"], w["run"], w["root"] = root / "pack", root / "run", root
    pairs = root / "pairs.csv"
    a, b, c, d = others
    pairs.write_text(
        "".join(f"{p}/{p}_0001,{p}/{p}_0002,1\n" for p in others)
        + f"{a}/{a}_0001,{b}/{b}_0001,0\n{b}/{b}_0002,{c}/{c}_0001,0\n"
        + f"{c}/{c}_0002,{d}/{d}_0001,0\n{d}/{d}_0002,{a}/{a}_0002,0\n"
    )
    w["pairs"] = pairs
    return w


def test_112x112_model_embeds_raw_photos(world: dict[str, Path], tmp_path: Path) -> None:
    spec = checkpoint_input_spec(load_checkpoint(world["run"] / MODEL))
    assert spec.size == (112, 112) and spec.template == SIZE
    s = ok("embed", world["run"], world["eval_photos"], "-o", tmp_path / "raw", "--json")
    assert s["items"] == 8 and s["ok"] == 8 and s["failed"] == 0, s
    raw = read_embeddings(tmp_path / "raw")
    assert raw.status == [OK] * 8 and np.isfinite(raw.vectors).all()
    m = read_manifest(tmp_path / "raw")
    assert m.extra["align_size"] == SIZE and m.extra["input_spec"] == spec.to_dict()
    # The crops aligned here are those 'facecl align --size 112x112' wrote: same vectors.
    ok("embed", world["run"], world["eval_aligned"], "-o", tmp_path / "art")
    art = read_embeddings(tmp_path / "art")
    assert art.keys == raw.keys
    np.testing.assert_array_equal(art.vectors, raw.vectors)


def test_all_inputs_failing_exits_1_with_the_counts(
    world: dict[str, Path], tmp_path: Path, crops: Path
) -> None:
    # 112x96 crops (the bundled faces) given to the 112x112 model: every row fails.
    n = len(list(crops.rglob("*.png")))
    r = runner.invoke(
        app, ["embed", str(world["run"]), str(crops), "--aligned", "-o", str(tmp_path / "e")]
    )
    assert r.exit_code == 1, r.output
    text = " ".join(r.output.split())
    assert "Traceback" not in text and text.count("error:") == 1
    want = (
        f"no face embedded: {n} of {n} inputs failed (crop is 112x96, model expects 112x112: {n})"
    )
    assert want in text and "--size 112x112" in text
    assert not (tmp_path / "e").exists() and not (tmp_path / "e.partial").exists()
    # Partial failure is still a success, with the reason counted.
    mixed = tmp_path / "mixed"
    shutil.copytree(crops, mixed / "bundled")
    shutil.copytree(world["eval_aligned"] / "aligned", mixed / "eval")
    s = ok("embed", world["run"], mixed, "--aligned", "-o", tmp_path / "m", "--json")
    assert (s["items"], s["ok"]) == (n + 8, 8) and s["skipped"] == {
        "crop is 112x96, model expects 112x112": n
    }


def test_model_without_template_refuses_raw_photos(tmp_path: Path, lfw_mini: Path) -> None:
    payload = tiny_payload()
    payload["arch_kwargs"] = {"feature_dim": 16, "input_size": [28, 28]}
    payload["input_size"] = [28, 28]
    save_checkpoint(tmp_path / "mnist.pt", payload)
    photos = lfw_mini / "lfw_original_150px" / "Abel_Pacheco"
    r = runner.invoke(
        app, ["embed", str(tmp_path / "mnist.pt"), str(photos), "-o", str(tmp_path / "e")]
    )
    assert r.exit_code == 2, r.output
    text = " ".join(r.output.split())
    assert "cannot embed the raw photos" in text and "no crop template" in text
    assert "--aligned" in text and not (tmp_path / "e").exists()


def walk(node: dict[str, Any]) -> list[dict[str, Any]]:
    """Every node of a lineage tree, depth first."""
    out = [node]
    for child in node.get("inputs", []):
        out.extend(walk(child))
    return out


def test_inspect_report_walks_back_to_the_raw_photos(
    world: dict[str, Path], tmp_path: Path
) -> None:
    ok("embed", world["run"], world["eval_aligned"], "-o", tmp_path / "emb")
    ok("verify", tmp_path / "emb", "--protocol", "pairs", "--pairs", world["pairs"],
       "-o", tmp_path / "rep")  # fmt: skip
    doc = ok("inspect", tmp_path / "rep", "--json")
    nodes = walk(doc["lineage"])
    stages = {n["stage"] for n in nodes if "stage" in n}
    assert stages == {"verify", "embed", "train", "pack", "align"}
    # The chain itself: report -> embed -> train run -> pack -> training align -> raw tree.
    emb = next(n for n in doc["lineage"]["inputs"] if n.get("stage") == "embed")
    run = next(n for n in emb["inputs"] if n.get("stage") == "train")
    assert run["path"] == str(world["run"].resolve()) and run["role"] == "train_run"
    pack = next(n for n in run["inputs"] if n.get("stage") == "pack")
    assert pack["path"] == str(world["pack"].resolve())
    train_align = next(n for n in pack["inputs"] if n.get("stage") == "align")
    assert train_align["path"] == str(world["train_aligned"].resolve())
    eval_align = next(n for n in emb["inputs"] if n.get("stage") == "align")
    assert eval_align["path"] == str(world["eval_aligned"].resolve())
    for al, photos in ((train_align, "train_photos"), (eval_align, "eval_photos")):
        assert [(i["kind"], i["path"]) for i in al["inputs"]] == [
            ("tree", str(world[photos].resolve()))
        ]
    # The model file is referenced too, with its hash.
    model = next(n for n in emb["inputs"] if n.get("role") == "model")
    assert model["kind"] == "file" and model["sha256"] == sha256_file(world["run"] / MODEL)
    # The rich tree shows the same chain.
    r = ok("inspect", tmp_path / "rep")
    text = "".join(c for c in r.output if not c.isspace() and c not in "│├└─")  # paths wrap
    for part in ("facecl.train/1", "facecl.pack/1", "facecl.align/2", "tree"):
        assert part in text
    for key in ("run", "pack", "train_aligned", "eval_aligned", "train_photos", "eval_photos"):
        assert str(world[key].resolve()) in text


def test_changed_model_file_changes_the_fingerprint(world: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(world["run"], run)
    ok("embed", run, world["eval_aligned"], "-o", tmp_path / "e")
    assert ok("embed", run, world["eval_aligned"], "-o", tmp_path / "e", "--json")["up_to_date"]
    ckpt = load_checkpoint(run / MODEL)
    ckpt["model"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    save_checkpoint(run / MODEL, ckpt)  # the run's manifest is unchanged
    r = runner.invoke(
        app, ["embed", str(run), str(world["eval_aligned"]), "-o", str(tmp_path / "e")]
    )
    assert r.exit_code == 1 and "different config or inputs" in " ".join(r.output.split())


def test_export_writes_the_input_spec_and_onnx_backend_reads_it(
    world: dict[str, Path], tmp_path: Path
) -> None:
    import onnx

    from facecl.embed.backends import OnnxBackend, resolve_model
    from facecl.embed.model_ref import sidecar_path
    from facecl.models.input_spec import InputSpec

    spec = checkpoint_input_spec(load_checkpoint(world["run"] / MODEL))
    onnx_file = tmp_path / "m.onnx"
    ok("export", world["run"], "-o", onnx_file, "--verify-on", world["eval_aligned"])
    meta = {p.key: p.value for p in onnx.load(onnx_file).metadata_props}
    assert InputSpec.from_dict(json.loads(meta["input_spec"])) == spec
    assert meta["input_size"] == SIZE and meta["normalisation"] == spec.normalisation
    assert float(meta["mean"]) == spec.mean and float(meta["scale"]) == spec.scale
    backend = OnnxBackend(resolve_model(onnx_file), "concat", False, "cpu")
    assert backend.spec == spec
    side = json.loads(sidecar_path(onnx_file).read_text())
    assert side["extra"]["input_spec"] == spec.to_dict()
    run_ref = next(i for i in side["inputs"] if i.get("role") == "train_run")
    assert run_ref["kind"] == "artifact" and run_ref["path"] == str(world["run"].resolve())
    # The ONNX model embeds raw photos in its geometry too, and its embeddings' lineage
    # reaches the train run through the export sidecar.
    s = ok("embed", "--onnx", onnx_file, world["eval_photos"], "-o", tmp_path / "e", "--json")
    assert s["ok"] == 8
    doc = ok("inspect", tmp_path / "e", "--json")
    assert {n.get("stage") for n in walk(doc["lineage"])} >= {"embed", "train", "pack", "align"}
