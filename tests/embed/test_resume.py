"""A killed `facecl embed` (real process, SIGKILL) resumes to the same file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from facecl.artifacts import read_manifest, sha256_file
from facecl.embed.artifact import EMBEDDINGS


def run_embed(args, env=None, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "facecl", "embed", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        **kw,
    )


def test_killed_embed_resumes_to_the_same_file(tmp_path, tiny_ckpt, crops):
    faces = sorted(crops.rglob("*.png"))
    lst = tmp_path / "faces.txt"  # 45 items, repeats keyed Name/Name_0001~2 ...
    lst.write_text("\n".join(str(f) for f in faces * 3) + "\n")
    common = ["--aligned", "--batch-size", 2, "--device", "cpu", "--json"]  # chunks of 16

    ref = run_embed([tiny_ckpt, lst, "-o", tmp_path / "ref", *common])
    out, err = ref.communicate(timeout=120)
    assert ref.returncode == 0, err

    target = tmp_path / "emb"
    chunks = tmp_path / "emb.partial" / "chunks"
    slow = run_embed(
        [tiny_ckpt, lst, "-o", target, *common], env={"FACECL_EMBED_CHUNK_DELAY": "60"}
    )
    deadline = time.monotonic() + 120
    while not list(chunks.glob("*.npz")):
        assert slow.poll() is None, slow.communicate()[1]
        assert time.monotonic() < deadline, "no chunk written in time"
        time.sleep(0.05)
    slow.send_signal(signal.SIGKILL)
    slow.communicate(timeout=30)
    assert slow.returncode == -signal.SIGKILL
    assert not target.exists() and len(list(chunks.glob("*.npz"))) == 1

    again = run_embed([tiny_ckpt, lst, "-o", target, *common])
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    summary = json.loads(out)
    assert summary["resumed_from"] == 16 and summary["items"] == 45 and summary["ok"] == 45
    assert not (tmp_path / "emb.partial").exists()
    assert sha256_file(target / EMBEDDINGS) == sha256_file(tmp_path / "ref" / EMBEDDINGS)
    assert read_manifest(target).fingerprint == read_manifest(tmp_path / "ref").fingerprint
