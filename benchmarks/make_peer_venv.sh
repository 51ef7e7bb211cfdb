#!/usr/bin/env bash
# The peer environment bench_align.py compares against: facenet-pytorch, pinned, in its own
# venv (.bench/fnp), never a facecl dependency. It reuses the project venv's torch, numpy,
# Pillow and requests (a .pth adds that site directory) so both detectors run the same torch,
# and installs facenet-pytorch itself with --no-deps (its pins would replace our torch).
#   usage: benchmarks/make_peer_venv.sh PROJECT_PYTHON PEER_DIR FACENET_SPEC
set -euo pipefail
py=$1 dir=$2 spec=$3
rm -rf "$dir"
"$py" -m venv "$dir"
ours=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
theirs=$("$dir/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "import site; site.addsitedir('$ours')" > "$theirs/zz_facecl_venv.pth"
"$dir/bin/python" -m pip install -q --disable-pip-version-check --no-deps "$spec"
"$dir/bin/python" -c 'import facenet_pytorch, torch; print("peer venv ok: facenet-pytorch", facenet_pytorch.__file__, "torch", torch.__version__)'
touch "$dir/.installed"
