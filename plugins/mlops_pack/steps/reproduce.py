"""Reproducing a model version: retrain it from its records, compare with the registered one.

A version records everything its training read: the sha256 of every batch of its training
window (kept by retention), its holdout (by sha256), the canonical spec it was trained
with (``spec.json`` on its train run, seed included) and the library versions. This step
fetches exactly those, retrains as ``train`` did, and compares the new model's
predictions on the version's holdout, and the model's content, with the registered
model's. Today's spec file only names the model: a spec edited since must not change what
"the same training" means. The outcome is recorded on the version and in the history.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_pack.errors import BadInputError, HoldoutMismatchError, UntrustedArtifactError
from mlops_pack.hashing import sha256_bytes, sha256_file
from mlops_pack.model_io import MODEL_FILE, content_sha256, load_model, predict
from mlops_pack.records import write_json
from mlops_pack.registry import TAG, Version
from mlops_pack.spec import ModelSpec, parse_spec
from mlops_pack.steps import holdout as holdouts
from mlops_pack.steps.context import StepContext
from mlops_pack.steps.retention import DataMissingError
from mlops_pack.steps.train import (
    build_pipeline,
    library_versions,
    read_batches,
    training_rows,
    write_model,
)

RESULT = "reproduce.json"
SPEC_FILE = "spec.json"


class _Blocked(Exception):
    """Something the retrain needs is missing or altered: there is no model to compare."""

    def __init__(self, what: str, detail: str) -> None:
        super().__init__(detail)
        self.what = what


def _version(ctx: StepContext, number: str) -> Version:
    from mlflow.exceptions import MlflowException

    try:
        found = ctx.registry.version(ctx.spec.name, number)
    except MlflowException:
        raise BadInputError(
            f"model {ctx.spec.name}: --version {number}: no such version; "
            f"`mlops-pack history --spec {ctx.spec_path}` lists the versions"
        ) from None
    if not found.run_id:
        raise BadInputError(f"model {ctx.spec.name} v{number}: not registered by mlops-pack train")
    return found


def _recorded_spec(ctx: StepContext, found: Version) -> ModelSpec:
    """The spec the version was trained with, proven by the hash the version records."""
    from mlflow.exceptions import MlflowException

    where = f"{SPEC_FILE} of train run {found.run_id}"
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = ctx.registry.client.download_artifacts(found.run_id, SPEC_FILE, tmp)
            text = Path(local).read_bytes()
        except (MlflowException, OSError):
            raise _Blocked("spec", f"{where} is missing; the version cannot be retrained") from None
    recorded = found.tags.get(f"{TAG}spec_sha256")
    if sha256_bytes(text) != recorded:
        raise _Blocked(
            "spec",
            f"{where} has sha256 {sha256_bytes(text)[:12]}, the version records "
            f"{(recorded or 'none')[:12]}: the stored spec was altered",
        )
    try:
        return parse_spec(json.loads(text), where)
    except BadInputError as exc:
        raise _Blocked("spec", f"{exc} (the spec schema changed since this version)") from None


def _libraries(run_tags: dict[str, str]) -> dict[str, Any]:
    prefix = f"{TAG}version."
    recorded = {k.removeprefix(prefix): v for k, v in run_tags.items() if k.startswith(prefix)}
    running = library_versions()
    differs = {
        name: [recorded.get(name), running.get(name)]
        for name in sorted(set(recorded) | set(running))
        if recorded.get(name) != running.get(name)
    }
    return {"recorded": recorded, "running": running, "differs": differs}


def _library_detail(differs: dict[str, list[str | None]]) -> str:
    listed = ", ".join(
        f"{name} {old or 'unrecorded'} recorded, {new} running"
        for name, (old, new) in differs.items()
    )
    return f"{listed}; run reproduce where the recorded versions are installed"


def _retrain(ctx: StepContext, found: Version, record: dict[str, Any]) -> tuple[Any, Any]:
    """Fit the version's pipeline again; returns (pipeline, the version's holdout rows)."""
    spec = ctx.spec
    tags = found.tags
    window = (tags.get(f"{TAG}window_sha256s") or tags.get(f"{TAG}data_sha256", "")).split(",")
    record["data"] = {"window": window}
    try:
        frames = read_batches(ctx, window)
    except DataMissingError as exc:
        raise _Blocked("data_missing", str(exc)) from None
    pin = holdouts.recorded(tags)
    record["holdout"] = {"sha256": pin.sha256, "strategy": pin.strategy, "rows": pin.rows}
    try:
        stored = holdouts.load(ctx, pin)
    except HoldoutMismatchError as exc:
        raise _Blocked("holdout", str(exc)) from None
    newest, held = frames[0], stored
    if pin.strategy == "out_of_time":
        # Train kept the rows it carved, not the stored copy: carve again and prove the
        # two are the same rows before trusting the exclusion below.
        newest, held, span = holdouts.out_of_time(spec, newest, Path(f"batch {window[0][:12]}"))
        same = held.equals(stored) and span == pin.time_range
        record["holdout"]["recarved_identical"] = same
        if not same:
            record["differences"].append(
                {
                    "what": "holdout",
                    "detail": f"re-carving batch {window[0][:12]} gives {len(held)} rows that "
                    f"are not the {pin.rows} stored holdout rows",
                }
            )
    unseen = held
    backtest = tags.get(f"{TAG}backtest_version")
    if backtest:  # train also kept the backtest's older holdout out
        older = holdouts.load(
            ctx, holdouts.recorded(ctx.registry.version(spec.name, backtest).tags)
        )
        unseen = pd.concat([held, older], ignore_index=True)
    train_frame, _ = training_rows(spec, [newest, *frames[1:]], unseen)
    recorded_rows = record["train_rows"]["recorded"]
    record["train_rows"]["retrained"] = len(train_frame)
    if recorded_rows is not None and recorded_rows != len(train_frame):
        record["differences"].append(
            {
                "what": "training_rows",
                "detail": f"{len(train_frame)} rows now, {recorded_rows} when trained",
            }
        )
    pipeline = build_pipeline(spec)
    pipeline.fit(train_frame, train_frame[spec.target])
    return pipeline, stored


def _compare(ctx: StepContext, found: Version, pipeline: Any, holdout, record: dict) -> None:
    """Predictions on the holdout and model content, retrained against registered."""
    spec = ctx.spec
    recorded_sha = found.tags.get(f"{TAG}artifact_sha256")
    with tempfile.TemporaryDirectory() as tmp:
        local = ctx.registry.download(f"{found.source}/{MODEL_FILE}", Path(tmp) / "registered")
        try:
            registered = load_model(local, recorded_sha)
        except UntrustedArtifactError as exc:
            raise _Blocked("artifact", str(exc)) from None
        retrained = write_model(pipeline, Path(tmp) / "retrained")
        artifact = {
            "recorded_sha256": recorded_sha,
            "retrained_sha256": sha256_file(retrained),
            "recorded_content_sha256": content_sha256(local),
            "retrained_content_sha256": content_sha256(retrained),
        }
    artifact["sha256_equal"] = artifact["recorded_sha256"] == artifact["retrained_sha256"]
    artifact["content_equal"] = (
        artifact["recorded_content_sha256"] == artifact["retrained_content_sha256"]
    )
    record["artifact"] = artifact
    expected = np.asarray(predict(spec, registered, holdout), dtype=float)
    actual = np.asarray(predict(spec, pipeline, holdout), dtype=float)
    gap = float(np.max(np.abs(actual - expected))) if len(holdout) else 0.0
    differing = int(np.count_nonzero(actual != expected))
    record["predictions"] = {
        "rows": len(holdout),
        "max_abs_diff": gap,
        "rows_differing": differing,
        "identical": differing == 0,
    }
    if differing:
        record["differences"].append(
            {
                "what": "predictions",
                "detail": f"{differing} of {len(holdout)} holdout predictions differ, "
                f"max abs difference {gap:.3g}",
            }
        )
    if not artifact["content_equal"]:
        record["differences"].append(
            {
                "what": "model_content",
                "detail": f"retrained model content {artifact['retrained_content_sha256'][:12]}"
                f", registered {artifact['recorded_content_sha256'][:12]}",
            }
        )


def _record_outcome(ctx: StepContext, record: dict[str, Any]) -> None:
    """Tags on the version (its latest reproduction) and an event in the history (all)."""
    whats = ",".join(d["what"] for d in record["differences"]) or "none"
    predictions = record.get("predictions") or {}
    artifact = record.get("artifact") or {}
    fields = {
        "outcome": record["outcome"],
        "at": record["at"],
        "differs": whats,
        "max_abs_diff": str(predictions.get("max_abs_diff", "n/a")),
        "content_equal": str(artifact.get("content_equal", "n/a")).lower(),
    }
    name, version = record["model"], record["version"]
    for key, value in fields.items():
        ctx.registry.client.set_model_version_tag(name, version, f"{TAG}reproduce.{key}", value)
    record["event_id"] = ctx.registry.append_event(
        name,
        "reproduce",
        {
            "version": version,
            **fields,
            "summary": record["summary"][:1000],
            "dag_run_id": ctx.dag_run_id,
        },
    )


def reproduce(ctx: StepContext, version: str) -> dict[str, Any]:
    started = time.perf_counter()
    found = _version(ctx, str(version))
    run = ctx.registry.client.get_run(found.run_id)
    recorded_rows = run.data.metrics.get("train_rows")
    record: dict[str, Any] = {
        "schema": "mlops_pack.reproduce/1",
        "model": ctx.spec.name,
        "version": found.version,
        "run_id": found.run_id,
        "at": datetime.now(tz=UTC).isoformat(timespec="seconds"),
        "spec_sha256": found.tags.get(f"{TAG}spec_sha256"),
        "library_versions": _libraries(run.data.tags),
        "train_rows": {"recorded": int(recorded_rows) if recorded_rows is not None else None},
        "differences": [],
    }
    differs = record["library_versions"]["differs"]
    if differs:
        record["differences"].append(
            {"what": "library_versions", "detail": _library_detail(differs)}
        )
    try:
        recorded = replace(ctx, spec=_recorded_spec(ctx, found))
        pipeline, holdout = _retrain(recorded, found, record)
        _compare(recorded, found, pipeline, holdout, record)
    except _Blocked as blocked:
        record["differences"].insert(0, {"what": blocked.what, "detail": str(blocked)})
    reproduced = not record["differences"]
    record["outcome"] = "reproduced" if reproduced else "not_reproduced"
    record["reproduced"] = reproduced
    label = f"{ctx.spec.name} v{found.version}"
    if reproduced:
        record["summary"] = (
            f"{label} reproduces: {record['predictions']['rows']} holdout predictions "
            "identical, model content identical"
        )
    else:
        record["summary"] = f"{label} does not reproduce: " + "; ".join(
            f"{d['what'].replace('_', ' ')}: {d['detail']}" for d in record["differences"]
        )
    _record_outcome(ctx, record)
    record["seconds"] = round(time.perf_counter() - started, 3)
    write_json(ctx.out_dir / RESULT, record)
    return record
