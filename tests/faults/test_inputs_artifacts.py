"""B10-B15: paths and bytes read from an align artifact are checked: a row's ``output``
stays inside the artifact, ``faces.csv`` and every crop match the manifest (pack, embed,
merge), a manifest cannot name a file outside its artifact, and an align that crops
nothing is an error with the reasons counted."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from typer.testing import CliRunner

from facecl.align.artifact import CROPS_SHA256, FACES_CSV, read_faces
from facecl.artifacts import sha256_file
from facecl.cli import app
from facecl.errors import InputError, IntegrityError

from .hostile import photo

runner = CliRunner()


def one_line(r, code=1):
    assert r.exit_code == code, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower()]  # (a progress bar may precede)
    assert len(errors) == 1 and lines[-1].startswith("error:"), r.stderr
    assert "Traceback" not in r.output
    return " ".join(lines[-1].split())


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Two shard outputs of one three-photo tree (real detector)."""
    tmp = tmp_path_factory.mktemp("s")
    for ident, n in (("Ann_Veneman", 1), ("Ann_Veneman", 2), ("Aaron_Eckhart", 1)):
        (tmp / "src" / ident).mkdir(parents=True, exist_ok=True)
        shutil.copy(photo(ident, n), tmp / "src" / ident)
    outs = []
    for k in (1, 2):
        out = tmp / f"s{k}"
        args = ["align", str(tmp / "src"), "-o", str(out), "--shard", f"{k}/2", "--chunk-size", "1"]
        r = runner.invoke(app, [*args, "--device", "cpu"])
        assert r.exit_code == 0, r.output
        outs.append(out)
    return outs


def _copy(shards, tmp_path):
    return [shutil.copytree(s, tmp_path / s.name) for s in shards]


def _rewrite(art, text, rehash=True):
    """Replace faces.csv; with ``rehash`` also its manifest hash (a forged artifact)."""
    (art / FACES_CSV).write_text(text, encoding="utf-8")
    if rehash:
        m = json.loads((art / "manifest.json").read_text())
        m["extra"]["files"][FACES_CSV] = sha256_file(art / FACES_CSV)
        (art / "manifest.json").write_text(json.dumps(m))


def test_merge_refuses_a_row_that_points_outside(shards, tmp_path):
    a, b = _copy(shards, tmp_path)
    text = (a / FACES_CSV).read_text(encoding="utf-8")
    first_output = next(r.output for r in read_faces(a) if r.output)
    (tmp_path / "payload").mkdir()
    (tmp_path / "payload" / "evil.png").write_bytes((a / first_output).read_bytes())
    _rewrite(a, text.replace(first_output, "aligned/../../payload/evil.png"))
    with pytest.raises(InputError, match="column output: 'aligned/../../payload/evil.png'"):
        read_faces(a)
    out = tmp_path / "m"
    line = one_line(runner.invoke(app, ["align", "--merge", str(a), str(b), "-o", str(out)]))
    assert "is not a path aligned/<identity>/<name>.png inside the artifact" in line
    assert not out.exists() and not (tmp_path / "m.partial").exists()


def test_merge_checks_shard_hashes_first(shards, tmp_path):
    a, b = _copy(shards, tmp_path)
    crop = next(r.output for r in read_faces(b) if r.output)
    data = bytearray((b / crop).read_bytes())
    data[len(data) // 2] ^= 0x01
    (b / crop).write_bytes(bytes(data))
    out = tmp_path / "m"
    line = one_line(runner.invoke(app, ["align", "--merge", str(a), str(b), "-o", str(out)]))
    assert "is altered or truncated" in line and crop.split("/")[-1] in line
    assert not out.exists() and not (tmp_path / "m.partial").exists()


def test_an_edited_faces_csv_is_not_packed(shards, tmp_path):
    a, _ = _copy(shards, tmp_path)
    text = (a / FACES_CSV).read_text(encoding="utf-8")
    _rewrite(a, text.replace("Ann_Veneman", "Someone_Else"), rehash=False)
    with pytest.raises(IntegrityError, match="faces.csv was changed after align wrote it"):
        read_faces(a)
    line = one_line(runner.invoke(app, ["pack", str(a), "-o", str(tmp_path / "p")]))
    assert "faces.csv was changed after align wrote it" in line
    assert not (tmp_path / "p").exists()


def test_an_edited_crop_is_not_packed_or_embedded(shards, tmp_path):
    a, _ = _copy(shards, tmp_path)
    crop = next(r.output for r in read_faces(a) if r.output)
    (a / crop).write_bytes(sorted((a / "aligned").rglob("*.png"))[-1].read_bytes())
    line = one_line(runner.invoke(app, ["pack", str(a), "-o", str(tmp_path / "p")]))
    assert "was changed after align wrote it" in line and not (tmp_path / "p").exists()
    from facecl.embed.sources import align_source

    with pytest.raises(IntegrityError, match="was changed after align wrote it"):
        list(align_source(a).images(0))


def test_inspect_verify_refuses_a_manifest_path_outside(shards, tmp_path):
    a, _ = _copy(shards, tmp_path)
    m = json.loads((a / "manifest.json").read_text())
    m["extra"]["files"]["../../etc/hostname"] = "0" * 64
    (a / "manifest.json").write_text(json.dumps(m))
    line = one_line(runner.invoke(app, ["inspect", str(a), "--verify"]))
    assert "outside the artifact" in line


def test_align_that_crops_nothing_exits_1_with_reasons(tmp_path):
    src = tmp_path / "src" / "Nobody"
    src.mkdir(parents=True)
    (src / "a.jpg").write_text("not an image")
    (src / "b.jpg").write_bytes(b"")
    (src / ".c.jpg").write_bytes(photo("AJ_Lamas").read_bytes())
    out = tmp_path / "o"
    args = ["align", str(tmp_path / "src"), "-o", str(out), "--device", "cpu"]
    line = one_line(runner.invoke(app, args))
    assert "no face aligned: 2 of 2 images gave no crop" in line
    assert "not_an_image: 1" in line and "empty_file: 1" in line and "1 hidden" in line
    assert not out.exists() and not (tmp_path / "o.partial").exists()


# ----------------------------------------------------------------- crops.sha256 (schema 2)


def test_crop_hashes_are_a_sidecar_in_faces_csv_order(shards):
    a = shards[0]
    m = json.loads((a / "manifest.json").read_text())
    assert m["schema"] == "facecl.align/2"
    assert set(m["extra"]["files"]) == {FACES_CSV, CROPS_SHA256}  # no per-crop entry
    assert m["extra"]["files"][CROPS_SHA256] == sha256_file(a / CROPS_SHA256)
    lines = (a / CROPS_SHA256).read_text().splitlines()
    outputs = [r.output for r in read_faces(a) if r.output]
    assert lines == [f"{sha256_file(a / o)}  {o}" for o in outputs] and outputs
    if shutil.which("sha256sum"):  # the standard tool reads it from the artifact root
        done = subprocess.run(["sha256sum", "-c", CROPS_SHA256], cwd=a, capture_output=True)
        assert done.returncode == 0, done.stdout


def test_an_edited_sidecar_is_refused(shards, tmp_path):
    a, _ = _copy(shards, tmp_path)
    text = (a / CROPS_SHA256).read_text()
    (a / CROPS_SHA256).write_text(("0" * 64) + text[64:])  # the first crop's hash forged
    line = one_line(runner.invoke(app, ["pack", str(a), "-o", str(tmp_path / "p")]))
    assert "crops.sha256 was changed after align wrote it" in line
    m = json.loads((a / "manifest.json").read_text())  # the forger rehashes the sidecar too
    m["extra"]["files"][CROPS_SHA256] = sha256_file(a / CROPS_SHA256)
    (a / "manifest.json").write_text(json.dumps(m))
    line = one_line(runner.invoke(app, ["inspect", str(a), "--verify"]))
    assert "is altered or truncated" in line and "crops.sha256" in line
    line = one_line(runner.invoke(app, ["pack", str(a), "-o", str(tmp_path / "p")]))
    assert "was changed after align wrote it (sha256 mismatch)" in line


def test_a_sidecar_of_other_crops_is_refused(shards, tmp_path):
    a, b = _copy(shards, tmp_path)
    shutil.copy(b / CROPS_SHA256, a / CROPS_SHA256)  # the other shard's crops
    m = json.loads((a / "manifest.json").read_text())
    m["extra"]["files"][CROPS_SHA256] = sha256_file(a / CROPS_SHA256)
    (a / "manifest.json").write_text(json.dumps(m))
    line = one_line(runner.invoke(app, ["pack", str(a), "-o", str(tmp_path / "p")]))
    assert "do not belong together" in line and not (tmp_path / "p").exists()


def test_a_schema_1_artifact_is_still_read_and_checked(shards, tmp_path):
    """Schema 1 listed every crop's hash in the manifest: pack, embed and inspect --verify
    still read it, and still catch an edited crop."""
    a, _ = _copy(shards, tmp_path)
    m = json.loads((a / "manifest.json").read_text())
    outputs = [r.output for r in read_faces(a) if r.output]
    m["schema"] = "facecl.align/1"
    m["extra"]["files"] = {FACES_CSV: sha256_file(a / FACES_CSV)}
    m["extra"]["files"].update({o: sha256_file(a / o) for o in outputs})
    (a / CROPS_SHA256).unlink()
    (a / "manifest.json").write_text(json.dumps(m))
    r = runner.invoke(app, ["inspect", str(a), "--verify", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["verified"]["files"] == 1 + len(outputs)
    r = runner.invoke(app, ["pack", str(a), "-o", str(tmp_path / "p"), "--min-images", "1"])
    assert r.exit_code == 0, r.output
    from facecl.embed.sources import align_source

    assert len(list(align_source(a).images(0))) == len(read_faces(a))
    (a / outputs[0]).write_bytes((a / outputs[-1]).read_bytes() + b"\0")
    with pytest.raises(IntegrityError, match="was changed after align wrote it"):
        list(align_source(a).images(0))
