"""The study ledger: every finished run's metrics in one small JSON file, kept in git.

A study directory holds gigabytes (aligned faces, checkpoints, embeddings) and may not
outlive the machine that made it; the claims need tens of seeds, more than one session
affords. ``facecl study --ledger FILE`` records each run (variant, seed, its metrics, or
why it failed) under a key of the run's whole configuration, and the results table counts
every ledger run whose key matches the current config, so seeds accumulate across machines
and sessions. A run is the same experiment as a recorded one when its stage options, data
file names and facecl version are the same (``run_key``); the data's bytes are not part of
the key (the study's manifests check those where the data is consumed).

It also keeps the claims' looks: each time a results table is published (``--results``)
with a claim at a new pair count, that count is appended, and the verdicts charge every
claim for its looks (``facecl.study.claims``).

The file is untrusted input: it is parsed as JSON and every field is type-checked.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from facecl import __version__
from facecl.artifacts import atomic_write_json, sha256_json
from facecl.errors import InputError
from facecl.study.config import StudyConfig, Variant
from facecl.train.config import flat_options

SCHEMA = "facecl.study-ledger/1"
OK, FAILED = "ok", "failed"


def run_key(cfg: StudyConfig, variant: Variant) -> str:
    """What makes two runs of ``variant`` the same experiment, seed aside."""
    data = {
        k: (p.name if p is not None else None)
        for k, p in (
            ("lfw_root", cfg.lfw_root),
            ("train_people", cfg.train_people),
            ("test_pairs", cfg.test_pairs),
            ("train_pairs", cfg.train_pairs),
            ("blufr_config", cfg.blufr_config),
        )
    }
    spec = {
        "facecl": __version__,
        "data": data,
        "align": cfg.align,
        "pack": cfg.pack,
        "train": {**flat_options(cfg.train), **flat_options(variant.train)},
        "embed": cfg.embed,
        "verify": cfg.verify,
    }
    return sha256_json(spec)[:16]


@dataclass(frozen=True)
class LedgerRun:
    variant: str
    seed: int
    key: str
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    error: str = ""
    facecl_version: str = __version__
    recorded: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "seed": self.seed,
            "key": self.key,
            "status": self.status,
            "metrics": dict(sorted(self.metrics.items())),
            "error": self.error,
            "facecl_version": self.facecl_version,
            "recorded": self.recorded,
        }


@dataclass
class Ledger:
    study: str = ""
    overlap: dict[str, Any] = field(default_factory=dict)
    runs: dict[tuple[str, int, str], LedgerRun] = field(default_factory=dict)
    # Published looks, oldest first: {"recorded": date, "pairs": {claim id: paired seeds}}.
    looks: list[dict[str, Any]] = field(default_factory=list)

    def record(self, run: LedgerRun) -> None:
        """Add ``run``, replacing an earlier record of the same variant, seed and key; the
        same outcome recorded again keeps its first date (so the file changes only when a
        result does)."""
        key = (run.variant, run.seed, run.key)
        old = self.runs.get(key)
        if old is not None and (old.status, old.metrics, old.error) == (
            run.status,
            run.metrics,
            run.error,
        ):
            return
        self.runs[key] = run

    def record_look(self, pairs: dict[str, int]) -> None:
        """A table was published with these pair counts; recorded when some claim's count is
        one it was not published at before (a re-render at the same seeds is the same look)."""
        seen = self.looks_by_claim()
        if any(n not in seen.get(claim, []) for claim, n in pairs.items()):
            self.looks.append({"recorded": now(), "pairs": dict(sorted(pairs.items()))})

    def looks_by_claim(self) -> dict[str, list[int]]:
        """claim id -> the pair counts it was published at, in order."""
        out: dict[str, list[int]] = {}
        for look in self.looks:
            for claim, n in look["pairs"].items():
                out.setdefault(claim, []).append(n)
        return out

    def matching(self, keys: dict[str, str]) -> list[LedgerRun]:
        """The runs recorded under the current key of their variant (``keys``: name -> key)."""
        return [r for (v, _, k), r in sorted(self.runs.items()) if keys.get(v) == k]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "study": self.study,
            "overlap": self.overlap,
            "runs": [r.to_dict() for _, r in sorted(self.runs.items())],
            "looks": self.looks,
        }


def _bad(path: Path, what: str) -> InputError:
    return InputError(
        f"study ledger {path} is not valid: {what}",
        "restore it from version control, or pass another --ledger path",
    )


def _run_from(path: Path, i: int, raw: Any) -> LedgerRun:
    where = f"runs[{i}]"
    if not isinstance(raw, dict):
        raise _bad(path, f"{where} is not an object")
    types = {"variant": str, "key": str, "status": str, "error": str, "recorded": str}
    for name, typ in types.items():
        if not isinstance(raw.get(name, ""), typ):
            raise _bad(path, f"{where}.{name} is not a string")
    seed = raw.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise _bad(path, f"{where}.seed is not an integer")
    if raw.get("status") not in (OK, FAILED):
        raise _bad(path, f"{where}.status is not {OK!r} or {FAILED!r}")
    metrics = raw.get("metrics", {})
    if not isinstance(metrics, dict) or not all(
        isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
        for k, v in metrics.items()
    ):
        raise _bad(path, f"{where}.metrics is not an object of numbers")
    return LedgerRun(
        variant=raw["variant"],
        seed=seed,
        key=raw["key"],
        status=raw["status"],
        metrics={k: float(v) for k, v in metrics.items() if math.isfinite(v)},
        error=raw.get("error", ""),
        facecl_version=str(raw.get("facecl_version", "")),
        recorded=raw.get("recorded", ""),
    )


def _look_from(path: Path, i: int, raw: Any) -> dict[str, Any]:
    where = f"looks[{i}]"
    if not isinstance(raw, dict) or not isinstance(raw.get("recorded", ""), str):
        raise _bad(path, f"{where} is not an object with a 'recorded' date")
    pairs = raw.get("pairs")
    if not isinstance(pairs, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
        for k, v in pairs.items()
    ):
        raise _bad(path, f"{where}.pairs is not an object of seed counts")
    return {"recorded": raw.get("recorded", ""), "pairs": dict(pairs)}


def read_ledger(path: Path) -> Ledger:
    """The ledger at ``path`` (an empty one when the file does not exist)."""
    if not path.exists():
        return Ledger()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise _bad(path, f"unreadable JSON ({e})") from None
    if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
        raise _bad(path, f"no schema {SCHEMA!r}")
    runs, looks = raw.get("runs", []), raw.get("looks", [])
    overlap = raw.get("overlap", {})
    if not isinstance(runs, list) or not isinstance(looks, list) or not isinstance(overlap, dict):
        raise _bad(path, "runs or looks is not a list, or overlap is not an object")
    ledger = Ledger(study=str(raw.get("study", "")), overlap=overlap)
    ledger.looks = [_look_from(path, i, x) for i, x in enumerate(looks)]
    for i, r in enumerate(runs):
        ledger.record(_run_from(path, i, r))
    return ledger


def write_ledger(path: Path, ledger: Ledger) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, ledger.to_dict())


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def variant_keys(cfg: StudyConfig) -> dict[str, str]:
    return {v.name: run_key(cfg, v) for v in cfg.variants}


def _key_of(cfg: StudyConfig, run: dict[str, Any], keys: dict[str, str]) -> str | None:
    """A study run's key: the one it recorded, or (a run recorded before keys were) the
    current key when its train options are the current ones; None when they differ."""
    if isinstance(run.get("key"), str):
        return run["key"]
    variant = next((v for v in cfg.variants if v.name == run.get("variant")), None)
    if variant is None:
        return None
    from facecl.study.runner import train_options

    current = train_options(cfg, variant, run["seed"])
    return keys[variant.name] if run.get("train") == current else None


def record_study(ledger: Ledger, cfg: StudyConfig, doc: dict[str, Any]) -> int:
    """Record every run of the study record ``doc`` whose outcome is known (a finished run
    whose reports are readable, or a failed one); returns how many were recorded."""
    from facecl.study.results import run_metrics

    keys = variant_keys(cfg)
    ledger.study, ledger.overlap = cfg.name, dict(doc.get("overlap", {}))
    n = 0
    for r in doc.get("runs", []):
        key = _key_of(cfg, r, keys)
        if key is None or r.get("from_ledger"):
            continue
        base = {"variant": r["variant"], "seed": int(r["seed"]), "key": key, "recorded": now()}
        if r.get("status", OK) == FAILED:
            ledger.record(LedgerRun(**base, status=FAILED, error=str(r.get("error", ""))))
        else:
            metrics = run_metrics(r)
            if not metrics:  # its outputs are gone: keep what the ledger has
                continue
            ledger.record(LedgerRun(**base, status=OK, metrics=metrics))
        n += 1
    return n


def with_ledger(cfg: StudyConfig, doc: dict[str, Any], ledger: Ledger) -> dict[str, Any]:
    """``doc`` with the ledger's matching runs added for every (variant, seed) it lacks."""
    have = {(r["variant"], r["seed"]) for r in doc.get("runs", [])}
    extra = [
        {
            "variant": r.variant,
            "seed": r.seed,
            "key": r.key,
            "status": r.status,
            "metrics": r.metrics,
            "error": r.error,
            "from_ledger": True,
        }
        for r in ledger.matching(variant_keys(cfg))
        if (r.variant, r.seed) not in have
    ]
    names = [v.name for v in cfg.variants]
    runs = sorted(
        [*doc.get("runs", []), *extra],
        key=lambda r: (names.index(r["variant"]) if r["variant"] in names else 99, r["seed"]),
    )
    return {**doc, "runs": runs, "looks": ledger.looks_by_claim()}


def ledger_study(cfg: StudyConfig, ledger: Ledger) -> dict[str, Any]:
    """A study record with no runs of its own (the study directory is gone): the ledger's
    runs are added by :func:`with_ledger`."""
    return {
        "study": cfg.name,
        "config": str(cfg.source),
        "overlap": ledger.overlap,
        "runs": [],
        "steps": [],
        "invocations": [],
    }
