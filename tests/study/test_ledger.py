"""The study ledger: runs recorded in a small file that outlives the study directory, counted
again under the same config only; failed runs recorded, not dropped; bad ledgers refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from facecl.cli import app
from facecl.study.config import load_study_config
from facecl.study.ledger import SCHEMA, Ledger, LedgerRun, read_ledger, run_key, write_ledger
from tests.study.test_study import _config, _fake_study

CL = '[[variants]]\nname = "cl"\nloss = "cl"\n'


def _study_dir(tmp_path: Path, cfg: Path, name: str, acc: dict, first_seed: int) -> Path:
    """A study directory whose study.json and reports look like a finished study's, with
    seeds from ``first_seed`` and the run keys of ``cfg``."""
    out = tmp_path / name
    out.mkdir()
    doc = _fake_study(out, acc)
    study = load_study_config(cfg)
    keys = {v.name: run_key(study, v) for v in study.variants}
    for r in doc["runs"]:
        r["seed"] += first_seed
        r["key"] = keys[r["variant"]]
    (out / "study.json").write_text(json.dumps(doc))
    return out


def _report(cfg: Path, out: Path, ledger: Path, results: Path) -> str:
    args = ["study", str(cfg), "-o", str(out), "--ledger", str(ledger), "--report-only"]
    r = CliRunner().invoke(app, [*args, "--results", str(results)])
    assert r.exit_code == 0, r.output
    return results.read_text()


def _seeds_line(md: str) -> str:
    return next(ln for ln in md.splitlines() if ln.startswith("Values are mean"))


def test_runs_accumulate_across_study_directories_through_the_ledger(tmp_path, lfw_mini):
    cfg = _config(tmp_path, lfw_mini, CL)
    ledger, results = tmp_path / "ledger.json", tmp_path / "results.md"
    acc = {"softmax": [0.70, 0.72], "cl": [0.75, 0.76], "cl-rho5": [0.74, 0.73]}
    first = _study_dir(tmp_path, cfg, "machine1", acc, first_seed=0)
    md = _report(cfg, first, ledger, results)
    assert "seeds (0, 1)" in _seeds_line(md)
    recorded = read_ledger(ledger)
    assert len(recorded.runs) == 6 and recorded.study == "mini"
    assert {r.metrics["view1 accuracy"] for r in recorded.runs.values() if r.variant == "cl"} == {
        0.75,
        0.76,
    }
    # A second machine runs seeds 2 and 3; the first one's directory is gone.
    second = _study_dir(tmp_path, cfg, "machine2", acc, first_seed=2)
    shutil.rmtree(first)
    md = _report(cfg, second, ledger, results)
    assert "seeds (0, 1, 2, 3)" in _seeds_line(md)
    claim = next(ln for ln in md.splitlines() if ln.startswith("| CL beats softmax") and "| 4 |")
    assert "view1 accuracy" in claim
    # Both directories gone: the table is the ledger's alone.
    shutil.rmtree(second)
    md = _report(cfg, tmp_path / "gone", ledger, results)
    assert "seeds (0, 1, 2, 3)" in _seeds_line(md) and "| cl | 4 | 75.50 ± 0.58 |" in md
    # Another config (more steps) is another experiment: none of the runs count, none is lost.
    other = tmp_path / "other" / "study.toml"
    other.parent.mkdir()
    other.write_text(cfg.read_text().replace("steps = 4", "steps = 5"))
    shutil.copy(tmp_path / "pairsDevTest.txt", other.parent)
    md = _report(other, tmp_path / "gone", ledger, results)
    assert "| cl |" not in md and len(read_ledger(ledger).runs) == 12


def test_a_rerun_replaces_its_own_record_only():
    book = Ledger()
    run = LedgerRun("cl", 0, "k1", "ok", {"view1 accuracy": 0.7}, recorded="day 1")
    book.record(run)
    book.record(LedgerRun("cl", 0, "k1", "ok", {"view1 accuracy": 0.7}, recorded="day 2"))
    assert book.runs[("cl", 0, "k1")].recorded == "day 1"  # the same result: unchanged
    book.record(LedgerRun("cl", 0, "k1", "ok", {"view1 accuracy": 0.8}))
    book.record(LedgerRun("cl", 0, "k2", "failed", error="train failed, exit 1"))
    assert len(book.runs) == 2 and book.runs[("cl", 0, "k1")].metrics["view1 accuracy"] == 0.8
    assert [r.key for r in book.matching({"cl": "k2"})] == ["k2"]


def _one_run(**fields: object) -> str:
    run = {"variant": "cl", "seed": 0, "key": "k", "status": "ok", **fields}
    return json.dumps({"schema": SCHEMA, "runs": [run]})


@pytest.mark.parametrize(
    "text, what",
    [
        ("{not json", "unreadable JSON"),
        ('{"schema": "other/1", "runs": []}', "no schema"),
        (json.dumps({"schema": SCHEMA, "runs": {}}), "runs or looks is not a list"),
        (json.dumps({"schema": SCHEMA, "runs": [], "looks": [1]}), "looks[0] is not an object"),
        (
            json.dumps({"schema": SCHEMA, "runs": [], "looks": [{"pairs": {"cl vs softmax": -1}}]}),
            "looks[0].pairs is not an object of seed counts",
        ),
        (json.dumps({"schema": SCHEMA, "runs": [3]}), "runs[0] is not an object"),
        (_one_run(seed="0"), "runs[0].seed is not an integer"),
        (_one_run(metrics={"acc": "1; rm -rf"}), "runs[0].metrics is not an object of numbers"),
        (_one_run(status="maybe"), "runs[0].status is not"),
    ],
)
def test_a_bad_ledger_is_refused_in_one_line(tmp_path, lfw_mini, text, what):
    cfg = _config(tmp_path, lfw_mini)
    bad = tmp_path / "ledger.json"
    bad.write_text(text)
    args = ["study", str(cfg), "-o", str(tmp_path / "s"), "--ledger", str(bad), "--report-only"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 1, r.output
    assert "is not valid" in r.stderr and what in r.stderr and "Traceback" not in r.output
    assert bad.read_text() == text  # left as it was


def test_a_diverging_run_is_recorded_and_the_study_goes_on(tmp_path, lfw_mini):
    blowup = '[[variants]]\nname = "blowup"\nloss = "cl"\nlr = 1e30\n'
    cfg = _config(tmp_path, lfw_mini, blowup)
    ledger, out = tmp_path / "ledger.json", tmp_path / "study"
    args = ["study", str(cfg), "-o", str(out), "--variant", "blowup", "--seed", "0", "--seed", "1"]
    r = CliRunner().invoke(app, [*args, "--ledger", str(ledger)])
    assert r.exit_code == 1, r.output
    assert "2 run(s) failed: blowup-s0, blowup-s1" in r.stderr
    doc = json.loads((out / "study.json").read_text())
    assert [(x["seed"], x["status"]) for x in doc["runs"]] == [(0, "failed"), (1, "failed")]
    failed = [x for x in read_ledger(ledger).runs.values() if x.status == "failed"]
    assert sorted(x.seed for x in failed) == [0, 1] and "train failed" in failed[0].error
    assert "- blowup: seeds 0, 1 (train failed, exit 1)" in (out / "results.md").read_text()


def test_write_then_read_is_the_same_ledger(tmp_path):
    book = Ledger(study="s", overlap={"overlap_count": 0, "overlap": []})
    book.record(LedgerRun("cl", 3, "k", "ok", {"view1 accuracy": 0.71, "view1 auc": 0.8}))
    book.record_look({"cl vs softmax": 3})
    write_ledger(tmp_path / "l.json", book)
    again = read_ledger(tmp_path / "l.json")
    assert again.to_dict() == book.to_dict()


def _looks_cell(md: str) -> str:
    """The looks column of the CL vs softmax verdict row."""
    row = next(ln for ln in md.splitlines() if ln.startswith("| CL beats softmax") and "view1 a")
    return row.split(" | ")[3]


def test_each_published_table_is_a_look_that_later_verdicts_charge_for(tmp_path, lfw_mini):
    cfg = _config(tmp_path, lfw_mini, CL)
    ledger, results = tmp_path / "ledger.json", tmp_path / "results.md"
    acc = {"softmax": [0.70, 0.72, 0.71], "cl": [0.75, 0.76, 0.74]}
    first = _study_dir(tmp_path, cfg, "machine1", acc, first_seed=0)
    md = _report(cfg, first, ledger, results)
    assert _looks_cell(md) == "1"
    assert read_ledger(ledger).looks_by_claim() == {"cl vs softmax": [3]}
    # The same seeds published again: the same look, nothing recorded, the same page.
    assert _report(cfg, first, ledger, results) == md
    assert len(read_ledger(ledger).looks) == 1
    # Rendering into the study directory alone (no --results) is not a publication.
    r = CliRunner().invoke(
        app, ["study", str(cfg), "-o", str(first), "--ledger", str(ledger), "--report-only"]
    )
    assert r.exit_code == 0, r.output
    assert len(read_ledger(ledger).looks) == 1
    # Three more seeds: a second look, and the claim's p must now pass half the threshold.
    second = _study_dir(tmp_path, cfg, "machine2", acc, first_seed=3)
    md = _report(cfg, second, ledger, results)
    assert _looks_cell(md) == "2"
    assert read_ledger(ledger).looks_by_claim() == {"cl vs softmax": [3, 6]}
