"""Turn a finished study (study.json + each step's artifacts) into docs/results.md."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from facecl.train.run import METRICS

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


def _relative(path: str) -> str:
    """``path`` relative to the working directory when it is inside it (portable docs)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _last_center_stats(run: Path) -> dict[str, float]:
    """The last logged center statistics of a run (metrics.jsonl)."""
    stats: dict[str, float] = {}
    mpath = run / METRICS
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


def per_seed(study: dict[str, Any]) -> dict[str, dict[str, dict[int, float]]]:
    """variant -> metric -> seed -> value: every run's reports and center stats, read once."""
    table: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for r in study["runs"]:
        row, seed = table[r["variant"]], r["seed"]
        view1 = _read_json(Path(r["view1_report"]) / "report.json").get("summary", {})
        for k, v in view1.items():
            if isinstance(v, (int, float)):
                row[f"view1 {k}"][seed] = float(v)
        if "blufr_report" in r:
            blufr = _read_json(Path(r["blufr_report"]) / "report.json").get("summary", {})
            for k, v in blufr.items():
                if isinstance(v, (int, float)) and "(mean-std)" in k:
                    row[f"blufr {k}"][seed] = float(v)
        for k, v in _last_center_stats(Path(r["run"])).items():
            row[f"train {k}"][seed] = v
    return table


# The papers' claims that the study can test, as (variant, baseline, what the paper says).
CLAIMS = [
    ("cl", "softmax", "CL beats softmax alone (ECCV Table 2, IJCV Fig. 7)"),
    ("acl", "cl", "ACL beats CL (IJCV Table 7)"),
    ("acl-gamma", "cl", "ACL-gamma beats CL (IJCV Table 7)"),
    ("acl-gamma", "acl", "ACL-gamma is on par with ACL (IJCV Table 7)"),
    ("cl-rho5", "cl", "rho = 5 beats rho = 0 on BLUFR (IJCV Table 5)"),
    ("cl-cil", "cl", "adding CIL helps (Wu 2018, imbalanced data)"),
    ("sphereface-acl-gamma", "acl-gamma", "margin head + ACL-gamma beats ACL-gamma (IJCV Table 7)"),
]
CLAIM_METRICS = ["view1 accuracy", "view1 auc", "blufr vr@far=0.001 (mean-std)"]
# IJCV Table 5 / Fig. 8 on feature-to-center distances, tested on the last training batch.
DISTANCE_CLAIMS = [
    ("cl-rho5", "cl", "mean distance grows with rho, relative range shrinks (IJCV Table 5)"),
    ("acl", "cl", "ACL vs CL"),
    ("acl-gamma", "cl", "ACL-gamma vs CL"),
    ("cl-cil", "cl", "CIL vs CL"),
]
DISTANCE_METRICS = ["train center_dist_mean", "train center_dist_p99/mean"]
# Everything below this line in the results file is hand-written and kept on regeneration.
NOTES_MARKER = "<!-- notes: hand-written below this line; kept when the table is regenerated -->"


def paired(a: dict[int, float], b: dict[int, float], alpha: float = 0.05) -> dict[str, Any] | None:
    """Paired (same seed) difference a - b: mean, std, paired t-test p and a verdict.

    A difference is called only when the two-sided paired t-test over seeds has p < alpha;
    with fewer than 2 common seeds nothing is called.
    """
    from scipy import stats

    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    d = np.array([a[s] - b[s] for s in seeds], dtype=float)
    out: dict[str, Any] = {"n": len(seeds), "mean": float(d.mean())}
    if len(seeds) < 2:
        out.update(std=float("nan"), p=float("nan"), verdict="needs >= 2 seeds")
        return out
    out["std"] = float(d.std(ddof=1))
    if out["std"] == 0.0:
        p = 0.0 if out["mean"] != 0 else 1.0
    else:
        p = float(stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).pvalue)
    out["p"] = p
    if p < alpha:
        out["verdict"] = "higher" if out["mean"] > 0 else "lower"
    else:
        out["verdict"] = "within noise"
    return out


def _claims_table(
    seeds: dict[str, dict[str, dict[int, float]]],
    claims: list[tuple[str, str, str]],
    metrics: list[str],
    scale: float,
) -> list[str]:
    lines = ["| claim | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for variant, base, text in claims:
        if variant not in seeds or base not in seeds:
            continue
        cells = [f"{text}: {variant} vs {base}"]
        for m in metrics:
            r = paired(seeds[variant].get(m, {}), seeds[base].get(m, {}))
            if r is None:
                cells.append("-")
            elif math.isnan(r["std"]):
                cells.append(f"{scale * r['mean']:+.2f} ({r['verdict']})")
            else:
                cells.append(
                    f"{scale * r['mean']:+.2f} ± {scale * r['std']:.2f}, p={r['p']:.3f}: "
                    f"**{r['verdict']}**"
                )
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def claims_markdown(seeds: dict[str, dict[str, dict[int, float]]]) -> list[str]:
    """The claims tables from ``per_seed``'s values."""
    n_tests = len(CLAIMS) * len(CLAIM_METRICS)
    return [
        "## The papers' claims, tested",
        "",
        "Paired by seed (same seed = same initialisation and batch order): mean difference "
        "± std over seeds, in points, and the two-sided paired t-test p. An ordering is "
        "claimed only where p < 0.05; otherwise the cell says *within noise*. With "
        f"{n_tests} tests below, about {0.05 * n_tests:.0f} would pass p < 0.05 by chance "
        "alone: one isolated call is weak evidence.",
        "",
        *_claims_table(seeds, CLAIMS, CLAIM_METRICS, 100.0),
        "",
        "Feature-to-center distances (last training batch; absolute units, not points):",
        "",
        *_claims_table(seeds, DISTANCE_CLAIMS, DISTANCE_METRICS, 1.0),
    ]


def stage_times(steps: list[dict[str, Any]]) -> list[tuple[str, int, float, float]]:
    """(stage, steps built, total s, mean s) over the steps that were built, not reused."""
    groups: dict[str, list[float]] = defaultdict(list)
    for s in steps:
        if s.get("reused"):
            continue
        name = s["step"]
        kind = " ".join(name.split()[:2]) if name.startswith("verify") else name.split()[0]
        groups[kind].append(float(s["seconds"]))
    return [(k, len(v), sum(v), sum(v) / len(v)) for k, v in groups.items()]


def render_markdown(
    study: dict[str, Any], command: str, notes: str = "", roc: str | None = None
) -> str:
    seeds = per_seed(study)
    table = {
        v: {m: list(by_seed.values()) for m, by_seed in row.items()} for v, row in seeds.items()
    }
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
        f"Config: `{_relative(study['config'])}`. Identity overlap DevTrain/DevTest: "
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
    if roc:
        caption = "Overlaid ROC curves (View 1 DevTest, the lowest seed of each variant)"
        lines += ["", f"{caption}: ![ROC]({roc})"]
    lines += ["", *claims_markdown(seeds)]
    lines += [
        "",
        "## Wall time per stage",
        "",
        "Seconds of the steps that were built (a reused step costs ~1 s and is not counted); "
        "each step's own record is in the study's `study.json`.",
        "",
        "| stage | steps | total s | mean s |",
        "|---|---|---|---|",
    ]
    total = 0.0
    for kind, n, tot, mean in stage_times(study["steps"]):
        total += tot
        lines.append(f"| {kind} | {n} | {tot:.0f} | {mean:.1f} |")
    lines.append(f"| **all built steps** | | **{total:.0f}** ({total / 60:.1f} min) | |")
    if study.get("invocations"):
        lines += ["", "Invocations that built this record (wall time of each, all steps):", ""]
    for inv in study.get("invocations", []):
        lines.append(
            f"- seeds {', '.join(map(str, inv['seeds']))} x {len(inv['variants'])} variants: "
            f"{inv['seconds']:.0f} s ({len(inv.get('built', []))} steps built)"
        )
    lines += ["", NOTES_MARKER]
    if notes.strip():
        lines += ["", notes.strip()]
    return "\n".join(lines) + "\n"


def kept_notes(path: Path) -> str:
    """The hand-written part of an existing results file (below NOTES_MARKER), or ''."""
    if not path.is_file():
        return ""
    text = path.read_text()
    return text.split(NOTES_MARKER, 1)[1] if NOTES_MARKER in text else ""
