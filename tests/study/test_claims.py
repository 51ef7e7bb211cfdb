"""The claim verdicts: Holm's step-down rule, TOST for the equality claim, and the table."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from facecl.study.claims import EQUIVALENCE_MARGIN, holm, tost_p, verdict_table, verdicts


def test_holm_steps_down_and_stops_at_the_first_failure():
    # m = 4: thresholds 0.0125, 0.0167, 0.025, 0.05 for the sorted p's.
    p = {"a": 0.010, "b": 0.030, "c": 0.040, "d": 0.001}
    t = holm(p)
    assert t["d"] == pytest.approx(0.05 / 4) and t["a"] == pytest.approx(0.05 / 3)
    # b is third: 0.030 > 0.05 / 2 fails; c (0.040 < 0.05, its own step) fails after it.
    assert t["b"] == 0.0 and t["c"] == 0.0
    # Two that pass their steps; then a first step failed makes the second fail too.
    assert holm({"x": 0.02, "y": 0.045}) == {"x": 0.025, "y": 0.05}
    assert holm({"x": 0.04, "y": 0.045}) == {"x": 0.0, "y": 0.0}
    assert holm({"x": 0.03, "y": 0.04, "z": 0.02})["y"] == 0.0


def _tost_oracle(d: np.ndarray, margin: float) -> float:
    n, m, se = len(d), d.mean(), d.std(ddof=1) / np.sqrt(len(d))
    p_low = stats.t.sf((m + margin) / se, n - 1)
    p_high = stats.t.cdf((m - margin) / se, n - 1)
    return float(max(p_low, p_high))


def test_tost_matches_the_t_distribution_by_hand():
    rng = np.random.default_rng(0)
    for mean, sd in ((0.0, 0.002), (0.004, 0.003), (0.02, 0.01)):
        d = rng.normal(mean, sd, 8)
        assert tost_p(d, EQUIVALENCE_MARGIN) == pytest.approx(_tost_oracle(d, EQUIVALENCE_MARGIN))
    assert tost_p(np.array([0.001] * 4), EQUIVALENCE_MARGIN) == 0.0
    assert tost_p(np.array([0.01] * 4), EQUIVALENCE_MARGIN) == 1.0


def _seeds(values: dict[str, list[float]], metric: str = "view1 accuracy") -> dict:
    return {v: {metric: dict(enumerate(xs))} for v, xs in values.items()}


def test_verdicts_hold_reverse_or_stay_within_noise_after_holm():
    rng = np.random.default_rng(1)
    base = 0.7 + rng.normal(0, 0.01, 10)
    seeds = _seeds(
        {
            "softmax": list(base),
            "cl": list(base + 0.03 + rng.normal(0, 0.002, 10)),  # far above: holds
            "acl-gamma": list(base + 0.03 - 0.02 + rng.normal(0, 0.002, 10)),  # below cl
            "acl": list(base + 0.01 + rng.normal(0, 0.002, 10)),  # ~ acl-gamma: on par
            "cl-cil": list(base + 0.03 + rng.normal(0, 0.03, 10)),  # noise around cl
        }
    )
    rows = {(r["variant"], r["base"]): r for r in verdicts(seeds)}
    assert rows[("cl", "softmax")]["verdict"] == "holds"
    assert rows[("acl-gamma", "cl")]["verdict"] == "reverses"
    assert (
        rows[("acl-gamma", "acl")]["verdict"] == "holds"
        and rows[("acl-gamma", "acl")]["equivalence"]
    )
    assert rows[("cl-cil", "cl")]["verdict"] == "within noise"
    assert all(r["n"] == 10 for r in rows.values())
    # The family is the claims with data: the smallest p meets 0.05 / 5.
    smallest = min(rows.values(), key=lambda r: r["p"])
    assert smallest["threshold"] == pytest.approx(0.05 / 5)
    # rho's primary metric is BLUFR VR: without it the claim is not tested at all.
    assert ("cl-rho5", "cl") not in rows
    table = "\n".join(verdict_table(seeds))
    assert "over the 5 claims tested" in table and "**reverses**" in table


def test_a_claim_with_one_paired_seed_gets_no_verdict():
    seeds = _seeds({"softmax": [0.7], "cl": [0.8]})
    assert verdicts(seeds) == [] and verdict_table(seeds) == []
