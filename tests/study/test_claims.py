"""The claim verdicts: Holm's step-down rule, TOST for the equality claim, and the table."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from facecl.study.claims import (
    EQUIVALENCE_MARGIN,
    MAX_SEEDS,
    holm,
    seeds_needed,
    tost_p,
    verdict_table,
    verdicts,
)


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


def _simulated_power(n: int, mean: float, std: float, alpha: float, trials: int = 20000) -> float:
    d = np.random.default_rng(n).normal(mean, std, size=(trials, n))
    t = d.mean(axis=1) / (d.std(axis=1, ddof=1) / np.sqrt(n))
    return float(np.mean(np.abs(t) > stats.t.ppf(1 - alpha / 2, n - 1)))


@pytest.mark.parametrize(("mean", "std", "alpha"), [(0.015, 0.01, 0.0125), (-0.006, 0.0056, 0.05)])
def test_seeds_needed_is_the_first_count_with_80_percent_power_by_simulation(mean, std, alpha):
    n = seeds_needed(mean, std, alpha)
    assert n is not None and n > 3
    # Monte Carlo of the paired t-test itself: n reaches 80% power, n - 1 does not.
    assert _simulated_power(n, mean, std, alpha) >= 0.79
    assert _simulated_power(n - 1, mean, std, alpha) <= 0.81
    # The same effect in other units needs the same seeds; a bigger one fewer.
    assert seeds_needed(10 * mean, 10 * std, alpha) == n
    assert seeds_needed(2 * mean, std, alpha) < n  # type: ignore[operator]


def test_seeds_needed_for_no_difference_is_out_of_reach():
    assert seeds_needed(0.0, 0.01, 0.05) is None
    assert seeds_needed(1e-5, 0.01, 0.05) is None  # would need > MAX_SEEDS
    assert MAX_SEEDS >= 1000


def test_the_verdict_table_says_how_many_seeds_would_decide_each_claim():
    seeds = _with_p(0.2, n=4)
    (row,) = verdicts(seeds)
    assert row["verdict"] == "within noise"
    # one claim, one look so far: decided at the next look, at 0.05 / 2
    assert row["seeds_needed"] == seeds_needed(row["mean"], row["std"], 0.05 / 2)
    table = verdict_table(seeds)
    assert table[-1].endswith(f"| {row['seeds_needed']} | - |")


def test_the_verdict_table_names_the_seeds_a_failed_run_left_out():
    rng = np.random.default_rng(3)
    base = 0.7 + rng.normal(0, 0.01, 5)
    seeds = _seeds({"softmax": list(base), "cl": list(base + 0.01 + rng.normal(0, 0.01, 5))})
    del seeds["softmax"]["view1 accuracy"][3]  # softmax seed 3 diverged: no value
    failed = {"softmax": [7, 3, 12], "acl": [1], "cl": [7]}
    (row,) = verdicts(seeds)
    assert row["n"] == 4 and 3 not in row["seeds"]
    # seed 12: cl never ran it, so no pair was lost; seed 7: both failed, both named
    assert verdict_table(seeds, failed)[-1].endswith("| cl 7; softmax 3, 7 |")
    assert verdict_table(seeds)[-1].endswith("| - |")


def _with_p(p: float, n: int = 10, std: float = 0.01) -> dict:
    """softmax and cl seeds whose paired differences have exactly this two-sided t-test p."""
    z = np.arange(n, dtype=float)
    z = (z - z.mean()) / z.std(ddof=1)
    mean = stats.t.isf(p / 2, n - 1) * std / np.sqrt(n)
    base = np.full(n, 0.7)
    return _seeds({"softmax": list(base), "cl": list(base + mean + std * z)})


def test_each_look_divides_the_threshold_a_claim_must_pass():
    seeds = _with_p(0.02)
    (once,) = verdicts(seeds)
    assert once["p"] == pytest.approx(0.02) and once["looks"] == 1 and once["verdict"] == "holds"
    # Published at 3 and 5 pairs before: the third look must pass 0.05 / 3, and 0.02 does not.
    (third,) = verdicts(seeds, looks={"cl vs softmax": [3, 5]})
    assert third["looks"] == 3 and third["verdict"] == "within noise"
    # A re-render of the same 10 pairs is that look again, not a fourth one; a table with
    # one pair (no test) was no look.
    (again,) = verdicts(seeds, looks={"cl vs softmax": [1, 3, 5, 10, 10]})
    assert again["looks"] == 3
    (passing,) = verdicts(_with_p(0.01), looks={"cl vs softmax": [3, 5]})
    assert passing["verdict"] == "holds" and passing["threshold"] == pytest.approx(0.05 / 3)
    row = verdict_table(_with_p(0.01), looks={"cl vs softmax": [3, 5]})[-1]
    assert "| 3 |" in row and "| **holds** | - (decided) |" in row


def test_looks_at_one_threshold_pass_by_chance_and_the_charge_keeps_alpha():
    # No effect; the claim is tested after 3, 6 and 10 seeds, each time at alpha: some look
    # passes far more often than alpha. At alpha / looks (the charge) it stays below alpha.
    looks, alpha, trials = [3, 6, 10], 0.05, 20000
    d = np.random.default_rng(4).standard_normal((trials, max(looks)))

    def any_pass(level: float) -> float:
        hit = np.zeros(trials, dtype=bool)
        for k in looks:
            t = d[:, :k].mean(1) / (d[:, :k].std(1, ddof=1) / np.sqrt(k))
            hit |= 2 * stats.t.sf(np.abs(t), k - 1) < level
        return float(hit.mean())

    assert any_pass(alpha) > 1.5 * alpha
    assert any_pass(alpha / len(looks)) < alpha
