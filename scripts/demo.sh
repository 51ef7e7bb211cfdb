#!/usr/bin/env bash
# `make demo`: the whole chain on the bundled sample (tests/data/lfw_mini), tiny config.
#   align -> pack -> train -> embed -> verify -> export -> inspect
# Training identities are people_train.txt's 10 people; every identity of pairs.txt is
# excluded from training by the pack stage, so the verification pairs are unseen people.
# Re-running is cheap: every stage is a no-op when its config and inputs are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${DEMO_OUT:-demo_out}
DATA=tests/data/lfw_mini
STEPS=${DEMO_STEPS:-60}
mkdir -p "$OUT"
say() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }
t0=$(date +%s)

# The identities of the verification pairs, as an exclusion list for pack.
awk 'NR>1 { if (NF==3) print $1; else if (NF==4) { print $1; print $3 } }' \
  "$DATA/pairs.txt" | sort -u > "$OUT/pair_identities.txt"

say "1/6 align: MTCNN + 5-point alignment to 112x96"
facecl align "$DATA/lfw_original_150px" -o "$OUT/aligned" --on-miss center

say "2/6 pack: HDF5 shards, excluding the pairs' identities (and LFW-name check report)"
facecl pack "$OUT/aligned" -o "$OUT/packed" --exclude "$OUT/pair_identities.txt"

say "3/6 train: sphere4, softmax + center loss (lambda 0.003, alpha 0.5), $STEPS steps"
facecl train "$OUT/packed" -o "$OUT/run" --arch sphere4 --loss cl --steps "$STEPS" \
  --batch-size 32 --lr 0.01

say "4/6 embed: FC1(image) ++ FC1(flipped image)"
facecl embed "$OUT/run" "$OUT/aligned" -o "$OUT/emb"

say "5/6 verify: the sample's 60 pairs (10 folds x 6)"
facecl verify "$OUT/emb" --protocol lfw-pairs --pairs "$DATA/pairs.txt" -o "$OUT/report"

say "6/6 export: ONNX, checked against torch in onnxruntime"
facecl export "$OUT/run" -o "$OUT/model.onnx"

say "lineage of the report"
facecl inspect "$OUT/report" | head -n 40 >&2 || true

say "summary ($(( $(date +%s) - t0 )) s)"
facecl inspect "$OUT/report" --json | python -c '
import json, sys
doc = json.load(sys.stdin)
rep = json.load(open(doc["lineage"]["path"] + "/report.json"))
for k, v in rep["summary"].items():
    print(f"  {k:28s} {v:.4f}" if isinstance(v, float) else f"  {k:28s} {v}")
' >&2
printf 'plots: %s\n' "$OUT"/report/*.png >&2
printf 'model: %s\n' "$OUT/model.onnx" >&2
