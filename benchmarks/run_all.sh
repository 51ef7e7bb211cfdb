#!/usr/bin/env bash
# `make bench`: every benchmark, sized for < 15 min on 2 cores, into benchmarks/results.json
# (see benchmarks/run_all.py; a benchmark that cannot run says why in one line).
set -euo pipefail
cd "$(dirname "$0")/.."
exec python benchmarks/run_all.py "$@"
