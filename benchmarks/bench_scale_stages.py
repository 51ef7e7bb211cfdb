"""Peak RSS and time of align, pack and embed against the number of images (issue 17 item 3).

    .venv/bin/python benchmarks/bench_scale_stages.py [--sizes 20000 200000 2000000]
        [--only listing,align,noop,pack_plan,pack,embed_source,embed] [--before REF]
        [--dir /tmp/facecl_scale] [--out rows.jsonl]

Every row is a fresh worker subprocess that imports facecl, runs one stage function and
reports its own peak RSS (``VmHWM``; ``ru_maxrss`` would include the forking parent's, which
Linux keeps over ``exec``), wall and CPU time.
``--before REF`` runs the same worker on the code of commit REF (``git archive`` into a temp
dir, first on ``sys.path``) for the rows that code can run.

Synthetic data (built once per size under ``--dir``, 50 images an identity):

- **tree**: ``src/<identity>/<image>.png``, 16x16 PNGs as hard links of 16 distinct files
  (so 2M images cost directory entries, not 2M files of data). 16 px is below
  ``--min-face``, so align never runs the detector: each image is decoded and centre-cropped
  (``--on-miss center``) to a 112x96 PNG. That is the listing, bookkeeping and writing
  path of align at its cheapest, which is what scales with N.
- **artifact**: an align artifact of N crops, written with the align artifact's own writers
  (``faces.csv``, ``crops.sha256``, manifest); the crops are hard links of 16 real 112x96
  crop PNGs. Pack and embed read it as they read any align output.

Workers:

- ``listing``: align's listing and the tree's input hash, what runs before the up-to-date
  check (``open_listing`` + ``input_ref``; before: ``list_source`` + ``input_ref``).
- ``align``: ``run_align`` on the tree (CPU, 2 decode workers, 2 writers), end to end.
- ``noop``: ``run_align`` again on the finished output: the up-to-date check.
- ``noop_stub``: the same check against a stub output: a manifest with the fingerprint of
  this tree and config and no crops (``stub_align_out``), for sizes where running align
  itself takes too long here. The check reads only the manifest, the listing and the hash.
- ``pack_plan``: pack's input reading and plan (``open_input`` + ``make_plan``, 5 %% val).
- ``pack``: ``run_pack`` end to end (shards of 10,000, uncompressed).
- ``embed_source``: embed's source of the artifact (``open_source``), every item listed.
- ``embed``: ``run_embed`` end to end with an untrained ``tiny`` backbone, CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PER_ID = 50
SEEDS = 16

WORKER = r"""
import json, os, sys, time
if sys.argv[1]:
    sys.path.insert(0, sys.argv[1])
kind, data, n = sys.argv[2], sys.argv[3], int(sys.argv[4])
from pathlib import Path
data = Path(data)
art = data / sys.argv[5]
t0, c0 = time.perf_counter(), time.process_time()
out = {}
if kind == "listing":
    from facecl.artifacts import input_ref
    try:
        from facecl.align.io import open_listing
        lst = open_listing(data / "src")
        ref = input_ref(data / "src", lst.tree_sha256)
        out["items"] = len(lst.items)
    except ImportError:
        from facecl.align.io import list_source
        items, _ = list_source(data / "src")
        ref = input_ref(data / "src")
        out["items"] = len(items)
    out["sha256"] = ref["sha256"][:12]
elif kind in ("align", "noop", "noop_stub"):
    from facecl.align.config import AlignConfig, AlignRuntime
    from facecl.align.stage import run_align
    cfg = AlignConfig(on_miss="center", chunk_size=4096)
    name = "align_stub" if kind == "noop_stub" else sys.argv[5]
    s = run_align(cfg, data / "src", data / name, runtime=AlignRuntime(device="cpu"))
    out.update(noop=s.noop, written=s.counts["written"])
elif kind == "pack_plan":
    from facecl.pack.config import PackConfig
    from facecl.pack.inputs import ALIGN, open_input
    from facecl.pack.stage import make_plan
    src = open_input(ALIGN, [art])
    plan = make_plan(src, PackConfig(val_fraction=0.05, min_images=1), [])
    out["images"] = plan.n_images
elif kind == "pack":
    import shutil
    from facecl.pack.config import PackConfig
    from facecl.pack.stage import run_pack
    shutil.rmtree(data / "pack_out", ignore_errors=True)
    res = run_pack([art], data / "pack_out", PackConfig(min_images=1))
    out["images"] = res.manifest.counts.get("written")
elif kind == "embed_source":
    from facecl.embed.sources import open_source
    src = open_source(art)
    out["items"] = len(src)
elif kind == "embed":
    import shutil
    from facecl.embed.config import EmbedConfig
    from facecl.embed.stage import run_embed
    shutil.rmtree(data / "embed_out", ignore_errors=True)
    s = run_embed(data / "model.pt", art, data / "embed_out", EmbedConfig(device="cpu"),
                  show_progress=False)
    out["rows"] = s.manifest.counts.get("processed")
out["wall_s"] = round(time.perf_counter() - t0, 1)
out["cpu_s"] = round(time.process_time() - c0, 1)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forking parent
hwm = open("/proc/self/status").read().split("VmHWM:")[1].split()[0]
out["peak_mib"] = round(int(hwm) / 1024, 1)
print(json.dumps(out))
"""


def _seed_pngs(folder: Path, size: tuple[int, int]) -> list[Path]:
    import cv2
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = []
    for k in range(SEEDS):
        p = folder / f"seed{k:02d}.png"
        if not p.is_file():
            img = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            cv2.imwrite(str(p), img)
        out.append(p)
    return out


def _identities(n: int) -> list[tuple[str, int]]:
    """(identity, images) of a set of ``n`` images, ``PER_ID`` an identity."""
    return [(f"id{i:07d}", min(PER_ID, n - i * PER_ID)) for i in range(-(-n // PER_ID))]


def build_tree(data: Path, n: int) -> Path:
    """``data/src``: n 16x16 PNGs as hard links of SEEDS files (ext4: < 65,000 links each)."""
    src = data / "src"
    if (data / "src.done").is_file():
        return src
    shutil.rmtree(src, ignore_errors=True)
    seeds = _seed_pngs(data / "seeds16", (16, 16))
    per_seed = -(-n // SEEDS)
    if per_seed > 60_000:
        seeds = [_copy(seeds[k % SEEDS], data / "seeds16", k) for k in range(-(-n // 60_000))]
    k = 0
    for ident, m in _identities(n):
        d = src / ident
        d.mkdir(parents=True)
        for j in range(m):
            os.link(seeds[k % len(seeds)], d / f"img{j:04d}.png")
            k += 1
    (data / "src.done").write_text(str(n))
    return src


def _copy(seed: Path, folder: Path, k: int) -> Path:
    dst = folder / f"copy{k:04d}.png"
    if not dst.is_file():
        shutil.copyfile(seed, dst)
    return dst


def build_artifact(data: Path, n: int, schema1: bool = False) -> Path:
    """``data/artifact``: an align artifact of n crops (hard links of real-size crops),
    written with the align artifact's writers. ``schema1``: ``data/artifact_v1``, the same
    crops in the layout before the sidecar (every crop's hash in the manifest), for the
    ``--before`` code."""
    from facecl.align.artifact import (
        ALIGNED,
        CROPS_SHA256,
        FACES_CSV,
        FaceRow,
        write_crop_hashes,
        write_faces,
    )
    from facecl.artifacts import MANIFEST, StageOutput, sha256_file

    name = "artifact_v1" if schema1 else "artifact"
    art = data / name
    if (data / f"{name}.done").is_file():
        return art
    shutil.rmtree(art, ignore_errors=True)
    shutil.rmtree(data / f"{name}.partial", ignore_errors=True)
    seeds = _seed_pngs(data / "seeds112", (112, 96))
    if -(-n // SEEDS) > 60_000:
        seeds = [_copy(seeds[k % SEEDS], data / "seeds112", k) for k in range(-(-n // 60_000))]
    so = StageOutput(art, "align", {"size": "112x96", "on_miss": "center"}, [])
    work = so.begin()
    k = 0
    for ident, m in _identities(n):
        (work / ALIGNED / ident).mkdir(parents=True)
        for j in range(m):
            os.link(seeds[k % len(seeds)], work / f"{ALIGNED}/{ident}/img{j:04d}.png")
            k += 1

    def rows():
        i = 0
        for ident, m in _identities(n):
            for j in range(m):
                rel = f"{ALIGNED}/{ident}/img{j:04d}.png"
                yield FaceRow(f"{ident}/img{j:04d}.png", ident, rel, "center", "too_small", index=i)
                i += 1

    write_faces(work / FACES_CSV, rows())
    written = write_crop_hashes(work, (r.output for r in rows()))
    files = {name: sha256_file(work / name) for name in (FACES_CSV, CROPS_SHA256)}
    if schema1:
        files.pop(CROPS_SHA256)
        for line in (work / CROPS_SHA256).read_text().splitlines():
            digest, out = line.split("  ", 1)
            files[out] = digest
        (work / CROPS_SHA256).unlink()
    so.commit({"processed": n, "written": written}, {"files": files})
    if schema1:
        m = json.loads((art / MANIFEST).read_text())
        m["schema"] = "facecl.align/1"
        (art / MANIFEST).write_text(json.dumps(m))
    (data / f"{name}.done").write_text(str(n))
    return art


def stub_align_out(data: Path) -> None:
    """``data/align_stub``: a complete align output of the tree's fingerprint, no crops."""
    from facecl.align.config import AlignConfig
    from facecl.align.io import open_listing
    from facecl.artifacts import StageOutput, input_ref

    if (data / "align_stub" / "manifest.json").is_file():
        return
    listing = open_listing(data / "src")
    cfg = AlignConfig(on_miss="center", chunk_size=4096)
    so = StageOutput(
        data / "align_stub", "align", cfg, [input_ref(data / "src", listing.tree_sha256)]
    )
    so.begin()
    so.commit({"processed": len(listing.items), "written": 0}, {"files": {}})


def tiny_model(data: Path) -> Path:
    sys.path.insert(0, str(ROOT))
    from tests.faults.hostile import tiny_checkpoint

    p = data / "model.pt"
    return p if p.is_file() else tiny_checkpoint(p)


def run_worker(kind: str, data: Path, n: int, code: str, art: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    done = subprocess.run(
        [sys.executable, "-c", WORKER, code, kind, str(data), str(n), art],
        capture_output=True,
        text=True,
        env=env,
    )
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:] or ["?"]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def checkout(ref: str, into: Path) -> str:
    """The facecl package of commit ``ref``, extracted under ``into`` (once)."""
    if (into / "facecl" / "__init__.py").is_file():
        return str(into)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "facecl"], check=True, capture_output=True
    ).stdout
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return str(into)


NEEDS = {
    "listing": "tree",
    "align": "tree",
    "noop": "tree",
    "noop_stub": "tree",
    "pack_plan": "artifact",
    "pack": "artifact",
    "embed_source": "artifact",
    "embed": "artifact",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[20_000, 200_000])
    ap.add_argument("--only", default="listing,align,noop,pack_plan,embed_source")
    ap.add_argument("--before", default="", help="also run the code of this git commit")
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "facecl_scale")
    ap.add_argument("--out", type=Path, default=None, help="append the rows here (JSON lines)")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    codes = {"after": ""}
    if args.before:
        codes = {"before": checkout(args.before, args.dir / f"code_{args.before}"), **codes}
    for n in args.sizes:
        data = args.dir / f"n{n}"
        data.mkdir(parents=True, exist_ok=True)
        for kind in args.only.split(","):
            if NEEDS[kind] == "tree":
                build_tree(data, n)
            else:
                build_artifact(data, n)
                if args.before:
                    build_artifact(data, n, schema1=True)
            if kind == "embed":
                tiny_model(data)
            if kind == "noop_stub":
                stub_align_out(data)
            if kind == "align":
                for out in ("align_out", "align_out_v1"):
                    shutil.rmtree(data / out, ignore_errors=True)
                    shutil.rmtree(data / f"{out}.partial", ignore_errors=True)
            for label, code in codes.items():
                if label == "before" and kind == "noop_stub":
                    continue  # the stub is of this code's fingerprint
                art = "artifact_v1" if label == "before" else "artifact"
                if kind in ("align", "noop"):  # each code aligns into its own output
                    art = "align_out_v1" if label == "before" else "align_out"
                row = {"kind": kind, "n": n, "code": label}
                row.update(run_worker(kind, data, n, code, art))
                print(json.dumps(row), flush=True)
                if args.out:
                    with open(args.out, "a") as f:
                        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
