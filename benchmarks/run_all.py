"""``make bench``: every benchmark at a size that finishes in well under 15 minutes on 2 cores,
one after the other, into one machine-readable file, ``benchmarks/results.json``.

Each entry records the command, its status (ok / skipped / failed, with the one-line reason
of a benchmark that could not run), its seconds and its printed table; a benchmark that
measures ratios also merges its structured figures into its entry (``benchmarks.common.
record``). The tables go to stdout as they come, for docs/benchmarks.md.

    .venv/bin/python benchmarks/run_all.py [--only embed,align] [--out benchmarks/results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

try:
    from benchmarks.common import machine
except ModuleNotFoundError:  # run as a script: benchmarks/ is on sys.path, not the root
    from common import machine  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
PEER = ROOT / ".bench" / "fnp" / "bin" / "python"

# name -> (arguments of benchmarks/bench_<name>.py, what it needs that a clone may lack)
PLAN: dict[str, tuple[list[str], list[Path]]] = {
    "verify": (["--repeats", "3"], [SHARED / "lfw" / "pairs.txt"]),
    "pack": (["--images", "4000"], []),
    "recordio": (["--records", "20000", "--repeat", "1"], []),
    "losses": (["--repeats", "5", "--threads", "1"], []),
    "embed": (["--images", "128", "--rounds", "3"], []),
    "align": (
        ["--n", "400", "--rounds", "2", "--facenet-python", str(PEER), "--big", "8"],
        [SHARED / "lfw" / "lfw_original_150px", PEER],
    ),
    "train": (["--batch", "16", "--steps", "6", "--workers", "2", "8"], []),
}
HOW = {PEER: "run 'make bench-peers' (it creates the facenet-pytorch venv)"}


def run_one(name: str, args: list[str], needs: list[Path], results: Path) -> dict:
    cmd = [sys.executable, f"benchmarks/bench_{name}.py", *args]
    entry: dict = {"command": " ".join(["python", *cmd[1:]]), "machine": machine()}
    missing = [p for p in needs if not p.exists()]
    if missing:
        why = f"needs {missing[0]}" + (f": {HOW[missing[0]]}" if missing[0] in HOW else "")
        print(f"== bench_{name}: skipped, {why}", file=sys.stderr)
        return {**entry, "status": "skipped", "reason": why}
    print(f"== bench_{name}: {entry['command']}", file=sys.stderr)
    t = time.perf_counter()
    env = {**os.environ, "FACECL_BENCH_RESULTS": str(results)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    entry["seconds"] = round(time.perf_counter() - t, 1)
    print(proc.stdout, flush=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0:
        err = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        print(f"== bench_{name}: failed ({err})", file=sys.stderr)
        return {**entry, "status": "failed", "reason": err[:300]}
    if lines and "skipped" in lines[0].lower():
        return {**entry, "status": "skipped", "reason": lines[0]}
    return {**entry, "status": "ok", "stdout": proc.stdout}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated names (default: all)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results.json")
    args = ap.parse_args()
    names = [n for n in args.only.split(",") if n] or list(PLAN)
    out = args.out.resolve()
    old = json.loads(out.read_text()) if out.is_file() else {}
    t0 = time.perf_counter()
    for name in names:
        if name not in PLAN:
            sys.exit(f"unknown benchmark {name!r}: choose from {', '.join(PLAN)}")
        old.pop(name, None)  # what the benchmark records itself lands under its name
        out.write_text(json.dumps(old, indent=2, sort_keys=True) + "\n")
        entry = run_one(name, *PLAN[name], out)
        old = json.loads(out.read_text())
        old[name] = {**old.get(name, {}), **entry}
    out.write_text(json.dumps(old, indent=2, sort_keys=True) + "\n")
    total = time.perf_counter() - t0
    status = ", ".join(f"{n} {old[n]['status']}" for n in names)
    print(f"== all benchmarks in {total:.0f} s ({status}); results in {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
