"""The monitor step: one window of served traffic against the champion's reference profile.

Judged, in one pass over the window's prediction logs (bounded memory: histograms are
accumulated chunk by chunk; only labelled (score, label) pairs are kept):
- data drift per feature and prediction drift of the score (``drift.py`` states the
  rule), with the server's flags counted;
- decay: the metric on the labelled rows, with the gate's bootstrap interval; decay when
  even the interval's favourable bound is worse than the reference by more than the
  tolerance (higher-is-better: upper bound < reference - tolerance);
- staleness: a champion version older than ``monitoring.max_age_days`` at the window's end.
Status precedence when several fire: decay > drift > stale. Every window is appended to
the model's history (a ``monitor`` event) with its report and its figures in compact
form; the report draws the figures of the last ``HISTORY_WINDOWS`` windows over time.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from mlops_pack.errors import BadInputError
from mlops_pack.feed_layout import window
from mlops_pack.metric_catalog import metric_info
from mlops_pack.records import write_json
from mlops_pack.registry import CHAMPION, TAG
from mlops_pack.spec import ModelSpec
from mlops_pack.steps import drift, monitor_feed, profile
from mlops_pack.steps.context import StepContext

RECORD = "monitor.json"
REPORT = "report.html"
METRICS = "metrics.prom"
PRECEDENCE = ("decay", "drift", "stale")
HISTORY_WINDOWS = 48  # windows drawn over time in the report, this one included
TOP_FEATURES = 20  # features whose PSI a window's event keeps, largest first


def load_reference(ctx: StepContext, champion_version: Any, workdir: Path) -> dict[str, Any]:
    """The champion's reference profile, checked against the sha256 on the version."""
    import json

    from mlops_pack.hashing import sha256_file

    expected = champion_version.tags.get(f"{TAG}reference_profile_sha256")
    if not expected or not champion_version.run_id:
        raise BadInputError(
            f"model {ctx.spec.name}: champion v{champion_version.version} has no reference "
            "profile (trained before profiles were recorded); retrain it to monitor it",
            {"rule": "reference_profile"},
        )
    run = ctx.registry.client.get_run(champion_version.run_id)
    path = ctx.registry.download(f"{run.info.artifact_uri}/{profile.ARTIFACT}", workdir)
    if sha256_file(path) != expected:
        raise BadInputError(
            f"model {ctx.spec.name}: the reference profile of v{champion_version.version} does "
            "not match the sha256 recorded at training; it was modified",
            {"rule": "reference_profile"},
        )
    return json.loads(path.read_text(encoding="utf-8"))


class Accumulator:
    """Window counts in the reference's bins, filled chunk by chunk."""

    def __init__(self, reference: dict[str, Any]) -> None:
        self.binnings = {
            name: profile.Binning.from_dict(entry) for name, entry in reference["features"].items()
        }
        self.counts = {name: np.zeros(b.size, dtype=np.int64) for name, b in self.binnings.items()}
        self.score_binning = profile.Binning.from_dict(reference["scores"])
        self.score_counts = np.zeros(self.score_binning.size, dtype=np.int64)
        self.score_sum = 0.0
        self.score_rows = 0
        self.positives = 0
        self.threshold = reference["scores"].get("threshold")
        self.labelled: list[tuple[float, float]] = []
        self.flags: dict[str, int] = {}
        self.rows = 0
        self.requests = 0

    def add(self, chunk: monitor_feed.Chunk) -> None:
        for name, binning in self.binnings.items():
            self.counts[name] += binning.counts(chunk.inputs[name])
        scores = np.asarray(chunk.scores, dtype=np.float64)
        self.score_counts += self.score_binning.counts(scores)
        self.score_sum += float(scores.sum())
        self.score_rows += len(scores)
        if self.threshold is not None:
            self.positives += int((scores >= self.threshold).sum())
        self.labelled.extend(chunk.labelled)
        for kind, count in chunk.flags.items():
            self.flags[kind] = self.flags.get(kind, 0) + count
        self.rows += chunk.rows
        self.requests += chunk.requests


def _data_drift(spec: ModelSpec, acc: Accumulator, reference: dict[str, Any]) -> dict[str, Any]:
    rule = spec.monitoring_policy().drift
    distances = {
        name: drift.distance(np.asarray(entry["counts"]), acc.counts[name])
        for name, entry in reference["features"].items()
    }
    judged = drift.judge(distances, rule.psi_threshold, rule.alpha)
    for name, entry in judged.items():
        ref_counts = np.asarray(reference["features"][name]["counts"])
        entry.update(
            bins=acc.binnings[name].labels(),
            reference_share=_shares(ref_counts),
            current_share=_shares(acc.counts[name]),
            missing_rate=_share(acc.counts[name][-1], acc.counts[name].sum()),
            reference_missing_rate=reference["features"][name]["missing_rate"],
        )
    return judged


def _prediction_drift(
    spec: ModelSpec, acc: Accumulator, reference: dict[str, Any]
) -> dict[str, Any]:
    rule = spec.monitoring_policy().drift
    ref_counts = np.asarray(reference["scores"]["counts"])
    judged = drift.judge(
        {"score": drift.distance(ref_counts, acc.score_counts)}, rule.psi_threshold, rule.alpha
    )["score"]
    judged.update(
        bins=acc.score_binning.labels(),
        reference_share=_shares(ref_counts),
        current_share=_shares(acc.score_counts),
        mean=_share(acc.score_sum, acc.score_rows),
        reference_mean=reference["scores"]["mean"],
    )
    if acc.threshold is not None:
        judged["positive_rate"] = _share(acc.positives, acc.score_rows)
        judged["reference_positive_rate"] = reference["scores"]["positive_rate"]
    return judged


def _performance(
    spec: ModelSpec, acc: Accumulator, reference: dict[str, Any]
) -> dict[str, Any] | None:
    if len(acc.labelled) < spec.monitoring_policy().min_labelled_rows:
        return None
    metric = spec.monitoring_policy().decay_metric or spec.gate.primary.metric
    pairs = np.asarray(acc.labelled, dtype=np.float64)
    current = profile.interval(spec, [metric], pairs[:, 1], pairs[:, 0])[metric]
    ref = reference["holdout_metrics"][metric]
    tolerance = spec.monitoring_policy().decay_tolerance
    higher = metric_info(metric, spec.task).higher_is_better
    decayed = None
    if current["ci_low"] is not None and ref["value"] is not None:
        decayed = (
            current["ci_high"] < ref["value"] - tolerance
            if higher
            else current["ci_low"] > ref["value"] + tolerance
        )
    return {
        "metric": metric,
        "value": current["value"],
        "ci_low": current["ci_low"],
        "ci_high": current["ci_high"],
        "confidence": current["confidence"],
        "rows": len(acc.labelled),
        "reference": ref["value"],
        "reference_ci_low": ref["ci_low"],
        "reference_ci_high": ref["ci_high"],
        "tolerance": tolerance,
        "higher_is_better": higher,
        "decayed": bool(decayed),
    }


def _shares(counts: np.ndarray) -> list[float]:
    total = counts.sum()
    return [round(float(c) / total, 6) if total else 0.0 for c in counts]


def _share(part: float, total: float) -> float | None:
    return round(float(part) / total, 6) if total else None


def _champion_age_days(ctx: StepContext, version: str, end: datetime) -> float:
    created = ctx.registry.client.get_model_version(ctx.spec.name, version).creation_timestamp
    return (end.timestamp() * 1000 - created) / 86_400_000


def _alarms(
    spec: ModelSpec,
    features: dict[str, Any],
    prediction: dict[str, Any] | None,
    performance: dict[str, Any] | None,
    age_days: float,
) -> list[dict[str, Any]]:
    alarms = []
    drifted = {name: f for name, f in features.items() if f["drifted"]}
    if drifted:
        worst = max(drifted, key=lambda n: drifted[n]["distance"])
        alarms.append(
            {
                "kind": "data_drift",
                "summary": f"{len(drifted)} of {len(features)} features drifted; worst "
                f"{worst} PSI {drifted[worst]['distance']:.3f} >= "
                f"{drifted[worst]['threshold']} (Holm p {drifted[worst]['p_value']:.2g})",
                "features": sorted(drifted),
                "worst": worst,
                "psi": drifted[worst]["distance"],
            }
        )
    if prediction is not None and prediction["drifted"]:
        alarms.append(
            {
                "kind": "prediction_drift",
                "summary": f"score PSI {prediction['distance']:.3f} >= "
                f"{prediction['threshold']}; mean {prediction['mean']:.4f} vs reference "
                f"{prediction['reference_mean']:.4f}",
                "psi": prediction["distance"],
                "mean": prediction["mean"],
                "reference_mean": prediction["reference_mean"],
            }
        )
    if performance is not None and performance["decayed"]:
        bound = "upper" if performance["higher_is_better"] else "lower"
        figure = performance["ci_high" if performance["higher_is_better"] else "ci_low"]
        alarms.append(
            {
                "kind": "decay",
                "summary": f"{performance['metric']} {performance['value']:.4f} on "
                f"{performance['rows']} labelled rows, CI {bound} bound {figure:.4f} worse "
                f"than reference {performance['reference']:.4f} by more than "
                f"{performance['tolerance']}",
                **{k: performance[k] for k in ("metric", "value", "ci_low", "ci_high")},
                "reference": performance["reference"],
                "tolerance": performance["tolerance"],
            }
        )
    max_age = spec.monitoring_policy().max_age_days
    if max_age is not None and age_days > max_age:
        alarms.append(
            {
                "kind": "stale",
                "summary": f"champion is {age_days:.1f} days old (max {max_age:g})",
                "age_days": round(age_days, 3),
                "max_age_days": max_age,
            }
        )
    return alarms


def _status(alarms: list[dict[str, Any]], enough_rows: bool) -> str:
    kinds = {a["kind"] for a in alarms}
    fired = {
        "decay": "decay" in kinds,
        "drift": bool(kinds & {"data_drift", "prediction_drift"}),
        "stale": "stale" in kinds,
    }
    for status in PRECEDENCE:
        if fired[status]:
            return status
    return "healthy" if enough_rows else "insufficient_data"


def assess(
    spec: ModelSpec, acc: Accumulator, reference: dict[str, Any], age_days: float
) -> dict[str, Any]:
    """The window's verdict from its accumulated counts: every figure, the alarms, the status."""
    enough = acc.rows >= spec.monitoring_policy().min_rows
    features = _data_drift(spec, acc, reference) if enough else {}
    prediction = (
        _prediction_drift(spec, acc, reference)
        if acc.score_rows >= spec.monitoring_policy().min_rows
        else None
    )
    performance = _performance(spec, acc, reference)
    alarms = _alarms(spec, features, prediction, performance, age_days)
    return {
        "status": _status(alarms, enough),
        "alarms": alarms,
        "features": features,
        "prediction": prediction,
        "performance": performance,
    }


def monitor(
    ctx: StepContext,
    log_dir: Path | None = None,
    labels_dir: Path | None = None,
    end: datetime | None = None,
    hours: float | None = None,
) -> dict[str, Any]:
    started = time.perf_counter()
    spec, settings = ctx.spec, ctx.registry.settings
    log_dir = log_dir or settings.prediction_log_dir(spec.name, spec.monitoring_policy().log_dir)
    labels_dir = labels_dir or settings.labels_dir(spec.name, spec.monitoring_policy().labels_dir)
    start, end = window(end, hours or spec.monitoring_policy().window_hours)
    champion = ctx.registry.alias(spec.name, CHAMPION)
    if champion is None:
        raise BadInputError(
            f"model {spec.name}: no champion to monitor; promote a version first",
            {"rule": "champion"},
        )
    reference = load_reference(ctx, champion, ctx.out_dir / "inputs")
    skipped = monitor_feed.Skipped()
    labels = monitor_feed.read_labels(spec, labels_dir, start.date(), skipped)
    acc = Accumulator(reference)
    for chunk in monitor_feed.read_window(
        spec, log_dir, start, end, champion.version, labels, skipped
    ):
        acc.add(chunk)
    age_days = _champion_age_days(ctx, champion.version, end)
    verdict = assess(spec, acc, reference, age_days)
    status, alarms = verdict["status"], verdict["alarms"]
    features, prediction, performance = (
        verdict["features"],
        verdict["prediction"],
        verdict["performance"],
    )
    record = {
        "schema": "mlops_pack.monitor/1",
        "status": status,
        "alarms": alarms,
        "window": {
            "start": start.isoformat(),
            "end": end.isoformat(),
            "rows": acc.rows,
            "labelled_rows": len(acc.labelled),
            "requests": acc.requests,
            "champion_rows": acc.score_rows,
        },
        "model": spec.name,
        "champion_version": champion.version,
        "champion_age_days": round(age_days, 3),
        "reference": {
            "version": champion.version,
            "sha256": champion.tags.get(f"{TAG}reference_profile_sha256"),
            "training_rows": reference["training_rows"],
            "holdout_metrics": reference["holdout_metrics"],
        },
        "rule": {
            "psi_threshold": spec.monitoring_policy().drift.psi_threshold,
            "alpha": spec.monitoring_policy().drift.alpha,
            "correction": "holm",
            "min_rows": spec.monitoring_policy().min_rows,
            "min_labelled_rows": spec.monitoring_policy().min_labelled_rows,
            "max_age_days": spec.monitoring_policy().max_age_days,
        },
        "features": features,
        "prediction": prediction,
        "flags": acc.flags,
        "performance": performance,
        "skipped": skipped.entries,
        "skipped_total": skipped.total,
        "labels": {"files": labels.files, "records": len(labels)},
        "log_dir": str(log_dir),
        "labels_dir": str(labels_dir),
        "spec_sha256": spec.sha256(),
        "seconds": round(time.perf_counter() - started, 3),
    }
    history = previous_windows(ctx)
    _write_outputs(ctx, record, history)
    record["event_id"] = ctx.registry.append_event(
        spec.name,
        "monitor",
        {
            "status": status,
            "alarms": ",".join(a["kind"] for a in alarms) or None,
            "summary": "; ".join(a["summary"] for a in alarms)[:4000] or None,
            "window_start": start.isoformat(),
            "window_end": end.isoformat(),
            "champion_version": champion.version,
            "rows": acc.rows,
            "labelled_rows": len(acc.labelled),
            "figures": json.dumps(figures(record), separators=(",", ":")),
        },
        files={"report": ctx.out_dir / REPORT},
    )
    write_json(ctx.out_dir / RECORD, record)
    return record


def figures(record: dict[str, Any]) -> dict[str, Any]:
    """What the report's charts over time need of one window, small enough for a tag."""
    ranked = sorted(record["features"].items(), key=lambda item: -item[1]["distance"])
    prediction, performance = record["prediction"], record["performance"]
    out: dict[str, Any] = {
        "psi": {name: round(f["distance"], 4) for name, f in ranked[:TOP_FEATURES]},
        "drifted": [name for name, f in ranked if f["drifted"]][:TOP_FEATURES],
        "psi_threshold": record["rule"]["psi_threshold"],
        "score_psi": round(prediction["distance"], 4) if prediction else None,
        "score_drifted": bool(prediction and prediction["drifted"]),
        "performance": None,
    }
    if performance is not None and performance["value"] is not None:
        out["performance"] = {
            "metric": performance["metric"],
            "higher_is_better": performance["higher_is_better"],
            "decayed": performance["decayed"],
            "tolerance": performance["tolerance"],
            **{
                k: None if performance[k] is None else round(performance[k], 5)
                for k in ("value", "ci_low", "ci_high", "reference")
            },
        }
    return out


def previous_windows(ctx: StepContext) -> list[dict[str, Any]]:
    """The figures of the model's previous monitor windows (``HISTORY_WINDOWS`` - 1 of
    them, so the report draws ``HISTORY_WINDOWS`` with this one), oldest first.

    Events without figures (recorded before figures were kept) or with unreadable ones are
    left out: the charts are a view, never a reason for the monitor to fail."""
    windows = []
    for event in ctx.registry.history(ctx.spec.name, "monitor", newest=HISTORY_WINDOWS - 1):
        try:
            figures = json.loads(event.get("figures") or "null")
        except ValueError:
            continue
        if isinstance(figures, dict) and event.get("window_end"):
            windows.append({"end": event["window_end"], "status": event.get("status"), **figures})
    return windows


def _write_outputs(ctx: StepContext, record: dict[str, Any], history: list[dict[str, Any]]) -> None:
    from mlops_pack.steps.monitor_report import render, write_metrics

    write_metrics(ctx.out_dir / METRICS, record)
    current = {"end": record["window"]["end"], "status": record["status"], **figures(record)}
    text = render(record, [*history, current])
    tmp = ctx.out_dir / f".{REPORT}.tmp"
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(ctx.out_dir / REPORT)
