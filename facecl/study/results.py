"""Turn a finished study (study.json + each step's artifacts) into docs/results.md."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from facecl.study.claims import claims_markdown
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


def run_metrics(run: dict[str, Any]) -> dict[str, float]:
    """One run's metrics (``view1 accuracy``, ``blufr vr@...``, ``train center_dist_mean``...):
    those it carries (a ledger run), else read from its reports and training log."""
    if "metrics" in run:
        return {k: float(v) for k, v in run["metrics"].items()}
    out: dict[str, float] = {}
    view1 = _read_json(Path(run["view1_report"]) / "report.json").get("summary", {})
    out.update({f"view1 {k}": float(v) for k, v in view1.items() if _number(v)})
    if "blufr_report" in run:
        blufr = _read_json(Path(run["blufr_report"]) / "report.json").get("summary", {})
        out.update(
            {f"blufr {k}": float(v) for k, v in blufr.items() if _number(v) and "(mean-std)" in k}
        )
    out.update({f"train {k}": v for k, v in _last_center_stats(Path(run["run"])).items()})
    return out


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def per_seed(study: dict[str, Any]) -> dict[str, dict[str, dict[int, float]]]:
    """variant -> metric -> seed -> value over the runs that finished, read once."""
    table: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for r in study["runs"]:
        if r.get("status", "ok") != "ok":
            continue
        for k, v in run_metrics(r).items():
            table[r["variant"]][k][r["seed"]] = v
    return table


def _failed_by_variant(study: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """variant -> its runs that failed, in the study's order."""
    failed: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in study["runs"]:
        if r.get("status", "ok") != "ok":
            failed[r["variant"]].append(r)
    return failed


def claim_pairs(study: dict[str, Any]) -> dict[str, int]:
    """claim id -> paired seeds of each claim in the verdict table (what a look records)."""
    from facecl.study.claims import pair_counts

    return pair_counts(per_seed(study))


def failed_seeds(study: dict[str, Any]) -> dict[str, list[int]]:
    """variant -> the seeds whose run failed."""
    return {v: [r["seed"] for r in runs] for v, runs in _failed_by_variant(study).items()}


def failed_runs(study: dict[str, Any]) -> list[str]:
    """One line per variant with failed runs: its seeds and why."""
    lines = []
    for variant, runs in _failed_by_variant(study).items():
        seeds = ", ".join(str(r["seed"]) for r in sorted(runs, key=lambda r: r["seed"]))
        why = "; ".join(sorted({r.get("error", "") for r in runs} - {""})) or "no reason recorded"
        lines.append(f"- {variant}: seeds {seeds} ({why})")
    return lines


# Everything below this line in the results file is hand-written and kept on regeneration.
NOTES_MARKER = "<!-- notes: hand-written below this line; kept when the table is regenerated -->"


def _seed_list(study: dict[str, Any]) -> str:
    seeds = sorted({r["seed"] for r in study["runs"] if r.get("status", "ok") == "ok"})
    return ", ".join(map(str, seeds))


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


METRIC_GROUPS = ["view1", "blufr", "train"]


def _overlap(overlap: dict[str, Any]) -> str:
    if "overlap_count" not in overlap:
        return "not recorded"
    return f"{overlap['overlap_count']} ({', '.join(overlap.get('overlap', [])) or 'none'})"


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
    # View 1 (the primary metric's report) first, then BLUFR, then training statistics,
    # whatever order the runs (a ledger sorts its keys) carried them in.
    metrics.sort(
        key=lambda m: METRIC_GROUPS.index(m.split()[0]) if m.split()[0] in METRIC_GROUPS else 9
    )
    pct = [m for m in metrics if not m.startswith("train")]
    lines = [
        f"# Results: {study['study']}",
        "",
        "Regenerate with:",
        "",
        f"```\n{command}\n```",
        "",
        f"Config: `{_relative(study['config'])}`. Identity overlap DevTrain/DevTest: "
        f"{_overlap(study.get('overlap', {}))}.",
        f"Values are mean ± std over seeds ({_seed_list(study)}); verification numbers in %.",
        "",
    ]
    header = [
        "variant",
        "seeds",
        *pct,
        *[m for m in metrics if m.startswith("train")],
        "paper: LFW acc / BLUFR VR / DIR",
    ]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for variant, row in table.items():
        cells = [variant, str(max((len(v) for v in row.values()), default=0))]
        for m in header[2:-1]:
            mean, std = _mean_std(row.get(m, []))
            scale = 1.0 if m.startswith("train") else 100.0  # rates are fractions
            cells.append("-" if math.isnan(mean) else f"{mean * scale:.2f} ± {std * scale:.2f}")
        cells.append(PAPER.get(variant, ""))
        lines.append("| " + " | ".join(cells) + " |")
    failed = failed_runs(study)
    if failed:
        lines += ["", "Runs that failed (no value in any table):", "", *failed]
    if roc:
        caption = "Overlaid ROC curves (View 1 DevTest, the lowest seed of each variant)"
        lines += ["", f"{caption}: ![ROC]({roc})"]
    lines += ["", *claims_markdown(seeds, failed_seeds(study), study.get("looks"))]
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
    lines += _invocations(study.get("invocations", []))
    lines += ["", NOTES_MARKER]
    if notes.strip():
        lines += ["", notes.strip()]
    return "\n".join(lines) + "\n"


# More invocations than this are summed up in one line rather than listed.
MAX_LISTED_INVOCATIONS = 6


def _invocations(invocations: list[dict[str, Any]]) -> list[str]:
    if not invocations:
        return []
    lines = ["", "Invocations that built this record (wall time of each, all steps):", ""]
    if len(invocations) > MAX_LISTED_INVOCATIONS:
        seconds = [inv["seconds"] for inv in invocations]
        seeds = sorted({s for inv in invocations for s in inv["seeds"]})
        built = sum(len(inv.get("built", [])) for inv in invocations)
        return lines + [
            f"- {len(invocations)} invocations over seeds {', '.join(map(str, seeds))}: "
            f"{sum(seconds):.0f} s in all, median {float(np.median(seconds)):.0f} s each "
            f"({built} steps built)"
        ]
    for inv in invocations:
        lines.append(
            f"- seeds {', '.join(map(str, inv['seeds']))} x {len(inv['variants'])} variants: "
            f"{inv['seconds']:.0f} s ({len(inv.get('built', []))} steps built)"
        )
    return lines


def kept_notes(path: Path) -> str:
    """The hand-written part of an existing results file (below NOTES_MARKER), or ''."""
    if not path.is_file():
        return ""
    text = path.read_text()
    return text.split(NOTES_MARKER, 1)[1] if NOTES_MARKER in text else ""
