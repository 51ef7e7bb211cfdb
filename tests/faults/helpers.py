"""Shared helpers of the fault tests: the CLI in a real subprocess, optionally slowed down
(a named function sleeps first) so a test can kill it at a chosen point, and polling."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

# `python -c SLOW_CLI MODULE:FUNC SECONDS facecl-args...`: FUNC (or Class.method) sleeps
# SECONDS per call. The slowdown changes timing only, never values.
SLOW_CLI = (
    "import importlib, sys, time\n"
    "mod, _, name = sys.argv[1].partition(':')\n"
    "delay = float(sys.argv[2])\n"
    "owner = importlib.import_module(mod)\n"
    "*path, name = name.split('.')\n"
    "for p in path:\n"
    "    owner = getattr(owner, p)\n"
    "f = getattr(owner, name)\n"
    "def slow(*a, **k):\n"
    "    time.sleep(delay)\n"
    "    return f(*a, **k)\n"
    "setattr(owner, name, slow)\n"
    "from facecl.cli import app\n"
    "app(args=sys.argv[3:], prog_name='facecl')\n"
)

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


def facecl(*args: str | os.PathLike, cwd: Path | None = None, **kw) -> subprocess.CompletedProcess:
    """``python -m facecl ARGS`` in a real subprocess (text output captured)."""
    return subprocess.run(
        [sys.executable, "-m", "facecl", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**ENV, **kw.pop("env", {})},
        timeout=kw.pop("timeout", 300),
        **kw,
    )


def start(
    *args: str | os.PathLike, slow: tuple[str, float] | None = None, **kw
) -> subprocess.Popen:
    """The CLI started in the background (``slow=(module:function, seconds)`` slows it)."""
    head = [sys.executable, "-m", "facecl"]
    if slow is not None:
        head = [sys.executable, "-c", SLOW_CLI, slow[0], str(slow[1])]
    return subprocess.Popen(
        [*head, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**ENV, **kw.pop("env", {})},
        **kw,
    )


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 120) -> None:
    """SIGKILL ``proc`` as soon as ``ready()``; fails if it ended before that."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(
                f"ended before the kill point: {proc.returncode} {proc.stderr.read()}"
            )
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            return
        time.sleep(0.01)
    proc.kill()
    raise AssertionError("the kill point was not reached in time")


def one_line_error(r: subprocess.CompletedProcess, code: int, *words: str) -> str:
    """Assert ``r`` failed with ``code``, one ``error:`` line naming ``words``, no traceback."""
    assert r.returncode == code, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, r.stderr[-2000:]
    for w in words:
        assert w in errors[0], (w, errors[0])
    return errors[0]


def tree_state(root: Path) -> dict[str, tuple[int, float]]:
    """Every file under ``root``: (size, mtime), to show a tree was not touched."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
