"""The content hash of tree inputs behind the stat cache: a re-mount (new mtimes) keeps an
output up to date, an edit does not; a file is read once while its stat is unchanged; a
cache that cannot be used is said once and hashing goes on without it."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from facecl.artifacts import MANIFEST, tree_content_sha256, tree_sha256
from facecl.hashcache import CACHE_ENV, CACHE_FILE, HashCache
from tests.conftest import LFW_MINI
from tests.faults.conftest import ALIGN_ARGS, make_source, ok
from tests.faults.helpers import facecl, one_line_error


def _age(root: Path, seconds: int) -> None:
    then = time.time_ns() - seconds * 10**9
    for f in root.rglob("*"):
        if f.is_file():
            os.utime(f, ns=(then, then))


@pytest.fixture
def cache_env(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(d))
    return d


def test_new_mtimes_are_the_same_tree_and_an_edit_is_not(tmp_path, cache_env):
    src = make_source(tmp_path / "src")
    _age(src, 7200)
    h = tree_sha256(src)
    assert h == tree_content_sha256(src)  # the cache gives what reading the bytes gives
    _age(src, 60)  # a re-mount: every mtime new, no byte changed
    assert tree_sha256(src) == h
    photo = sorted(src.rglob("*.jpg"))[0]
    data = bytearray(photo.read_bytes())
    data[100] ^= 0xFF
    photo.write_bytes(bytes(data))  # same size, new mtime
    assert tree_sha256(src) != h and tree_sha256(src) == tree_content_sha256(src)


def test_a_file_is_read_again_only_when_its_stat_changes(tmp_path, cache_env):
    f = tmp_path / "a.bin"
    f.write_bytes(b"x" * 1000)
    old = time.time_ns() - 10**12
    os.utime(f, ns=(old, old))
    with HashCache() as cache:
        first = cache.digest(str(f), f.stat())
    rows = sqlite3.connect(cache_env / CACHE_FILE).execute("SELECT path FROM hashes").fetchall()
    assert rows == [(os.fsencode(f.resolve()),)]
    f.chmod(0)  # unreadable now: a cache hit does not read it
    try:
        if os.geteuid() != 0:  # root reads it anyway; the hit is shown by the value below
            with pytest.raises(PermissionError):
                f.read_bytes()
        with HashCache() as cache:
            assert cache.digest(str(f), f.stat()) == first
    finally:
        f.chmod(0o644)
    f.write_bytes(b"y" * 1000)
    os.utime(f, ns=(old + 10**9, old + 10**9))  # other content, other mtime: read again
    with HashCache() as cache:
        assert cache.digest(str(f), f.stat()) != first


def test_a_freshly_written_file_is_not_cached(tmp_path, cache_env):
    """The racy rule: within 2 s of its mtime a file may change again without a new one."""
    f = tmp_path / "new.bin"
    f.write_bytes(b"abc")
    with HashCache() as cache:
        cache.digest(str(f), f.stat())
    n = sqlite3.connect(cache_env / CACHE_FILE).execute("SELECT COUNT(*) FROM hashes").fetchone()
    assert n == (0,)


@pytest.mark.parametrize("kind", ["a file in the way", "a corrupt cache"])
def test_an_unusable_cache_is_said_once_and_hashing_goes_on(tmp_path, kind):
    src = make_source(tmp_path / "src", per_identity=1)
    expected = tree_content_sha256(src)
    if kind == "a file in the way":
        bad = tmp_path / "not_a_dir"
        bad.write_text("x")
    else:
        bad = tmp_path / "cache"
        bad.mkdir()
        (bad / CACHE_FILE).write_bytes(b"this is not a database" * 100)
    out = tmp_path / "A"
    env = {CACHE_ENV: str(bad)}
    r = ok(facecl("align", src, "-o", out, *ALIGN_ARGS, env=env))
    assert r.stderr.count("hash cache") == 1 and "unusable" in r.stderr, r.stderr
    recorded = json.loads((out / MANIFEST).read_text())["inputs"][0]
    assert recorded["sha256"] == expected and recorded["hash"] == "content"


def test_align_stays_up_to_date_after_a_remount(tmp_path):
    """The study's case: the data mount came back with new mtimes; align (and so every later
    step) is still up to date, where the old names + sizes + mtimes hash rebuilt it."""
    src = make_source(tmp_path / "src", per_identity=1)
    _age(src, 7200)
    out = tmp_path / "A"
    ok(facecl("align", src, "-o", out, *ALIGN_ARGS))
    _age(src, 30)
    assert "up to date" in ok(facecl("align", src, "-o", out, *ALIGN_ARGS)).stderr
    shutil.copy(LFW_MINI / "lfw_original_150px" / "Adam_Scott" / "Adam_Scott_0001.jpg",
                sorted(src.rglob("*.jpg"))[0])  # fmt: skip
    r = facecl("align", src, "-o", out, *ALIGN_ARGS)
    one_line_error(r, 1, "different config or inputs")


def test_an_output_of_the_older_tree_hash_says_to_rebuild_once(tmp_path):
    src = make_source(tmp_path / "src", per_identity=1)
    out = tmp_path / "A"
    ok(facecl("align", src, "-o", out, *ALIGN_ARGS))
    manifest = json.loads((out / MANIFEST).read_text())
    del manifest["inputs"][0]["hash"]  # as facecl wrote it before the content hash
    manifest["inputs"][0]["sha256"] = "0" * 64
    manifest["fingerprint"] = "f" * 64
    (out / MANIFEST).write_text(json.dumps(manifest))
    r = facecl("align", src, "-o", out, *ALIGN_ARGS)
    one_line_error(r, 1, "older facecl", "--force")
    ok(facecl("align", src, "-o", out, *ALIGN_ARGS, "--force"))
    assert "up to date" in ok(facecl("align", src, "-o", out, *ALIGN_ARGS)).stderr


def test_processes_share_the_cache_without_blocking_each_other(tmp_path, cache_env):
    """Two processes hashing (and caching) trees at once: both get the content hash and
    neither loses the cache to a lock."""
    import subprocess
    import sys

    trees = []
    for k in range(2):
        root = tmp_path / f"t{k}"
        for i in range(300):
            (root / f"d{i % 30}").mkdir(parents=True, exist_ok=True)
            (root / f"d{i % 30}" / f"f{i}.bin").write_bytes(os.urandom(64) + bytes([k]))
        _age(root, 3600)
        trees.append(root)
    code = (
        "import sys; from pathlib import Path; from facecl.artifacts import tree_sha256; "
        "[print(tree_sha256(Path(sys.argv[1]))) for _ in range(4)]"
    )
    env = {**os.environ, CACHE_ENV: str(cache_env)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(t)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=env,
        )
        for t in trees
    ]  # fmt: skip
    for t, p in zip(trees, procs, strict=True):
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0 and "unusable" not in err, err
        assert set(out.split()) == {tree_content_sha256(t)}
    n = sqlite3.connect(cache_env / CACHE_FILE).execute("SELECT COUNT(*) FROM hashes").fetchone()
    assert n == (600,)
