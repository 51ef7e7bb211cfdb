#!/usr/bin/env bash
# Runs every benchmark script; each prints its table and says where it belongs in docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
for f in benchmarks/bench_*.py; do
  [ -e "$f" ] || continue
  echo "== $f" >&2
  python "$f"
done
