"""The study harness: config parsing, identity lists, and (slow) the whole chain on the sample."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from facecl.cli import app
from facecl.errors import ConfigError
from facecl.study.config import cli_args, load_study_config
from facecl.study.results import render_markdown
from facecl.study.runner import read_pair_identities, write_identity_lists

ROOT = Path(__file__).resolve().parents[2]


def _view1_pairs(src: Path, dst: Path) -> None:
    """The sample's View 2 pairs rewritten with a View 1 header (one count per kind)."""
    lines = [ln for ln in src.read_text().splitlines()[1:] if ln.strip()]
    matched = [ln for ln in lines if len(ln.split()) == 3]
    mismatched = [ln for ln in lines if len(ln.split()) == 4]
    assert len(matched) == len(mismatched)
    dst.write_text(f"{len(matched)}\n" + "\n".join(matched + mismatched) + "\n")


def _config(tmp_path: Path, lfw_mini: Path, extra: str = "") -> Path:
    _view1_pairs(lfw_mini / "pairs.txt", tmp_path / "pairsDevTest.txt")
    _view1_pairs(lfw_mini / "pairs.txt", tmp_path / "pairsDevTrain.txt")
    cfg = tmp_path / "study.toml"
    cfg.write_text(
        f"""
name = "mini"
seeds = [0]
[data]
lfw_root = "{lfw_mini / "lfw_original_150px"}"
train_people = "{lfw_mini / "people_train.txt"}"
test_pairs = "pairsDevTest.txt"
[align]
on_miss = "center"
[train]
arch = "tiny"
steps = 4
batch_size = 16
[[variants]]
name = "softmax"
loss = "none"
[[variants]]
name = "cl-rho5"
loss = "cl"
rho = 5
{extra}
"""
    )
    return cfg


def test_config_resolves_paths_and_variants(tmp_path, lfw_mini):
    cfg = load_study_config(_config(tmp_path, lfw_mini))
    assert cfg.test_pairs == (tmp_path / "pairsDevTest.txt").resolve()
    assert cfg.train_pairs == tmp_path.resolve() / "pairsDevTrain.txt"
    assert [v.name for v in cfg.variants] == ["softmax", "cl-rho5"]
    assert cfg.variants[1].train == {"loss": "cl", "rho": 5}
    assert cfg.seeds == (0,)


def test_config_unknown_key_suggests_the_closest(tmp_path, lfw_mini):
    path = _config(tmp_path, lfw_mini)
    path.write_text(path.read_text().replace("seeds =", "sedes ="))
    with pytest.raises(ConfigError, match="did you mean 'seeds'"):
        load_study_config(path)


def test_config_duplicate_variant_is_refused(tmp_path, lfw_mini):
    path = _config(tmp_path, lfw_mini, extra='[[variants]]\nname = "softmax"\nloss = "cl"\n')
    with pytest.raises(ConfigError, match="appears twice"):
        load_study_config(path)


def test_cli_args_maps_options_to_flags():
    assert cli_args(
        {"min_images": 5, "flip": True, "amp": False, "exclude": ["a", "b"], "lambda": 0.003}
    ) == [
        "--min-images", "5", "--flip", "--no-amp", "--exclude", "a", "--exclude", "b",
        "--lambda", "0.003",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "variant, message",
    [
        ('loss = "cl"\nrhoo = 5', "variant 'typo': unknown config key 'rhoo'"),
        ('loss = "cl"\nrho = "five"', "variant 'typo': config key 'rho' must be float"),
        ('loss = "cl"\nalpha = 2.0', "variant 'typo': alpha must be in [0, 1]"),
        ('loss = "cll"', "variant 'typo': unknown center loss 'cll'"),
    ],
)
def test_every_variant_is_a_valid_train_config_at_load(tmp_path, lfw_mini, variant, message):
    """A typo in the last variant fails when the study loads, naming the variant."""
    path = _config(tmp_path, lfw_mini, extra=f'[[variants]]\nname = "typo"\n{variant}\n')
    with pytest.raises(ConfigError) as e:
        load_study_config(path)
    assert message in str(e.value) and str(path) in str(e.value)


def test_train_section_is_checked_too(tmp_path, lfw_mini):
    path = _config(tmp_path, lfw_mini)
    path.write_text(path.read_text().replace("steps = 4", "stepz = 4"))
    with pytest.raises(ConfigError, match=r"\[train\]: unknown config key 'stepz'"):
        load_study_config(path)


def test_stage_sections_are_checked_and_keyed_by_option(tmp_path, lfw_mini):
    path = _config(tmp_path, lfw_mini)
    text = path.read_text().replace(
        '[align]\non_miss = "center"',
        '[align]\non_miss = "center"\nthresholds = [0.5, 0.6, 0.7]\nworkers = 1\n'
        "[verify]\npca_dim = 8\nfar_targets = [0.01]\nplots = false",
    )
    path.write_text(text)
    cfg = load_study_config(path)
    assert cli_args(cfg.align) == [
        "--on-miss", "center", "--thresholds", "0.5,0.6,0.7", "--workers", "1",
    ]  # fmt: skip
    assert cli_args(cfg.verify) == ["--pca", "8", "--far", "0.01", "--no-plots"]
    path.write_text(text.replace("on_miss =", "on_mis ="))
    with pytest.raises(ConfigError, match=r"unknown \[align\] key 'on_mis'.*'on_miss'"):
        load_study_config(path)
    path.write_text(text.replace('"center"', '"centre"'))
    with pytest.raises(ConfigError, match=r"\[align\]: unknown --on-miss 'centre'"):
        load_study_config(path)


def test_identity_lists_exclude_everyone_outside_devtrain(tmp_path, lfw_mini):
    cfg = load_study_config(_config(tmp_path, lfw_mini))
    report = write_identity_lists(cfg, tmp_path / "lists")
    not_train = (tmp_path / "lists" / "not_devtrain.txt").read_text().split()
    train = [ln.split()[0] for ln in (lfw_mini / "people_train.txt").read_text().splitlines()[1:]]
    everyone = sorted(p.name for p in (lfw_mini / "lfw_original_150px").iterdir())
    assert sorted(not_train + train) == everyone
    test_ids = read_pair_identities(cfg.test_pairs)
    assert report["devtest_identities"] == len(test_ids)
    assert report["overlap"] == sorted(set(test_ids) & set(train))


@pytest.mark.slow
def test_study_runs_the_chain_and_reuses_artifacts(tmp_path, lfw_mini):
    runner = CliRunner()
    cfg = _config(tmp_path, lfw_mini)
    out = tmp_path / "study"
    r = runner.invoke(app, ["study", str(cfg), "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "study.json").read_text())
    assert {x["variant"] for x in doc["runs"]} == {"softmax", "cl-rho5"}
    md = (out / "results.md").read_text()
    assert "| softmax |" in md and "view1 auc" in md
    # Second run: nothing changed, so every step is reused from its manifest.
    r = runner.invoke(app, ["study", str(cfg), "-o", str(out), "--variant", "softmax"])
    assert r.exit_code == 0, r.output
    doc2 = json.loads((out / "study.json").read_text())
    assert doc2["invocations"][-1]["built"] == ["compare"]
    assert "train softmax-s0" in doc2["invocations"][-1]["reused"]
    # The step record keeps the time of the invocation that built each step.
    first = {s["step"]: s for s in doc["steps"]}
    assert all(s == first[s["step"]] for s in doc2["steps"] if s["step"] != "compare")
    # The earlier runs of the other variant stay in the record and the table.
    assert {x["variant"] for x in doc2["runs"]} == {"softmax", "cl-rho5"}
    md2 = render_markdown(doc2, "cmd")
    assert md2.count("| softmax |") == 1 and md2.count("| cl-rho5 |") == 1
    assert "train center_dist_mean" in md2


@pytest.mark.parametrize("name", ["lfw_view1_cpu.toml", "lfw_view1_gpu.toml"])
def test_checked_in_experiment_configs_parse(name):
    cfg = load_study_config(ROOT / "experiments" / name)
    assert [v.name for v in cfg.variants] == [
        "softmax",
        "cl",
        "acl",
        "acl-gamma",
        "cl-rho5",
        "cl-cil",
        "sphereface-acl-gamma",
    ]
    assert len(cfg.seeds) >= 3
    assert cfg.test_pairs.name == "pairsDevTest.txt"


# --- results: paired claims, step records, regenerating the table -------------------------


def test_paired_calls_an_ordering_only_beyond_the_noise():
    from scipy import stats

    from facecl.study.claims import paired

    a = {0: 0.75, 1: 0.76, 2: 0.78}
    b = {0: 0.70, 1: 0.72, 2: 0.71}
    r = paired(a, b)
    assert r["n"] == 3 and r["mean"] == pytest.approx((0.05 + 0.04 + 0.07) / 3)
    assert r["p"] == pytest.approx(stats.ttest_rel([0.75, 0.76, 0.78], [0.70, 0.72, 0.71]).pvalue)
    assert r["p"] < 0.05 and r["verdict"] == "higher"
    assert paired(b, a)["verdict"] == "lower"
    # Same mean gap, but the seeds disagree in sign: no ordering is claimed.
    noisy = paired({0: 0.80, 1: 0.66, 2: 0.79}, b)
    assert noisy["mean"] > 0 and noisy["verdict"] == "within noise"
    # Only the seeds both sides have are paired; one seed is never enough.
    assert paired({0: 0.9}, b)["verdict"] == "needs >= 2 seeds"
    assert paired({5: 0.9}, b) is None


def test_merge_steps_keeps_the_build_time_of_a_reused_step():
    from facecl.study.runner import merge_steps

    old = [
        {"step": "align", "seconds": 800.0, "reused": False},
        {"step": "train a-s0", "seconds": 90.0, "reused": False},
    ]
    new = [
        {"step": "align", "seconds": 1.5, "reused": True},
        {"step": "train a-s1", "seconds": 95.0, "reused": False},
        {"step": "train a-s0", "seconds": 88.0, "reused": False},  # rebuilt: the new time
    ]
    merged = {s["step"]: s for s in merge_steps(old, new)}
    assert merged["align"]["seconds"] == 800.0 and not merged["align"]["reused"]
    assert merged["train a-s0"]["seconds"] == 88.0 and "train a-s1" in merged


def _fake_study(tmp_path: Path, acc: dict[str, list[float]]) -> dict:
    runs, steps = [], [{"step": "align", "seconds": 600.0, "reused": False}]
    for variant, values in acc.items():
        for seed, v in enumerate(values):
            rep = tmp_path / "verify" / f"{variant}-s{seed}-view1"
            rep.mkdir(parents=True)
            (rep / "report.json").write_text(
                json.dumps({"summary": {"accuracy": v, "auc": v + 0.05}})
            )
            run = tmp_path / "runs" / f"{variant}-s{seed}"
            run.mkdir(parents=True)
            if variant != "softmax":  # center statistics, as train's metrics.jsonl logs them
                dist = {"center_dist_mean": 10 * v, "center_dist_p99": 20 * v}
                (run / "metrics.jsonl").write_text(json.dumps({"step": 1, **dist}) + "\n")
            runs.append(
                {"variant": variant, "seed": seed, "run": str(run), "view1_report": str(rep)}
            )
            steps.append({"step": f"train {variant}-s{seed}", "seconds": 100.0, "reused": False})
            steps.append(
                {"step": f"verify view1 {variant}-s{seed}", "seconds": 2.0, "reused": True}
            )
    return {
        "study": "fake",
        "config": "x.toml",
        "overlap": {"overlap_count": 0, "overlap": []},
        "runs": runs,
        "steps": steps,
        "invocations": [{"seeds": [0, 1, 2], "variants": list(acc), "seconds": 1234.0}],
        "total_seconds": 1234.0,
    }


def test_render_claims_and_stage_times(tmp_path):
    doc = _fake_study(
        tmp_path,
        {"softmax": [0.70, 0.72, 0.71], "cl": [0.75, 0.76, 0.78], "acl": [0.80, 0.66, 0.79]},
    )
    md = render_markdown(doc, "cmd")
    claim = {ln.split("|")[1].strip(): ln for ln in md.splitlines() if " vs " in ln}
    assert (
        "**higher**" in claim["CL beats softmax alone (ECCV Table 2, IJCV Fig. 7): cl vs softmax"]
    )
    assert "within noise" in claim["ACL beats CL (IJCV Table 7): acl vs cl"]
    # Distances: mean distance = 10 x accuracy, so acl - cl = 10 x (0.05 - 0.10 + 0.01) / 3.
    dist = next(ln for ln in md.splitlines() if ln.startswith("| ACL vs CL: acl vs cl"))
    assert dist.split("|")[2].strip().startswith("-0.13 ± ") and "within noise" in dist
    # p99/mean is 2 in every run: no difference, and none claimed.
    assert "+0.00 ± 0.00, p=1.000: **within noise**" in dist.split("|")[3]
    # Built steps only: 9 trainings of 100 s, align 600 s; the reused verifies are not counted.
    assert "| train | 9 | 900 | 100.0 |" in md and "| align | 1 | 600 | 600.0 |" in md
    assert "verify view1" not in md.split("## Wall time per stage")[1].split("**all")[0]
    assert "| **all built steps** | | **1500** (25.0 min) | |" in md
    # softmax, cl, acl: two claims have both sides, so 2 x 3 metrics are tested.
    assert "With 6 tests below, about 0.3 would pass" in md
    assert "- seeds 0, 1, 2 x 3 variants: 1234 s" in md


def test_many_invocations_are_summed_in_one_line(tmp_path):
    doc = _fake_study(tmp_path, {"softmax": [0.70, 0.72], "cl": [0.75, 0.76]})
    doc["invocations"] = [
        {"seeds": [s], "variants": [v], "seconds": 100.0 + s, "built": ["a", "b"]}
        for s in (0, 1, 2, 3)
        for v in ("softmax", "cl")
    ]
    md = render_markdown(doc, "cmd")
    assert "- 8 invocations over seeds 0, 1, 2, 3: 812 s in all, median 102 s each" in md
    assert "(16 steps built)" in md and "x 1 variants" not in md


def test_an_overlap_never_recorded_is_said_so(tmp_path):
    doc = _fake_study(tmp_path, {"softmax": [0.70, 0.72], "cl": [0.75, 0.76]})
    assert "Identity overlap DevTrain/DevTest: 0 (none)." in render_markdown(doc, "cmd")
    doc["overlap"] = {}  # a ledger whose study directory (and its overlap report) is gone
    assert "Identity overlap DevTrain/DevTest: not recorded." in render_markdown(doc, "cmd")


def test_the_table_leads_with_view1_and_counts_each_variants_seeds():
    def run(variant: str, seed: int, acc: float) -> dict:
        # a ledger run: its metrics come with sorted keys, BLUFR before View 1
        metrics = {"blufr vr@far=0.001 (mean-std)": 0.02, "train center_dist_mean": 9.0}
        return {"variant": variant, "seed": seed, "metrics": {**metrics, "view1 accuracy": acc}}

    runs = [run("softmax", s, 0.70 + s / 100) for s in (0, 1)] + [run("cl", 0, 0.75)]
    doc = {"study": "s", "config": "x.toml", "overlap": {}, "runs": runs, "steps": []}
    header, _, softmax, cl = render_markdown(doc, "cmd").split("| variant |")[1].splitlines()[:4]
    columns = [c.strip() for c in header.split("|")]
    assert columns[:4] == [
        "seeds",
        "view1 accuracy",
        "blufr vr@far=0.001 (mean-std)",
        "train center_dist_mean",
    ]
    assert softmax.startswith("| softmax | 2 | 70.50 ± 0.71 |") and cl.startswith("| cl | 1 |")


def test_report_only_regenerates_and_keeps_hand_written_notes(tmp_path, lfw_mini):
    from facecl.study.results import NOTES_MARKER

    cfg = _config(tmp_path, lfw_mini)
    out = tmp_path / "study"
    out.mkdir()
    doc = _fake_study(out, {"softmax": [0.70, 0.72], "cl": [0.75, 0.76]})
    (out / "study.json").write_text(json.dumps(doc))
    (out / "compare").mkdir()
    (out / "compare" / "roc_compare.png").write_bytes(b"\x89PNG fake")
    results = tmp_path / "docs" / "results.md"
    args = ["study", str(cfg), "-o", str(out), "--results", str(results), "--report-only"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    md = results.read_text()
    assert "| softmax |" in md and "![ROC](results_roc.png)" in md
    assert f"Config: `{cfg}`." in md  # this command's config, not the recorded "x.toml"
    assert (tmp_path / "docs" / "results_roc.png").read_bytes() == b"\x89PNG fake"
    results.write_text(md + "\nOur reading: the gap is the backbone.\n")
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    md2 = results.read_text()
    assert md2.count(NOTES_MARKER) == 1 and md2.rstrip().endswith("the gap is the backbone.")
    # No study record: a one-line error, not a traceback.
    r = CliRunner().invoke(app, ["study", str(cfg), "-o", str(tmp_path / "none"), "--report-only"])
    assert r.exit_code == 1 and "no readable study record" in r.stderr
