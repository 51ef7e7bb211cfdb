"""Turn a finished study (study.json + each step's artifacts) into docs/results.md."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

# The papers' numbers beside ours (IJCV 2019 Tables 5 and 7: 64-layer nets on VGGFace2 3M,
# LFW 6000 pairs, BLUFR VR@FAR=0.1% and DIR@FAR=1% rank 1; Wu 2018 for CIL on LFW).
PAPER = {
    "softmax": "98.38 / 89.61 / 63.88 (IJCV Fig. 7, lambda=0)",
    "cl": "99.30 / 96.25 / 64.74 (IJCV Table 5, rho=0)",
    "cl-rho5": "99.13 / 97.03 / 71.83 (IJCV Table 5, rho=5)",
    "acl": "99.48 / 98.34 / 81.99 (IJCV Table 7)",
    "acl-gamma": "99.43 / 98.39 / 83.61 (IJCV Table 7)",
    "sphereface-acl-gamma": "99.45 / 99.27 / 91.45 (IJCV Table 7, SphereFace + ACL-gamma)",
    "cl-cil": "see Wu 2018 (LFW accuracy with CIL on imbalanced CASIA subsets)",
}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _last_center_stats(run: Path) -> dict[str, float]:
    """The last logged center statistics of a run (metrics.jsonl)."""
    stats: dict[str, float] = {}
    mpath = run / "metrics.jsonl"
    if not mpath.is_file():
        return stats
    for line in mpath.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        for k, v in rec.items():
            if isinstance(v, (int, float)) and k.startswith("center_dist"):
                stats[k] = float(v)
    mean = stats.get("center_dist_mean")
    if mean and "center_dist_p99" in stats:
        # IJCV Table 5 reports the spread of d_i relative to its mean: the tail, here p99 / mean.
        stats["center_dist_p99/mean"] = stats["center_dist_p99"] / mean
    return stats


def _mean_std(values: list[float]) -> tuple[float, float]:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return float("nan"), float("nan")
    arr = np.asarray(vals, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def collect(study: dict[str, Any]) -> dict[str, dict[str, list[float]]]:
    """variant -> metric -> one value per seed."""
    table: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in study["runs"]:
        row = table[r["variant"]]
        view1 = _read_json(Path(r["view1_report"]) / "report.json").get("summary", {})
        for k, v in view1.items():
            if isinstance(v, (int, float)):
                row[f"view1 {k}"].append(float(v))
        if "blufr_report" in r:
            blufr = _read_json(Path(r["blufr_report"]) / "report.json").get("summary", {})
            for k, v in blufr.items():
                if isinstance(v, (int, float)) and "(mean-std)" in k:
                    row[f"blufr {k}"].append(float(v))
        for k, v in _last_center_stats(Path(r["run"])).items():
            row[f"train {k}"].append(v)
    return table


def render_markdown(study: dict[str, Any], command: str) -> str:
    table = collect(study)
    metrics: list[str] = []
    for row in table.values():
        metrics += [m for m in row if m not in metrics]
    pct = [m for m in metrics if not m.startswith("train")]
    lines = [
        f"# Results: {study['study']}",
        "",
        "Regenerate with:",
        "",
        f"```\n{command}\n```",
        "",
        f"Config: `{study['config']}`. Identity overlap DevTrain/DevTest: "
        f"{study['overlap']['overlap_count']} "
        f"({', '.join(study['overlap']['overlap']) or 'none'}).",
        "Values are mean ± std over seeds "
        f"({', '.join(sorted({str(r['seed']) for r in study['runs']}))}); "
        "verification numbers in %.",
        "",
    ]
    header = [
        "variant",
        *pct,
        *[m for m in metrics if m.startswith("train")],
        "paper: LFW acc / BLUFR VR / DIR",
    ]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for variant, row in table.items():
        cells = [variant]
        for m in header[1:-1]:
            mean, std = _mean_std(row.get(m, []))
            scale = 1.0 if m.startswith("train") else 100.0  # rates are fractions
            cells.append("-" if math.isnan(mean) else f"{mean * scale:.2f} ± {std * scale:.2f}")
        cells.append(PAPER.get(variant, ""))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Stage wall times (s):", "", "| step | seconds | reused |", "|---|---|---|"]
    for s in study["steps"]:
        lines.append(f"| {s['step']} | {s['seconds']} | {'yes' if s['reused'] else ''} |")
    lines.append(f"| **total** | {study['total_seconds']} | |")
    return "\n".join(lines) + "\n"
