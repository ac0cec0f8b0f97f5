"""Result and decision records: what steps write as JSON and operators return as XCom.

Each record carries a ``schema`` tag with a version so readers can refuse what they do
not understand; ``record_schemas()`` publishes their JSON schemas.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelScore(_Record):
    """One model scored on the holdout."""

    version: str
    artifact_sha256: str
    holdout_sha256: str
    metrics: dict[str, float | None]
    size_bytes: int
    latency_ms_p50: float
    latency_ms_p95: float
    batch_rows_per_s: float


class MetricDelta(_Record):
    """Challenger minus champion, signed so that positive is always an improvement."""

    metric: str
    higher_is_better: bool
    improvement: float | None
    # Sorted bootstrap improvements on the same resampled rows for both models; kept whole
    # so a run may change the confidence level without rescoring.
    bootstrap: list[float] = Field(default_factory=list)


class SliceScore(_Record):
    column: str
    value: str
    rows: int
    metric: str
    champion: float | None
    challenger: float | None


class HoldoutInfo(_Record):
    """Where the scored rows came from: the strategy, the source batch, their time span."""

    strategy: str
    rows: int
    source_data_sha256: str | None = None
    time_range: list[str] | None = None


class BacktestScore(_Record):
    """Both models on an older holdout (the backtest guardrail's evidence)."""

    holdout_sha256: str
    rows: int
    source: str
    metric: str
    champion: float | None
    challenger: float | None


class EvaluationRecord(_Record):
    schema_: Literal["mlops_pack.evaluation/1"] = Field("mlops_pack.evaluation/1", alias="schema")
    model: str
    holdout_sha256: str
    holdout_rows: int
    holdout: HoldoutInfo | None = None
    spec_sha256: str
    data_sha256: str | None = None
    champion: ModelScore | None
    challenger: ModelScore
    deltas: list[MetricDelta] = Field(default_factory=list)
    slices: list[SliceScore] = Field(default_factory=list)
    backtest: BacktestScore | None = None
    # Curve points for the comparison report (ROC, precision-recall, calibration; or a
    # predicted/actual sample for regression), per model: see steps/curves.py.
    curves: dict[str, Any] | None = None
    bootstrap_resamples: int = 0
    bootstrap_seed: int = 0
    seconds: float = 0.0

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Check(_Record):
    name: str
    kind: Literal[
        "holdout", "floor", "budget", "first_run", "primary", "guardrail", "slice", "backtest"
    ]
    metric: str | None = None
    value: float | None = None
    threshold: float | None = None
    comparator: str | None = None
    # What ``value`` is, for people reading a table: "delta, CI lower 95%", "rows", ...
    value_label: str = ""
    verdict: Literal["pass", "fail", "skip"]
    detail: str = ""


class DecisionRecord(_Record):
    schema_: Literal["mlops_pack.decision/1"] = Field("mlops_pack.decision/1", alias="schema")
    decision_id: str
    model: str
    verdict: Literal["promote", "reject"]
    summary: str
    checks: list[Check]
    champion_version: str | None
    challenger_version: str
    holdout_sha256: str
    holdout: HoldoutInfo | None = None
    spec_sha256: str
    data_sha256: str | None
    dag_run_id: str | None = None
    approval_required: bool = False
    approver: str | None = None
    policy: dict[str, Any]
    reason: str = ""
    created_at: str

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _finite(value: Any) -> Any:
    """JSON has no NaN: write non-finite floats as null so every reader can parse it."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def to_json(record: BaseModel | dict[str, Any]) -> str:
    data = (
        record.model_dump(mode="json", by_alias=True) if isinstance(record, BaseModel) else record
    )
    return json.dumps(_finite(data), indent=2, sort_keys=True, allow_nan=False)


def write_json(path: str | os.PathLike[str], record: BaseModel | dict[str, Any]) -> Path:
    """Write atomically: a reader never sees a half-written result file."""
    return write_text_atomic(path, to_json(record))


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def record_schemas() -> dict[str, dict[str, Any]]:
    return {
        "evaluation": EvaluationRecord.model_json_schema(by_alias=True),
        "decision": DecisionRecord.model_json_schema(by_alias=True),
    }
