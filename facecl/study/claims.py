"""The papers' claims as paired tests over seeds, and the verdict per claim after Holm.

Each claim compares a variant with its baseline, paired by seed (same seed = same
initialisation and batch order). The descriptive tables test every metric at p < 0.05; the
verdict table tests one primary metric per claim and corrects for the family of claims
with Holm's step-down rule, so that "holds" means the same thing however many claims are
tested. "On par" is an equivalence claim: it holds only when a two one-sided tests
procedure (TOST) shows the difference inside +-EQUIVALENCE_MARGIN.

A claim is also looked at more than once: each published table (``--results``) is a look at
which it could have been declared decided, and seeds are added between looks. Under no
effect, k looks at one threshold pass by chance up to k times as often as one look, so a
claim's p is multiplied by its number of looks (Bonferroni over looks, valid for any
dependence between them) before Holm's rule across claims.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

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


def differences(a: dict[int, float], b: dict[int, float]) -> tuple[list[int], np.ndarray]:
    """The seeds ``a`` and ``b`` share, and the paired differences a - b on them."""
    seeds = sorted(set(a) & set(b))
    return seeds, np.array([a[s] - b[s] for s in seeds], dtype=float)


def paired(a: dict[int, float], b: dict[int, float], alpha: float = 0.05) -> dict[str, Any] | None:
    """Paired (same seed) difference a - b: mean, std, paired t-test p and a verdict.

    A difference is called only when the two-sided paired t-test over seeds has p < alpha;
    with fewer than 2 common seeds nothing is called. ``seeds`` and ``d`` are the common
    seeds and the differences on them.
    """
    from scipy import stats

    seeds, d = differences(a, b)
    if not seeds:
        return None
    out: dict[str, Any] = {"n": len(seeds), "mean": float(d.mean()), "seeds": seeds, "d": d}
    if len(seeds) < 2:
        out.update(std=float("nan"), p=float("nan"), verdict="needs >= 2 seeds")
        return out
    out["std"] = float(d.std(ddof=1))
    if out["std"] == 0.0:
        p = 0.0 if out["mean"] != 0 else 1.0
    else:
        p = float(stats.ttest_1samp(d, 0.0).pvalue)
    out["p"] = p
    if p < alpha:
        out["verdict"] = "higher" if out["mean"] > 0 else "lower"
    else:
        out["verdict"] = "within noise"
    return out


def seeds_needed(mean: float, std: float, alpha: float, power: float = 0.8) -> int | None:
    """Seeds a two-sided paired t-test needs to reach p < ``alpha`` with probability
    ``power`` if the true difference were ``mean`` with per-seed std ``std`` (noncentral t).
    None when no difference was seen (mean 0) or it needs more than MAX_SEEDS."""
    from scipy import stats

    if not std > 0.0:
        return None if mean == 0.0 else 2
    if mean == 0.0:
        return None
    effect = abs(mean) / std
    for n in range(2, MAX_SEEDS + 1):
        crit = stats.t.ppf(1 - alpha / 2, n - 1)
        nct = stats.nct(n - 1, effect * math.sqrt(n))
        if float(nct.sf(crit) + nct.cdf(-crit)) >= power:
            return n
    return None


MAX_SEEDS = 1000


def with_data(
    seeds: dict[str, dict[str, dict[int, float]]], claims: list[tuple[str, str, str]]
) -> list[tuple[str, str, str]]:
    """The claims whose variant and baseline both have finished runs."""
    return [c for c in claims if c[0] in seeds and c[1] in seeds]


def _claims_table(
    seeds: dict[str, dict[str, dict[int, float]]],
    claims: list[tuple[str, str, str]],
    metrics: list[str],
    scale: float,
) -> list[str]:
    lines = ["| claim | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for variant, base, text in with_data(seeds, claims):
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


def claims_markdown(
    seeds: dict[str, dict[str, dict[int, float]]],
    failed: dict[str, list[int]] | None = None,
    looks: dict[str, list[int]] | None = None,
) -> list[str]:
    """The claims tables from ``per_seed``'s values (``failed``, ``looks``: see
    :func:`verdict_table`)."""
    n_tests = len(with_data(seeds, CLAIMS)) * len(CLAIM_METRICS)
    return [
        "## The papers' claims, tested",
        "",
        "Paired by seed (same seed = same initialisation and batch order): mean difference "
        "± std over seeds, in points, and the two-sided paired t-test p. An ordering is "
        "claimed only where p < 0.05; otherwise the cell says *within noise*. With "
        f"{n_tests} tests below, about {0.05 * n_tests:.1f} would pass p < 0.05 by chance "
        "alone: one isolated call is weak evidence.",
        "",
        *verdict_table(seeds, failed, looks),
        "",
        "Every metric, each test on its own at p < 0.05 (descriptive):",
        "",
        *_claims_table(seeds, CLAIMS, CLAIM_METRICS, 100.0),
        "",
        "Feature-to-center distances (last training batch; absolute units, not points):",
        "",
        *_claims_table(seeds, DISTANCE_CLAIMS, DISTANCE_METRICS, 1.0),
    ]


PRIMARY = "view1 accuracy"
# IJCV makes the rho claim on BLUFR (Table 5), so BLUFR VR is its primary metric.
PRIMARY_OF = {("cl-rho5", "cl"): "blufr vr@far=0.001 (mean-std)"}
# Claims of equality, decided by TOST within this margin (a fraction: 0.005 = 0.5 points).
EQUIVALENCE = {("acl-gamma", "acl")}
EQUIVALENCE_MARGIN = 0.005


def tost_p(d: np.ndarray, margin: float) -> float:
    """p of the two one-sided t-tests that the mean of ``d`` lies inside (-margin, margin)."""
    from scipy import stats

    if len(d) < 2:
        return float("nan")
    if float(d.std(ddof=1)) == 0.0:
        return 0.0 if abs(float(d.mean())) < margin else 1.0
    lower = stats.ttest_1samp(d, -margin, alternative="greater").pvalue
    upper = stats.ttest_1samp(d, margin, alternative="less").pvalue
    return float(max(lower, upper))


def holm(pvalues: dict[Any, float], alpha: float = 0.05) -> dict[Any, float]:
    """Holm's step-down thresholds: the k-th smallest p (k = 0, 1, ...) is compared with
    alpha / (m - k), and once one fails every larger p fails too. Returns each test's
    threshold, or 0.0 for a test that failed (or follows a failure)."""
    order = sorted(pvalues, key=lambda k: pvalues[k])
    out: dict[Any, float] = {}
    passing = True
    for k, name in enumerate(order):
        threshold = alpha / (len(order) - k)
        passing = passing and pvalues[name] < threshold
        out[name] = threshold if passing else 0.0
    return out


def claim_id(variant: str, base: str) -> str:
    """How a claim is named in the ledger's looks."""
    return f"{variant} vs {base}"


def looks_of(n: int, earlier: list[int]) -> int:
    """How many looks a claim has had with ``n`` pairs now: the distinct pair counts (>= 2)
    it was published at before, and this one (a re-render at the same count is that look)."""
    return len({k for k in earlier if k >= 2} | {n})


def _tested(
    seeds: dict[str, dict[str, dict[int, float]]],
) -> list[tuple[str, str, str, str, dict[str, Any]]]:
    """The claims with >= 2 paired seeds on their primary metric, with that pairing."""
    out = []
    for variant, base, text in CLAIMS:
        metric = PRIMARY_OF.get((variant, base), PRIMARY)
        a, b = seeds.get(variant, {}).get(metric, {}), seeds.get(base, {}).get(metric, {})
        r = paired(a, b)
        if r is not None and r["n"] >= 2:
            out.append((variant, base, text, metric, r))
    return out


def pair_counts(seeds: dict[str, dict[str, dict[int, float]]]) -> dict[str, int]:
    """claim id -> paired seeds of each claim :func:`verdicts` tests (what a look records)."""
    return {claim_id(variant, base): r["n"] for variant, base, _, _, r in _tested(seeds)}


def verdicts(
    seeds: dict[str, dict[str, dict[int, float]]],
    alpha: float = 0.05,
    looks: dict[str, list[int]] | None = None,
) -> list[dict]:
    """One verdict per claim with >= 2 paired seeds: holds, reverses or within noise (for an
    equivalence claim: holds or not shown) on its primary metric, after Holm over them.
    ``looks``: claim id -> the pair counts of its earlier published looks; a claim's p is
    multiplied by its number of looks before Holm (module docstring)."""
    looks = looks or {}
    rows: list[dict[str, Any]] = []
    for variant, base, text, metric, r in _tested(seeds):
        equivalence = (variant, base) in EQUIVALENCE
        p = tost_p(r["d"], EQUIVALENCE_MARGIN) if equivalence else r["p"]
        rows.append(
            {
                **r,
                "claim": text,
                "variant": variant,
                "base": base,
                "metric": metric,
                "equivalence": equivalence,
                "p": p,
                "looks": looks_of(r["n"], looks.get(claim_id(variant, base), [])),
            }
        )
    adjusted = {i: min(1.0, row["p"] * row["looks"]) for i, row in enumerate(rows)}
    thresholds = holm(adjusted, alpha)
    for i, row in enumerate(rows):
        # The bar the claim's own p must pass: Holm's step shared out over its looks.
        row["threshold"] = thresholds[i] / row["looks"]
        passed = thresholds[i] > 0.0
        if row["equivalence"]:
            row["verdict"] = "holds" if passed else "not shown"
        elif passed:
            row["verdict"] = "holds" if row["mean"] > 0 else "reverses"
        else:
            row["verdict"] = "within noise"
        # At the strictest Holm step (alpha / m), at one more look: an upper bound on the
        # seeds to decide it.
        row["seeds_needed"] = (
            None
            if row["equivalence"] or math.isnan(row["std"])
            else seeds_needed(row["mean"], row["std"], alpha / len(rows) / (row["looks"] + 1))
        )
    return rows


def verdict_table(
    seeds: dict[str, dict[str, dict[int, float]]],
    failed: dict[str, list[int]] | None = None,
    looks: dict[str, list[int]] | None = None,
) -> list[str]:
    """The verdicts as markdown; ``failed`` (variant -> seeds whose run failed) names the
    seeds each claim's pairing leaves out; ``looks``: see :func:`verdicts`."""
    rows = verdicts(seeds, looks=looks)
    failed = failed or {}
    if not rows:
        return []
    lines = [
        f"Verdicts: one primary metric per claim, Holm's correction over the {len(rows)} "
        "claims tested (the k-th smallest p must be below 0.05 / (m - k + 1)); an equality "
        f"claim holds only by TOST within ±{100 * EQUIVALENCE_MARGIN:.1f} points. *Looks*: "
        "the tables this claim was published in at a different seed count, this one "
        "included; its p must be below the Holm threshold divided by them (Bonferroni over "
        "looks: adding seeds until a test passes would otherwise pass by chance). *Seeds "
        "to decide*: how many paired seeds would reach p < 0.05 / m at one more look with "
        "80% power if the "
        "measured difference and std are the truth (noncentral t; an upper bound, since "
        f"Holm's later steps are looser; '>{MAX_SEEDS}' when the difference is ~0). "
        "*Failed, left out*: seeds where a side's run failed (diverged); the pairing drops "
        "them, which flatters the side that failed.",
        "",
        "| claim | primary metric | seeds | looks | difference (points) | p | threshold "
        "| verdict | seeds to decide | failed, left out |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        test = "TOST p" if r["equivalence"] else "p"
        threshold = f"{r['threshold']:.4f}" if r["threshold"] else "- (not reached)"
        lines.append(
            f"| {r['claim']}: {r['variant']} vs {r['base']} | {r['metric']} | {r['n']} | "
            f"{r['looks']} | {100 * r['mean']:+.2f} ± {100 * r['std']:.2f} | {test}={r['p']:.4f} | "
            f"{threshold} | **{r['verdict']}** | {_needed(r)} | "
            f"{_left_out(failed, seeds, r)} |"
        )
    return lines


def _left_out(
    failed: dict[str, list[int]], seeds: dict[str, dict[str, dict[int, float]]], row: dict
) -> str:
    """Per side, its failed seeds that the other side ran (finished or failed)."""
    parts = []
    for side, other in ((row["variant"], row["base"]), (row["base"], row["variant"])):
        ran = set(seeds.get(other, {}).get(row["metric"], {})) | set(failed.get(other, []))
        lost = sorted(set(failed.get(side, [])) & ran)
        if lost:
            parts.append(f"{side} {', '.join(map(str, lost))}")
    return "; ".join(parts) or "-"


def _needed(row: dict[str, Any]) -> str:
    if row["equivalence"]:
        return "- (TOST)"
    if row["verdict"] != "within noise":
        return "- (decided)"
    if row["seeds_needed"] is None:
        return f">{MAX_SEEDS}"
    return str(row["seeds_needed"])
