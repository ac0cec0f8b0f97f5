"""Training: fit the spec's Pipeline on the data minus the holdout rows, register it.

The data must have passed validation (a ``validate`` run for the same sha256 in MLflow):
a bad dataset can never produce a model version, let alone a promotion.
"""

from __future__ import annotations

import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_pack.errors import BadInputError
from mlops_pack.hashing import sha256_file
from mlops_pack.model_io import MODEL_FILE, TRUSTED_TYPES
from mlops_pack.records import write_json
from mlops_pack.registry import CHAMPION, TAG
from mlops_pack.spec import ModelSpec
from mlops_pack.steps import holdout as holdouts
from mlops_pack.steps import retention
from mlops_pack.steps.context import StepContext
from mlops_pack.steps.dataset import read_frame
from mlops_pack.steps.estimator_check import make_estimator
from mlops_pack.steps.validated import require_validated

RESULT = "train.json"


def build_pipeline(spec: ModelSpec, source: str | None = None):
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    est = spec.estimator
    estimator = make_estimator(spec, source or f"spec {spec.name}")
    if "random_state" in estimator.get_params():
        estimator.set_params(random_state=est.seed)
    numeric = [c.name for c in spec.features() if c.type == "numeric"]
    categorical = [c.name for c in spec.features() if c.type == "categorical"]
    numeric_steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy="median"))]
    if est.numeric_preprocessing == "standard_scaler":
        numeric_steps.append(("scale", StandardScaler()))
    encoder = (
        OneHotEncoder(handle_unknown="ignore")
        if est.categorical_preprocessing == "one_hot"
        else OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)
    )
    categorical_steps = [
        ("impute", SimpleImputer(strategy="constant", fill_value="__missing__")),
        ("encode", encoder),
    ]
    transformers = []
    if numeric:
        transformers.append(("numeric", Pipeline(numeric_steps), numeric))
    if categorical:
        transformers.append(("categorical", Pipeline(categorical_steps), categorical))
    return Pipeline(
        [("prepare", ColumnTransformer(transformers, remainder="drop")), ("model", estimator)]
    )


def library_versions() -> dict[str, str]:
    """The versions a model's bytes depend on; recorded on its run, compared by reproduce."""
    import sklearn
    import skops

    return {
        "python": platform.python_version(),
        "scikit-learn": sklearn.__version__,
        "pandas": pd.__version__,
        "numpy": np.__version__,
        "skops": skops.__version__,
    }


def _requirements() -> list[str]:
    versions = library_versions()
    return [f"{name}=={versions[name]}" for name in ("scikit-learn", "pandas", "numpy", "skops")]


def read_batches(ctx: StepContext, sha256s: list[str]) -> list[pd.DataFrame]:
    """The retained batches of the training window, fetched and checked by sha256."""
    frames = []
    for sha256 in sha256s:
        with tempfile.TemporaryDirectory() as tmp:
            local = retention.fetch(ctx.registry, ctx.spec.name, sha256, Path(tmp))
            frames.append(read_frame(local, ctx.spec))
    return frames


def training_rows(
    spec: ModelSpec, frames: list[pd.DataFrame], held: pd.DataFrame
) -> tuple[pd.DataFrame, holdouts.Exclusion]:
    """The window's rows, newest batch first, without any row of the holdout."""
    combined = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    excluded = holdouts.exclusion(spec, combined, held)
    return combined.loc[~excluded.mask.to_numpy()], excluded


def write_model(pipeline: Any, model_dir: Path) -> Path:
    """Save a fitted pipeline the one way versions are stored; returns the model file."""
    import mlflow.sklearn

    mlflow.sklearn.save_model(
        pipeline,
        str(model_dir),
        serialization_format="skops",
        skops_trusted_types=list(TRUSTED_TYPES),
        # Stated, not inferred: inference starts a Python subprocess (6-10 s).
        pip_requirements=_requirements(),
    )
    return model_dir / MODEL_FILE


@dataclass(frozen=True)
class TrainingRows:
    """What a challenger trains on and what it must never see."""

    frame: pd.DataFrame
    pin: holdouts.HoldoutPin
    held: holdouts.Exclusion
    older: list[retention.Batch]
    backtest: holdouts.Reference | None
    backtest_version: str | None  # the champion whose own holdout is the backtest's
    holdout: pd.DataFrame  # the rows of ``pin`` (the reference profile scores them)


def select_rows(
    ctx: StepContext, path: Path, data_sha256: str, frame: pd.DataFrame
) -> TrainingRows:
    """The holdout (out of time, or the pin), the window's rows, minus every unseen row."""
    spec, registry = ctx.spec, ctx.registry
    if spec.holdout.pinned:
        pin = holdouts.ensure(ctx, frame)
        newest, held_frame = frame, holdouts.load(ctx, pin)
    else:
        newest, held_frame, span = holdouts.out_of_time(spec, frame, path)
        reason = f"out of time: newest rows of batch {data_sha256[:12]}"
        pin = holdouts.store(ctx, held_frame, reason, data_sha256, span)
    older = retention.window(registry, spec, data_sha256)
    # The backtest's older holdout must stay unseen by the challenger, like its own.
    champion = registry.alias(spec.name, CHAMPION)
    reference = holdouts.backtest_reference(ctx, champion.tags if champion else None)
    unseen = held_frame
    if reference is not None:
        unseen = pd.concat([held_frame, reference.frame], ignore_index=True)
    frames = [newest, *read_batches(ctx, [b.sha256 for b in older])]
    train_frame, held = training_rows(spec, frames, unseen)
    if len(train_frame) < spec.validation.min_rows:
        raise BadInputError(
            f"{path}: only {len(train_frame)} rows remain after removing holdout "
            f"rows; need validation.min_rows={spec.validation.min_rows}"
        )
    from_champion = reference is not None and champion is not None and not spec.gate.backtest.path
    return TrainingRows(
        train_frame,
        pin,
        held,
        older,
        reference,
        champion.version if from_champion else None,
        held_frame,
    )


def _backtest_tags(rows: TrainingRows) -> dict[str, str]:
    """Which older holdout the challenger never saw, for evaluate and reproduce."""
    if rows.backtest is None:
        return {}
    tags = {f"{TAG}backtest_sha256": rows.backtest.sha256}
    if rows.backtest_version:
        tags[f"{TAG}backtest_version"] = rows.backtest_version
    return tags


def _log_profile(
    ctx: StepContext, pipeline: Any, rows: TrainingRows, run_id: str, tmp: Path
) -> str:
    """The version's reference profile (what monitoring compares traffic with), stored on
    its run; returns its sha256 for the version's tags."""
    from mlops_pack.model_io import predict
    from mlops_pack.steps import profile
    from mlops_pack.steps.evaluate import labels

    spec = ctx.spec
    scores = np.asarray(predict(spec, pipeline, rows.holdout), dtype=np.float64)
    record = profile.build(spec, rows.frame, labels(spec, rows.holdout), scores)
    path = write_json(tmp / profile.ARTIFACT, record)
    ctx.registry.client.log_artifact(run_id, str(path))
    return sha256_file(path)


def train(ctx: StepContext) -> dict[str, Any]:
    started = time.perf_counter()
    spec, registry = ctx.spec, ctx.registry
    # An estimator that cannot train is refused before a holdout or a model is registered.
    make_estimator(spec, str(ctx.spec_path))
    path = ctx.data_path()
    data_sha256 = sha256_file(path)
    validation_run = require_validated(ctx, data_sha256)
    frame = read_frame(path, spec)
    rows = select_rows(ctx, path, data_sha256, frame)
    train_frame, pin, held, older = rows.frame, rows.pin, rows.held, rows.older
    # Kept before the version exists, so no version can point at data that is not stored.
    retained = retention.retain(registry, spec.name, path, data_sha256, len(frame))
    pipeline = build_pipeline(spec)
    fit_started = time.perf_counter()
    pipeline.fit(train_frame, train_frame[spec.target])
    fit_seconds = time.perf_counter() - fit_started

    registry.ensure_model(spec.name)
    experiment = registry.experiment_id(f"mlops-pack/{spec.name}")
    tags = {
        f"{TAG}step": "train",
        f"{TAG}data_sha256": data_sha256,
        f"{TAG}spec_sha256": spec.sha256(),
        f"{TAG}holdout_sha256": pin.sha256,
        f"{TAG}validation_run_id": validation_run,
    }
    if ctx.dag_run_id:
        tags[f"{TAG}dag_run_id"] = ctx.dag_run_id
    run = registry.client.create_run(experiment, run_name="train", tags=tags)
    run_id = run.info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        model_file = write_model(pipeline, model_dir)
        artifact_sha256 = sha256_file(model_file)
        size_bytes = model_file.stat().st_size
        registry.client.log_artifacts(run_id, str(model_dir), "model")
        (Path(tmp) / "spec.json").write_text(spec.canonical_json(), encoding="utf-8")
        registry.client.log_artifact(run_id, str(Path(tmp) / "spec.json"))
        profile_sha256 = _log_profile(ctx, pipeline, rows, run_id, Path(tmp))
    params = {
        "estimator": spec.estimator.class_path,
        "seed": spec.estimator.seed,
        **{f"param.{k}": v for k, v in spec.estimator.params.items()},
    }
    metrics = {
        "train_seconds": fit_seconds,
        "train_rows": len(train_frame),
        "holdout_rows": pin.rows,
        "holdout_rows_excluded": held.excluded,
        "model_bytes": size_bytes,
    }
    # One request for all of them, not one each: every request is a round trip and, on
    # a server behind authentication, a permission check.
    registry.log_batch(
        run_id,
        params=params,
        tags={f"{TAG}version.{k}": v for k, v in library_versions().items()},
        metrics={k: float(v) for k, v in metrics.items()},
    )
    registry.client.set_terminated(run_id)
    version = registry.client.create_model_version(
        spec.name,
        f"{run.info.artifact_uri}/model",
        run_id=run_id,
        tags={
            f"{TAG}artifact_sha256": artifact_sha256,
            f"{TAG}data_sha256": data_sha256,
            f"{TAG}spec_sha256": spec.sha256(),
            f"{TAG}window_sha256s": ",".join([data_sha256, *(b.sha256 for b in older)]),
            **pin.version_tags(),
            **_backtest_tags(rows),
            f"{TAG}reference_profile_sha256": profile_sha256,
        },
    )
    result = {
        "schema": "mlops_pack.train/1",
        "model": spec.name,
        "version": version.version,
        "run_id": run_id,
        "experiment_id": experiment,
        "artifact_sha256": artifact_sha256,
        "data_sha256": data_sha256,
        "spec_sha256": spec.sha256(),
        "holdout_sha256": pin.sha256,
        "train_rows": len(train_frame),
        "holdout_rows": pin.rows,
        "holdout_rows_excluded": held.excluded,
        "holdout_excluded_by": held.by,
        "holdout": pin.as_dict(),
        "window": [data_sha256, *(b.sha256 for b in older)],
        "fit_seconds": round(fit_seconds, 3),
        "retention": retained,
        "seconds": round(time.perf_counter() - started, 3),
    }
    write_json(ctx.out_dir / RESULT, result)
    return result
