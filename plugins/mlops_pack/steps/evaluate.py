"""Evaluation: champion and challenger scored on the pinned holdout in one pass.

The holdout is read once; both models predict on the same rows; the paired bootstrap
draws each resample once and applies it to both models' predictions.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_pack.errors import BadInputError, HoldoutMismatchError
from mlops_pack.metric_catalog import metric_info
from mlops_pack.model_io import MODEL_FILE, load_model, predict
from mlops_pack.percentile import percentile
from mlops_pack.records import (
    BacktestScore,
    EvaluationRecord,
    HoldoutInfo,
    MetricDelta,
    ModelScore,
    SliceScore,
    write_json,
)
from mlops_pack.registry import CHAMPION, TAG, Version
from mlops_pack.spec import ModelSpec
from mlops_pack.steps import holdout as holdouts
from mlops_pack.steps import metrics
from mlops_pack.steps.context import StepContext
from mlops_pack.steps.curves import curves

RESULT = "evaluation.json"
SMOKE_SAMPLE = "smoke_sample.json"
LATENCY_CALLS = 50


def fetch_model(ctx: StepContext, version: Version, workdir: Path) -> tuple[Any, int]:
    """Download a version's model and load it safely; returns (model, size in bytes)."""
    local = ctx.registry.download(f"{version.source}/{MODEL_FILE}", workdir / f"v{version.version}")
    return load_model(local, version.tags.get(f"{TAG}artifact_sha256")), local.stat().st_size


def _latency(spec: ModelSpec, model: Any, frame: pd.DataFrame) -> tuple[float, float]:
    """Single-row predict latency, on one thread as a model server would call it.

    One thread also keeps OpenMP from spin-waiting on a busy machine, which otherwise
    inflates single-row timings by orders of magnitude.
    """
    from threadpoolctl import threadpool_limits

    rows = [frame.iloc[[i % len(frame)]] for i in range(LATENCY_CALLS + 5)]
    timings = []
    with threadpool_limits(limits=1):
        for index, row in enumerate(rows):
            started = time.perf_counter()
            predict(spec, model, row)
            if index >= 5:  # the first calls warm caches
                timings.append((time.perf_counter() - started) * 1000)
    return percentile(timings, 50), percentile(timings, 95)


def _score(
    spec: ModelSpec,
    version: Version,
    model: Any,
    size: int,
    frame: pd.DataFrame,
    y: np.ndarray,
    pin_sha: str,
) -> tuple[ModelScore, np.ndarray]:
    started = time.perf_counter()
    prediction = predict(spec, model, frame)
    batch_seconds = time.perf_counter() - started
    p50, p95 = _latency(spec, model, frame)
    values = {name: metrics.score(name, y, prediction) for name in spec.metrics}
    return ModelScore(
        version=version.version,
        artifact_sha256=version.tags.get(f"{TAG}artifact_sha256", ""),
        holdout_sha256=pin_sha,
        metrics=values,
        size_bytes=size,
        latency_ms_p50=p50,
        latency_ms_p95=p95,
        batch_rows_per_s=len(frame) / max(batch_seconds, 1e-9),
    ), prediction


def labels(spec: ModelSpec, frame: pd.DataFrame) -> np.ndarray:
    if spec.task == "classification":
        return (frame[spec.target] == spec.positive_class).to_numpy(dtype=float)
    return frame[spec.target].to_numpy(dtype=float)


def _slices(
    spec: ModelSpec,
    frame: pd.DataFrame,
    y: np.ndarray,
    champion: np.ndarray | None,
    challenger: np.ndarray,
) -> list[SliceScore]:
    metric = spec.gate.slices.metric or spec.gate.primary.metric
    out = []
    for column in spec.gate.slices.columns:
        values = frame[column].astype(str).to_numpy()
        for value in sorted(set(values)):
            mask = values == value
            out.append(
                SliceScore(
                    column=column,
                    value=value,
                    rows=int(mask.sum()),
                    metric=metric,
                    champion=None
                    if champion is None
                    else _finite(metrics.score(metric, y[mask], champion[mask])),
                    challenger=_finite(metrics.score(metric, y[mask], challenger[mask])),
                )
            )
    return out


def _write_smoke_sample(
    spec: ModelSpec, frame: pd.DataFrame, scores: np.ndarray, version: str, path: Path
) -> None:
    """The first holdout rows and the challenger's offline scores, for the deploy smoke test.

    Rows are written in the request format of the model server (features only, JSON
    values, null for missing), so the served scores can be compared with these.
    """
    count = min(spec.serving.smoke.rows, len(frame))
    names = [c.name for c in spec.features()]
    head = frame[names].head(count).astype(object)
    rows = head.where(head.notna(), None).to_dict(orient="records")
    write_json(
        path,
        {
            "model": spec.name,
            "version": version,
            "rows": rows,
            "predictions": [float(v) for v in scores[:count]],
        },
    )


def _finite(value: float) -> float | None:
    return value if np.isfinite(value) else None


def _refuse_in_sample_champion(model: str, champion: Version, pin: holdouts.HoldoutPin) -> None:
    """An out-of-time holdout carved from a batch the champion trained on is not out of
    sample for the champion (unless the champion held out these very rows)."""
    if pin.source is None:
        return
    trained_on = champion.tags.get(f"{TAG}window_sha256s") or champion.tags.get(
        f"{TAG}data_sha256", ""
    )
    if pin.source in trained_on.split(",") and (
        champion.tags.get(f"{TAG}holdout_sha256") != pin.sha256
    ):
        raise HoldoutMismatchError(
            f"model {model}: the champion v{champion.version} trained on batch "
            f"{pin.source[:12]}, the batch this holdout was carved from, so its score on it "
            "would be in-sample; retrain on a batch the champion has not seen"
        )


def _backtest(
    ctx: StepContext, challenger: Version, champion_model: Any, challenger_model: Any
) -> BacktestScore | None:
    """Both models on the older holdout the challenger's training kept out (train chose it)."""
    rule = ctx.spec.gate.backtest
    if not rule.enabled:
        return None
    version = challenger.tags.get(f"{TAG}backtest_version")
    tags = ctx.registry.version(ctx.spec.name, version).tags if version else None
    reference = holdouts.backtest_reference(ctx, tags)
    if reference is None or reference.sha256 != challenger.tags.get(f"{TAG}backtest_sha256"):
        return None  # not the rows train kept out: no fair backtest
    metric = rule.metric or ctx.spec.gate.primary.metric
    y = labels(ctx.spec, reference.frame)
    old, new = (
        _finite(metrics.score(metric, y, predict(ctx.spec, model, reference.frame)))
        for model in (champion_model, challenger_model)
    )
    return BacktestScore(
        holdout_sha256=reference.sha256,
        rows=len(reference.frame),
        source=f"{reference.source} (v{version})" if version else reference.source,
        metric=metric,
        champion=old,
        challenger=new,
    )


def _deltas(
    spec: ModelSpec,
    y: np.ndarray,
    old_score: ModelScore,
    old_pred: np.ndarray,
    new_score: ModelScore,
    new_pred: np.ndarray,
) -> list[MetricDelta]:
    """Each metric's improvement, with its paired bootstrap distribution when enabled."""
    unc = spec.gate.uncertainty
    direction = {m: metric_info(m).higher_is_better for m in spec.metrics}
    samples = (
        metrics.paired_bootstrap(
            spec.metrics, y, old_pred, new_pred, unc.resamples, unc.seed, direction
        )
        if unc.enabled
        else {}
    )
    deltas = []
    for name in spec.metrics:
        new, old = new_score.metrics[name], old_score.metrics[name]
        diff = (new - old) if direction[name] else (old - new)
        boot = samples.get(name)
        deltas.append(
            MetricDelta(
                metric=name,
                higher_is_better=direction[name],
                improvement=_finite(diff),
                bootstrap=[]
                if boot is None
                else [float(v) for v in boot[np.isfinite(boot)].round(8)],
            )
        )
    return deltas


def evaluate(ctx: StepContext, challenger_version: str) -> dict[str, Any]:
    started = time.perf_counter()
    spec, registry = ctx.spec, ctx.registry
    challenger = registry.version(spec.name, challenger_version)
    pin = holdouts.for_version(ctx, challenger.tags)
    if pin is None:
        raise BadInputError(f"model {spec.name}: no pinned holdout; train a model first")
    if challenger.tags.get(f"{TAG}holdout_sha256") != pin.sha256:
        raise BadInputError(
            f"model {spec.name} v{challenger_version} was trained against holdout "
            f"{challenger.tags.get(f'{TAG}holdout_sha256', '?')[:12]}, but the pinned holdout is "
            f"{pin.sha256[:12]}; its training rows may overlap the holdout: retrain it"
        )
    champion = registry.alias(spec.name, CHAMPION)
    if champion is not None and champion.version == challenger.version:
        raise BadInputError(f"model {spec.name}: v{challenger_version} is already the champion")
    if champion is not None:
        _refuse_in_sample_champion(spec.name, champion, pin)
    frame = holdouts.load(ctx, pin)
    y = labels(spec, frame)
    with tempfile.TemporaryDirectory() as tmp:
        new_model, new_size = fetch_model(ctx, challenger, Path(tmp))
        new_score, new_pred = _score(spec, challenger, new_model, new_size, frame, y, pin.sha256)
        old_score, old_pred, backtest = None, None, None
        if champion is not None:
            old_model, old_size = fetch_model(ctx, champion, Path(tmp))
            old_score, old_pred = _score(spec, champion, old_model, old_size, frame, y, pin.sha256)
            backtest = _backtest(ctx, challenger, old_model, new_model)
    deltas = [] if old_pred is None else _deltas(spec, y, old_score, old_pred, new_score, new_pred)
    unc = spec.gate.uncertainty
    record = EvaluationRecord(
        model=spec.name,
        holdout_sha256=pin.sha256,
        holdout_rows=len(frame),
        holdout=HoldoutInfo(
            strategy=pin.strategy,
            rows=len(frame),
            source_data_sha256=pin.source,
            time_range=list(pin.time_range) if pin.time_range else None,
        ),
        spec_sha256=spec.sha256(),
        data_sha256=challenger.tags.get(f"{TAG}data_sha256"),
        champion=old_score,
        challenger=new_score,
        deltas=deltas,
        slices=_slices(spec, frame, y, old_pred, new_pred),
        backtest=backtest,
        curves=curves(spec, y, new_pred, old_pred, seed=unc.seed),
        bootstrap_resamples=unc.resamples if old_pred is not None and unc.enabled else 0,
        bootstrap_seed=unc.seed,
        seconds=round(time.perf_counter() - started, 3),
    )
    path = write_json(ctx.out_dir / RESULT, record)
    if spec.serving is not None:
        _write_smoke_sample(spec, frame, new_pred, challenger.version, ctx.out_dir / SMOKE_SAMPLE)
    out = record.model_dump(mode="json", by_alias=True)
    if challenger.run_id:
        # Stored under a fresh id so re-evaluations never overwrite each other; the gate
        # in another container fetches it from here.
        folder = f"evaluations/{uuid.uuid4().hex}"
        registry.client.log_artifact(challenger.run_id, str(path), folder)
        if spec.serving is not None:
            registry.client.log_artifact(challenger.run_id, str(ctx.out_dir / SMOKE_SAMPLE), folder)
        run = registry.client.get_run(challenger.run_id)
        out["evaluation_uri"] = f"{run.info.artifact_uri}/{folder}/{RESULT}"
        if spec.serving is not None:  # what deploy smoke-tests against (--smoke-sample)
            out["smoke_sample_uri"] = f"{run.info.artifact_uri}/{folder}/{SMOKE_SAMPLE}"
        scored = {
            f"holdout_{name}": value
            for name, value in new_score.metrics.items()
            if value is not None and np.isfinite(value)
        }
        registry.log_batch(challenger.run_id, metrics=scored)
    return out
