"""Run the whole chain on full LFW for every loss variant and seed (issue #9).

Each step is the real ``facecl`` command run as a subprocess (its progress bar shows on
stderr; its ``--json`` summary is read from stdout), so the study exercises exactly what a
user runs. Stage caching comes from the manifests: a step whose output exists with the same
config and inputs is a no-op, so changing only a loss re-uses the aligned and packed
artifacts (the log says "reused").
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from facecl.artifacts import atomic_write_json
from facecl.console import console
from facecl.errors import FaceclError, InputError
from facecl.study.config import StudyConfig, Variant, cli_args
from facecl.study.ledger import FAILED, OK, run_key
from facecl.train.config import flat_options


@dataclass
class StepLog:
    steps: list[dict[str, Any]] = field(default_factory=list)

    def add(self, name: str, seconds: float, reused: bool, out: Path) -> None:
        self.steps.append(
            {"step": name, "seconds": round(seconds, 2), "reused": reused, "out": str(out)}
        )


def run_facecl(args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``facecl ARGS --json``; returns the JSON summary, raises on failure."""
    cmd = [sys.executable, "-m", "facecl", *args, "--json"]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env)
    if proc.returncode != 0:
        raise StepError(proc.returncode, args)
    try:
        return json.loads(proc.stdout) if proc.stdout.strip() else {}
    except ValueError:
        return {"stdout": proc.stdout}


class StepError(FaceclError):
    """A facecl command of the study exited non-zero (its own error is on stderr above)."""

    def __init__(self, returncode: int, args: list[str]):
        self.returncode = returncode
        super().__init__(
            f"step failed (exit {returncode}): facecl {' '.join(args)}",
            "see the error above; fix it and re-run the study (finished steps are reused)",
        )


def _reused(summary: dict[str, Any]) -> bool:
    return bool(summary.get("reused") or summary.get("up_to_date") or summary.get("noop"))


def read_people(path: Path) -> list[str]:
    """Names from an LFW people file (``N`` header, then ``Name count`` lines)."""
    names = []
    for line in path.read_text().splitlines()[1:]:
        parts = line.split()
        if parts:
            names.append(parts[0])
    return names


def read_pair_identities(path: Path) -> list[str]:
    """Identities of an LFW pairs file (3 fields: same person; 4 fields: two people)."""
    names: set[str] = set()
    for line in path.read_text().splitlines()[1:]:
        parts = line.split()
        if len(parts) == 3:
            names.add(parts[0])
        elif len(parts) == 4:
            names.update((parts[0], parts[2]))
    return sorted(names)


def write_identity_lists(cfg: StudyConfig, lists: Path) -> dict[str, Any]:
    """Exclusion lists for pack: every LFW identity outside DevTrain, and DevTest's identities.

    Returns the overlap report (DevTrain identities that also appear in the DevTest pairs).
    """
    from facecl.pack.overlap import normalize_name

    lists.mkdir(parents=True, exist_ok=True)
    train = read_people(cfg.train_people)
    test = read_pair_identities(cfg.test_pairs)
    everyone = sorted(p.name for p in cfg.lfw_root.iterdir() if p.is_dir())
    train_norm = {normalize_name(n) for n in train}
    not_train = [n for n in everyone if normalize_name(n) not in train_norm]
    (lists / "not_devtrain.txt").write_text("\n".join(not_train) + "\n")
    (lists / "devtest_identities.txt").write_text("\n".join(test) + "\n")
    overlap = sorted(n for n in test if normalize_name(n) in train_norm)
    return {
        "devtrain_identities": len(train),
        "devtest_identities": len(test),
        "overlap": overlap,
        "overlap_count": len(overlap),
    }


Step = Callable[[str, list[str], Path], dict[str, Any]]
"""``step(name, facecl args, output)``: run one facecl command, log it, return its summary."""


@dataclass
class _Steps:
    """Runs the study's steps one after the other, logging each (time, reused) in ``log``."""

    log: StepLog = field(default_factory=StepLog)
    current: str = ""
    """The step running (or the last one run)."""

    def __call__(self, name: str, args: list[str], target: Path) -> dict[str, Any]:
        console.rule(f"[bold]{name}")
        self.current = name
        t0 = time.perf_counter()
        summary = run_facecl(args)
        dt = time.perf_counter() - t0
        reused = _reused(summary)
        self.log.add(name, dt, reused, target)
        console.print(
            f"{name}: {'reused (same config and inputs)' if reused else 'done'} in {dt:.1f} s"
        )
        return summary


def _check_inputs(cfg: StudyConfig) -> None:
    for p, what in (
        (cfg.lfw_root, "lfw_root"),
        (cfg.train_people, "train_people"),
        (cfg.test_pairs, "test_pairs"),
    ):
        if not p.exists():
            raise InputError(f"study input {what} not found: {p}", "fix [data] in the config")


def _chosen_variants(cfg: StudyConfig, variants: list[str] | None) -> list[Variant]:
    """The config's variants named by ``variants`` (all when None); unknown names raise."""
    chosen = [v for v in cfg.variants if not variants or v.name in variants]
    if variants:
        unknown = sorted(set(variants) - {v.name for v in cfg.variants})
        if unknown:
            raise InputError(
                f"unknown variant(s) {', '.join(unknown)}",
                f"valid: {', '.join(v.name for v in cfg.variants)}",
            )
    return chosen


def _align_and_pack(cfg: StudyConfig, out: Path, step: Step) -> tuple[Path, Path, dict[str, Any]]:
    """The shared steps: align LFW, write the identity lists, pack DevTrain without the other
    identities. Returns the aligned and packed artifacts and the identity overlap report."""
    aligned = out / "aligned"
    step("align", ["align", str(cfg.lfw_root), "-o", str(aligned), *cli_args(cfg.align)], aligned)
    overlap = write_identity_lists(cfg, out / "lists")
    console.print(
        f"identity overlap DevTrain/DevTest: {overlap['overlap_count']} "
        f"({', '.join(overlap['overlap'][:10]) or 'none'})"
    )
    packed = out / "packed"
    step(
        "pack",
        [
            "pack",
            str(aligned),
            "-o",
            str(packed),
            "--exclude",
            str(out / "lists" / "not_devtrain.txt"),
            "--exclude",
            str(out / "lists" / "devtest_identities.txt"),
            *cli_args(cfg.pack),
        ],
        packed,
    )
    return aligned, packed, overlap


def _with_previous_runs(
    cfg: StudyConfig, out: Path, results: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """This invocation's runs plus those of earlier invocations (other variants or seeds) from
    ``study.json``, in config variant order then seed; and the earlier document ({} if none)."""
    previous = out / "study.json"
    prev_doc: dict[str, Any] = {}
    if not previous.is_file():
        return results, prev_doc
    try:
        prev_doc = json.loads(previous.read_text())
    except ValueError:
        prev_doc = {}
    old = prev_doc.get("runs", [])
    done = {(r["variant"], r["seed"]) for r in results}
    results = [r for r in old if (r["variant"], r["seed"]) not in done] + results
    names = [v.name for v in cfg.variants]
    known = set(names)
    results.sort(
        key=lambda r: (names.index(r["variant"]) if r["variant"] in known else 99, r["seed"])
    )
    return results, prev_doc


def _compare_step(out: Path, results: list[dict[str, Any]], step: Step) -> None:
    """Overlay the View 1 ROC of each variant; one curve per variant (its lowest seed) keeps
    the plot readable."""
    compare = out / "compare"
    first: dict[str, dict[str, Any]] = {}
    finished = [r for r in results if r.get("status", OK) == OK and "view1_report" in r]
    for r in sorted(finished, key=lambda r: r["seed"]):
        first.setdefault(r["variant"], r)
    reports = [r["view1_report"] for r in first.values() if Path(r["view1_report"]).is_dir()]
    if reports:
        step("compare", ["verify", "--compare", *reports, "-o", str(compare), "--force"], compare)


def run_study(
    cfg: StudyConfig,
    out: Path,
    *,
    variants: list[str] | None = None,
    seeds: list[int] | None = None,
) -> dict[str, Any]:
    _check_inputs(cfg)
    chosen = _chosen_variants(cfg, variants)
    run_seeds = list(seeds) if seeds else list(cfg.seeds)
    out.mkdir(parents=True, exist_ok=True)
    step = _Steps()
    t_all = time.perf_counter()
    aligned, packed, overlap = _align_and_pack(cfg, out, step)
    results = [
        _or_failure(
            cfg,
            variant,
            seed,
            step,
            partial(run_variant, cfg, out, variant, seed, aligned, packed, step),
        )
        for variant in chosen
        for seed in run_seeds
    ]
    results, prev_doc = _with_previous_runs(cfg, out, results)
    _compare_step(out, results, step)
    seconds = round(time.perf_counter() - t_all, 1)
    steps = step.log.steps
    doc = {
        "study": cfg.name,
        "config": str(cfg.source),
        "overlap": overlap,
        "runs": results,
        "steps": merge_steps(prev_doc.get("steps", []), steps),
        "invocations": [
            *prev_doc.get("invocations", []),
            {
                "seeds": run_seeds,
                "variants": [v.name for v in chosen],
                "seconds": seconds,
                "built": [s["step"] for s in steps if not s["reused"]],
                "reused": [s["step"] for s in steps if s["reused"]],
            },
        ],
        "total_seconds": seconds,
    }
    atomic_write_json(out / "study.json", doc)
    return doc


def merge_steps(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per step across invocations, keeping the time of the run that built it.

    A step that this invocation merely reused keeps the earlier record (whose ``seconds`` is
    the real build time), so the study's wall-time table stays the cost of building it.
    """
    merged = {s["step"]: s for s in old}
    for s in new:
        prior = merged.get(s["step"])
        if s["reused"] and prior is not None and not prior.get("reused"):
            continue
        merged[s["step"]] = s
    return list(merged.values())


def train_options(cfg: StudyConfig, variant: Variant, seed: int) -> dict[str, Any]:
    """The train options of one run: ``[train]``, the variant's, the seed; nested tables
    ([train.center], [train.margin]) become their flat CLI options."""
    return {**flat_options(cfg.train), **flat_options(variant.train), "seed": seed}


def _or_failure(
    cfg: StudyConfig, variant: Variant, seed: int, step: _Steps, run: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """``run()``'s record, or, when one of its steps fails (a diverged training, say), a
    record of the failure, so that the other runs go on and the failure is counted."""
    try:
        return run()
    except StepError as e:
        why = f"{step.current.split(' ')[0]} failed, exit {e.returncode}"
        console.print(f"[red]{variant.name} seed {seed}: {why}; the study goes on")
        return {
            "variant": variant.name,
            "seed": seed,
            "key": run_key(cfg, variant),
            "train": train_options(cfg, variant, seed),
            "status": FAILED,
            "error": why,
        }


def failed_in(doc: dict[str, Any]) -> list[str]:
    """``variant-sSEED`` of each run that failed in the latest invocation of ``doc``."""
    latest = doc.get("invocations", [{}])[-1] if doc.get("invocations") else {}
    ran = {(v, s) for v in latest.get("variants", []) for s in latest.get("seeds", [])}
    return [
        f"{r['variant']}-s{r['seed']}"
        for r in doc.get("runs", [])
        if r.get("status") == FAILED and (r["variant"], r["seed"]) in ran
    ]


def run_variant(
    cfg: StudyConfig,
    out: Path,
    variant: Variant,
    seed: int,
    aligned: Path,
    packed: Path,
    step: Step,
) -> dict[str, Any]:
    tag = f"{variant.name}-s{seed}"
    run = out / "runs" / tag
    train_opts = train_options(cfg, variant, seed)
    step(f"train {tag}", ["train", str(packed), "-o", str(run), *cli_args(train_opts)], run)
    emb = out / "emb" / tag
    step(
        f"embed {tag}", ["embed", str(run), str(aligned), "-o", str(emb), *cli_args(cfg.embed)], emb
    )
    v1 = out / "verify" / f"{tag}-view1"
    step(
        f"verify view1 {tag}",
        [
            "verify",
            str(emb),
            "--protocol",
            "lfw-view1",
            "--pairs",
            str(cfg.test_pairs),
            "--train-pairs",
            str(cfg.train_pairs),
            "-o",
            str(v1),
            *cli_args(cfg.verify),
        ],
        v1,
    )
    result: dict[str, Any] = {
        "variant": variant.name,
        "seed": seed,
        "key": run_key(cfg, variant),
        "status": OK,
        "train": train_opts,
        "run": str(run),
        "view1_report": str(v1),
    }
    if cfg.blufr_config and cfg.blufr_config.exists():
        bl = out / "verify" / f"{tag}-blufr"
        step(
            f"verify blufr {tag}",
            [
                "verify",
                str(emb),
                "--protocol",
                "blufr",
                "--config",
                str(cfg.blufr_config),
                "-o",
                str(bl),
                *cli_args(cfg.verify),
            ],
            bl,
        )
        result["blufr_report"] = str(bl)
    return result
