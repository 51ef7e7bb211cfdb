"""`make bench`'s runner (benchmarks/run_all.py): a benchmark that cannot run is recorded as
skipped with a one-line reason, and the figures a benchmark records land in the one results
file. No benchmark is timed here."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import common, run_all


def test_missing_peer_venv_is_a_one_line_skip(tmp_path, monkeypatch, capsys):
    absent = tmp_path / "fnp" / "bin" / "python"  # as on a clone before make bench-peers
    monkeypatch.setitem(run_all.HOW, absent, run_all.HOW[run_all.PEER])
    entry = run_all.run_one("align", ["--n", "1"], [absent], tmp_path / "results.json")
    assert entry["status"] == "skipped"
    assert (
        entry["reason"]
        == f"needs {absent}: run 'make bench-peers' (it creates the facenet-pytorch venv)"
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("== bench_align: skipped, needs")


def test_record_merges_sections_into_the_results_file(tmp_path, monkeypatch):
    monkeypatch.delenv(common.RESULTS_ENV, raising=False)
    assert common.record("embed", {"x": 1}) is None  # a run by hand writes nothing
    path = tmp_path / "results.json"
    monkeypatch.setenv(common.RESULTS_ENV, str(path))
    common.record("embed", {"x": 1})
    common.record("train", {"y": [2, 3]})
    data = json.loads(path.read_text())
    assert data["embed"]["x"] == 1 and data["train"]["y"] == [2, 3]
    assert data["train"]["machine"]["cores"] >= 1


def test_a_failing_benchmark_is_recorded_with_its_last_error_line(tmp_path, monkeypatch):
    script = tmp_path / "benchmarks" / "bench_boom.py"
    script.parent.mkdir()
    script.write_text("import sys\nprint('partial table')\nsys.exit('boom: no device')\n")
    monkeypatch.setattr(run_all, "ROOT", tmp_path)
    entry = run_all.run_one("boom", [], [], tmp_path / "r.json")
    assert entry["status"] == "failed" and entry["reason"] == "boom: no device"


def test_plan_names_existing_benchmarks():
    root = Path(run_all.__file__).parent
    assert all((root / f"bench_{name}.py").is_file() for name in run_all.PLAN)
