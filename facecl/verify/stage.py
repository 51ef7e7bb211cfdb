"""`facecl verify`: evaluate an embeddings artifact under a protocol; write a verify artifact.

Artifact layout (schema ``facecl.verify/1``)::

    <out>/
      manifest.json      config, input hashes, counts, extra.files (sha256 of each file)
      report.json        every number: protocol, inputs (with sha256), results, summary,
                         missing images/pairs by name, comparable + why
      roc.npz            far, tar[, thresholds]: the curve ``--compare`` overlays
      scores.npz         pair protocols: score, same, fold of every scored pair
      missing.csv        item, kind, reason of every skipped pair or image
      roc.png det.png hist.png              (pair protocols; BLUFR: roc/det of mean VR)
      blufr_vr.png blufr_dir.png            (BLUFR: mean +- std over trials)
      dir.png                               (identify with impostor probes)

Several embeddings under ``--protocol bin`` write one such artifact per set in
``<out>/<set>/`` and ``<out>/sets.json`` (one row per set: summary and comparability).

``facecl verify --compare`` writes the same kind of artifact with ``compare.json`` and
``roc_compare.png`` / ``det_compare.png`` instead (``extra.kind = "compare"``).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from facecl.artifacts import (
    Manifest,
    StageOutput,
    atomic_write_json,
    config_dict,
    input_ref,
    read_manifest,
    sha256_file,
)
from facecl.errors import ArtifactError, UsageError
from facecl.verify import plots
from facecl.verify.config import VerifyConfig
from facecl.verify.evaluate import Evaluation

REPORT = "report.json"
ROC = "roc.npz"
COMPARE = "compare.json"
REPORT_SCHEMA = "facecl.verify.report/1"


def clean_json(obj: Any) -> Any:
    """numpy scalars/arrays to Python, non-finite floats to None (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return clean_json(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# How each input role is passed on the command line (for the messages).
ROLE_OPTIONS = {
    "pairs": "--pairs FILE (LFW pairs.txt / pairsDevTest.txt, or a CSV)",
    "blufr_config": "--config PATH/blufr_lfw_config.mat",
    "gallery": "--gallery FOLDER_OR_LIST",
    "probe": "--probe FOLDER_OR_LIST",
}


def _protocol_inputs(
    cfg: VerifyConfig,
    pairs: Path | None,
    train_pairs: Path | None,
    blufr_config: Path | None,
    gallery: Path | None,
    probe: Path | None,
) -> dict[str, Path]:
    """Check that the options the protocol needs are there; returns {role: path}."""
    from facecl.verify.evaluate import PROTOCOLS

    p = cfg.protocol
    proto = PROTOCOLS.get(p)
    given = {"pairs": pairs, "blufr_config": blufr_config, "gallery": gallery, "probe": probe}
    out: dict[str, Path] = {}
    for role in proto.needs:
        value, how = given[role], ROLE_OPTIONS[role]
        if value is None:
            raise UsageError(f"--protocol {p} needs {how.split()[0]}", f"pass {how}")
        out[role] = Path(value)
    if proto.train_pairs:
        tp = train_pairs if train_pairs is not None else out["pairs"].parent / "pairsDevTrain.txt"
        if not Path(tp).is_file():
            raise UsageError(
                f"View 1 chooses its threshold on pairsDevTrain.txt, not found at {tp}",
                "pass --train-pairs PATH/pairsDevTrain.txt",
            )
        out["train_pairs"] = Path(tp)
    elif train_pairs is not None:
        users = [n for n in PROTOCOLS.names() if PROTOCOLS.get(n).train_pairs]
        raise UsageError(f"--train-pairs is only used by --protocol {', '.join(users)}", "drop it")
    for role, value in given.items():
        if value is not None and role not in out:
            raise UsageError(
                f"{ROLE_OPTIONS[role].split()[0]} is not used by --protocol {p}", "drop it"
            )
    return out


def run_verify(
    embeddings: Path,
    out: Path,
    cfg: VerifyConfig,
    *,
    pairs: Path | None = None,
    train_pairs: Path | None = None,
    blufr_config: Path | None = None,
    gallery: Path | None = None,
    probe: Path | None = None,
    force: bool = False,
    on_trial: Callable[[int, int], None] | None = None,
) -> tuple[Manifest, dict[str, Any], bool]:
    """Evaluate ``embeddings`` and write the verify artifact at ``out``.

    Returns (manifest, report, reused): ``reused`` is True when an identical run's output was
    already in place. ``on_trial(done, total)`` reports BLUFR progress.
    """
    from facecl.verify import evaluate as E
    from facecl.verify.embeddings import load_embeddings, with_fusion

    cfg = cfg.validate()
    roles = _protocol_inputs(cfg, pairs, train_pairs, blufr_config, gallery, probe)
    inputs = [input_ref(embeddings)] + [input_ref(p) for p in roles.values()]
    so = StageOutput(out, "verify", cfg, inputs, force=force, resume=False)
    if so.up_to_date:
        assert so.existing is not None  # up to date = a complete manifest was read
        return so.existing, json.loads((so.path / REPORT).read_text()), True

    emb, fusion = with_fusion(load_embeddings(embeddings), cfg.fusion)
    ev = E.PROTOCOLS.get(cfg.protocol).run(emb, roles, cfg, on_trial)

    work = so.begin()
    written = _write_outputs(work, ev, cfg)
    report = clean_json(
        {
            "schema": REPORT_SCHEMA,
            "protocol": cfg.protocol,
            "metric": cfg.metric,
            "pca_dim": cfg.pca_dim,
            "config": config_dict(cfg),
            "inputs": [
                {**ref, "role": role}
                for ref, role in zip(inputs, ["embeddings", *roles], strict=True)
            ],
            "embeddings": {
                "path": str(emb.source),
                "n": len(emb.keys),
                "dim": emb.dim,
                "n_ok": int(emb.ok.sum()),
                "fusion": fusion,
            },
            **ev.report,
            "files": sorted(written),
        }
    )
    atomic_write_json(work / REPORT, report)
    files = {rel: sha256_file(work / rel) for rel in [*written, REPORT]}
    skipped: dict[str, int] = {}
    for row in ev.skipped:
        key = f"{row['kind']}: {row['reason']}"
        skipped[key] = skipped.get(key, 0) + 1
    counts = {
        "processed": _processed(ev),
        "written": len(files),
        "skipped": skipped,
    }
    manifest = so.commit(
        counts,
        {
            "kind": "report",
            "protocol": cfg.protocol,
            "summary": report["summary"],
            "comparable": report["comparable"],
            "files": files,
        },
    )
    return manifest, report, False


def _processed(ev: Evaluation) -> int:
    r = ev.report["results"]
    if "n_pairs" in r:
        return int(r["n_pairs"])
    if "trials" in r:
        return int(sum(t["n_test"] for t in r["trials"]))
    return int(r.get("n_gallery", 0) + r.get("n_genuine_probes", 0) + r.get("n_impostor_probes", 0))


def _write_outputs(work: Path, ev: Evaluation, cfg: VerifyConfig) -> list[str]:
    written = []
    roc: dict[str, Any] = {k: np.asarray(v, dtype=np.float64) for k, v in ev.roc.items()}
    np.savez(work / ROC, **roc)
    written.append(ROC)
    if ev.scores is not None:
        scores: dict[str, Any] = dict(ev.scores)
        np.savez(work / "scores.npz", **scores)
        written.append("scores.npz")
    with open(work / "missing.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["item", "kind", "reason"])
        w.writeheader()
        w.writerows(ev.skipped)
    written.append("missing.csv")
    if not cfg.plots:
        return written
    from facecl.verify.evaluate import PROTOCOLS

    proto = PROTOCOLS.get(cfg.protocol)
    label = cfg.protocol
    results = ev.report["results"]
    if proto.verification:
        ylabel = proto.rate_label
        curve = [(label, ev.roc["far"], ev.roc["tar"])]
        plots.plot_roc(curve, work / "roc.png", f"ROC ({label}, {cfg.metric})", ylabel)
        plots.plot_det(curve, work / "det.png", f"DET ({label}, {cfg.metric})")
        written += ["roc.png", "det.png"]
    if ev.hist is not None:
        thr = None
        acc = results.get("accuracy")
        if isinstance(acc, dict) and "thresholds" in acc:
            thr = float(np.median(acc["thresholds"]))
        elif isinstance(acc, dict):
            thr = acc.get("threshold")
        title = "Score distributions" + proto.hist_note
        plots.plot_histograms(
            ev.hist["edges"],
            ev.hist["genuine"],
            ev.hist["impostor"],
            work / "hist.png",
            threshold=thr,
            title=title,
            xlabel=f"{cfg.metric} score",
        )
        written.append("hist.png")
    if ev.veri_curve is not None:
        c = ev.veri_curve
        plots.plot_rate_vs_far(
            c["far"], c["mean"], c["std"], work / "blufr_vr.png",
            "verification rate", "BLUFR verification (mean +- std over trials)",
            mark=cfg.blufr_veri_far,
        )  # fmt: skip
        written.append("blufr_vr.png")
    if ev.dir_curve is not None:
        c = ev.dir_curve
        name = proto.dir_plot
        plots.plot_rate_vs_far(
            c["far"], c["mean"], c["std"], work / name,
            f"DIR (rank {cfg.rank})", f"Open-set identification, rank {cfg.rank}",
            mark=cfg.osi_far,
        )  # fmt: skip
        written.append(name)
    return written


# --------------------------------------------------------------------------- several sets

SETS = "sets.json"


def _set_labels(embeddings: list[Path]) -> list[str]:
    """A name per embeddings input: the .bin set it was embedded from, else its folder."""
    names = []
    for e in embeddings:
        name = Path(e).resolve().name
        if Path(e).is_dir():
            try:
                name = str(read_manifest(e).extra.get("bin_set") or name)
            except ArtifactError:
                pass
        names.append(name)
    if len(set(names)) == len(names):
        return names
    return [f"{i + 1}:{n}" for i, n in enumerate(names)]


def run_verify_sets(
    embeddings: list[Path], out: Path, cfg: VerifyConfig, **options: Any
) -> dict[str, Any]:
    """Several embeddings under one protocol that takes many (``bin``): one verify
    artifact each in ``out/<set>/``, and ``out/sets.json`` with one row per set (the
    shape ``compare_table`` prints). ``options``: those of :func:`run_verify`."""
    labels = _set_labels(embeddings)
    runs = []
    for label, emb in zip(labels, embeddings, strict=True):
        _, report, reused = run_verify(emb, out / label, cfg, **options)
        runs.append(
            {
                "label": label,
                "path": str((out / label).resolve()),
                "embeddings": str(Path(emb).resolve()),
                "reused": reused,
                "protocol": report["protocol"],
                "metric": report["metric"],
                "comparable": report["comparable"],
                "comparability": report["comparability"],
                "summary": report["summary"],
            }
        )
    doc = clean_json(
        {
            "schema": REPORT_SCHEMA,
            "kind": "sets",
            "protocols": [cfg.protocol],
            "same_protocol": True,
            "runs": runs,
        }
    )
    atomic_write_json(out / SETS, doc)
    return doc


# --------------------------------------------------------------------------- compare


def run_compare(
    reports: list[Path], out: Path, *, force: bool = False
) -> tuple[Manifest, dict[str, Any], bool]:
    """Overlay several verify runs' ROC curves in one plot and one table."""
    if not reports:
        raise UsageError("--compare needs at least one report directory", "pass REPORT_DIR...")
    runs = []
    for r in reports:
        m = read_manifest(r, stage="verify")
        if m.extra.get("kind") == "compare":
            raise ArtifactError(
                f"{r} is a comparison, not a verify report", "pass 'facecl verify' outputs"
            )
        rep = json.loads((Path(r) / REPORT).read_text())
        with np.load(Path(r) / ROC) as z:
            roc = {k: z[k] for k in z.files}
        runs.append((Path(r), rep, roc))
    labels = _labels([p for p, _, _ in runs])
    inputs = [input_ref(p) for p, _, _ in runs]
    config = {"compare": True, "labels": labels}
    so = StageOutput(out, "verify", config, inputs, force=force, resume=False)
    if so.up_to_date:
        assert so.existing is not None  # up to date = a complete manifest was read
        return so.existing, json.loads((so.path / COMPARE).read_text()), True
    protocols = sorted({rep["protocol"] for _, rep, _ in runs})
    table = [
        {
            "label": lab,
            "path": str(p.resolve()),
            "protocol": rep["protocol"],
            "metric": rep["metric"],
            "pca_dim": rep["pca_dim"],
            "comparable": rep["comparable"],
            "summary": rep["summary"],
        }
        for lab, (p, rep, _) in zip(labels, runs, strict=True)
    ]
    doc = clean_json(
        {
            "schema": REPORT_SCHEMA,
            "kind": "compare",
            "protocols": protocols,
            "same_protocol": len(protocols) == 1,
            "runs": table,
        }
    )
    work = so.begin()
    curves = [(lab, roc["far"], roc["tar"]) for lab, (_, _, roc) in zip(labels, runs, strict=True)]
    title = "ROC: " + ", ".join(protocols)
    ylabel = "DIR" if protocols == ["identify"] else "TAR / VR"
    plots.plot_roc(curves, work / "roc_compare.png", title, ylabel)
    plots.plot_det(curves, work / "det_compare.png", "DET: " + ", ".join(protocols))
    atomic_write_json(work / COMPARE, doc)
    files = {
        rel: sha256_file(work / rel) for rel in (COMPARE, "roc_compare.png", "det_compare.png")
    }
    manifest = so.commit(
        {"processed": len(runs), "written": len(files), "skipped": {}},
        {"kind": "compare", "files": files},
    )
    return manifest, doc, False


def _labels(paths: list[Path]) -> list[str]:
    names = [p.resolve().name for p in paths]
    if len(set(names)) == len(names):
        return names
    return [f"{i + 1}:{n}" for i, n in enumerate(names)]


# --------------------------------------------------------------------------- display


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return "-" if v is None else str(v)


def summary_table(report: dict[str, Any]):
    """A rich Table of a report's headline numbers."""
    from rich.table import Table

    pca = f", PCA {report['pca_dim']}" if report.get("pca_dim") else ""
    t = Table(title=f"facecl verify: {report['protocol']} ({report['metric']}{pca})")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in report["summary"].items():
        t.add_row(k, _fmt(v))
    miss = report.get("missing", {})
    if miss.get("n_pairs_dropped") is not None:
        t.add_row("pairs dropped (missing embeddings)", str(miss["n_pairs_dropped"]))
    if miss.get("n_images_missing") is not None:
        t.add_row("images missing", str(miss["n_images_missing"]))
    t.caption = report["comparability"]
    return t


def compare_table(doc: dict[str, Any], title: str = "facecl verify --compare"):
    """Metrics as rows, runs as columns."""
    from rich.table import Table

    t = Table(title=f"{title}: " + ", ".join(doc["protocols"]))
    t.add_column("metric")
    for run in doc["runs"]:
        t.add_column(run["label"], justify="right")
    keys: list[str] = []
    for run in doc["runs"]:
        keys += [k for k in run["summary"] if k not in keys]
    for k in keys:
        t.add_row(k, *(_fmt(run["summary"].get(k)) for run in doc["runs"]))
    t.add_row("protocol", *(r["protocol"] for r in doc["runs"]))
    t.add_row("comparable", *(_fmt(r["comparable"]) for r in doc["runs"]))
    if not doc["same_protocol"]:
        t.caption = "runs use different protocols: their curves are not directly comparable"
    return t
