"""The model spec: one YAML file per model, parsed into typed, validated objects.

Pydantic gives us typed objects, precise error locations and the published JSON schema
from one definition, so the schema editors see and the rules the code enforces cannot
drift apart. Unknown keys are errors everywhere (``extra="forbid"``): a typo such as
``margn`` must fail loudly instead of silently leaving the default in force.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlops_pack.errors import SpecError
from mlops_pack.metric_catalog import metric_info

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"

# Estimators must come from these module prefixes: the model loader only trusts types it
# has reviewed, so an estimator outside this list could be trained but never loaded again.
TRUSTED_ESTIMATOR_PREFIXES = ("sklearn.",)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSource(_Strict):
    """Where the training data comes from; a run may override ``path``."""

    path: str = Field(description="CSV or Parquet file, relative to MLOPS_PACK_DATA_DIR.")
    format: Literal["csv", "parquet"] = "csv"
    delimiter: str = Field(",", min_length=1, max_length=1)
    encoding: str = "utf-8"
    key: list[str] = Field(
        default_factory=list,
        description="Columns that identify a row; duplicates over the key are a check.",
    )


class Column(_Strict):
    """One input column with its type and role."""

    name: str = Field(min_length=1)
    type: Literal["numeric", "categorical"]
    role: Literal["feature", "id", "slice"] = Field(
        "feature",
        description="feature: used for training; id: identifies rows, never trained on; "
        "slice: used only to slice metrics.",
    )
    min: float | None = None
    max: float | None = None
    values: list[str] | None = Field(None, description="Allowed categories (categorical).")
    max_null_fraction: float = Field(0.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _check_bounds(self) -> Column:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        if self.type == "numeric" and self.values is not None:
            raise ValueError("'values' applies to categorical columns; use min/max")
        return self


class Estimator(_Strict):
    """The scikit-learn estimator at the end of the training Pipeline."""

    class_path: str = Field(
        alias="class", description="Import path, e.g. sklearn.linear_model.Ridge"
    )
    params: dict[str, Any] = Field(default_factory=dict)
    numeric_preprocessing: Literal["standard_scaler", "passthrough"] = "standard_scaler"
    categorical_preprocessing: Literal["one_hot", "ordinal"] = "one_hot"
    seed: int = 42

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("class_path")
    @classmethod
    def _trusted(cls, value: str) -> str:
        if not value.startswith(TRUSTED_ESTIMATOR_PREFIXES) or value.count(".") < 2:
            raise ValueError(
                f"expected an estimator import path under {', '.join(TRUSTED_ESTIMATOR_PREFIXES)} "
                f"(e.g. sklearn.linear_model.LogisticRegression), got {value!r}"
            )
        return value


class Validation(_Strict):
    suite: str | None = Field(None, description="GX suite JSON, relative to the include dir.")
    min_rows: int = Field(100, ge=1)
    chunk_rows: int = Field(500_000, ge=1_000, description="Rows per chunk; bounds memory.")
    severity: dict[
        Literal[
            "min_rows",
            "columns",
            "dtypes",
            "label_not_null",
            "label_values",
            "duplicates",
            "leakage",
            "nulls",
            "ranges",
            "categories",
            "expectations",
        ],
        Literal["error", "warn"],
    ] = Field(default_factory=dict, description="Per-check severity; the default is error.")


class Holdout(_Strict):
    """Where the rows both models are scored on come from.

    ``out_of_time`` (the default): every retrain holds out the newest rows of its own
    batch (the latest by ``time_column`` when set, else a seeded, stratified share) and
    trains on the rest, so the gate judges both models on the world they will serve.
    ``split`` and ``file`` are the pinned strategies: one holdout, carved once from the
    first batch (``split``) or read from ``path`` (``file``), reused by every evaluation
    until it is deliberately refreshed; for populations that do not move.
    """

    strategy: Literal["out_of_time", "split", "file"] = "out_of_time"
    fraction: float = Field(0.2, gt=0.0, lt=0.9)
    stratify: bool = True
    path: str | None = Field(
        None,
        description="strategy 'file': the holdout file, relative to the include dir.",
        examples=["holdouts/churn.csv"],
    )
    seed: int = 7
    time_column: str | None = Field(
        None,
        description="out_of_time: a declared column giving each row's time (numbers, or "
        "ISO-8601 text); the latest rows are held out.",
        examples=["observed_at"],
    )
    min_rows: int = Field(
        100, ge=1, description="Fewest holdout rows a decision may rest on.", examples=[500]
    )

    @model_validator(mode="after")
    def _file_needs_path(self) -> Holdout:
        if self.strategy == "file" and not self.path:
            raise ValueError("strategy 'file' needs 'path'")
        if self.time_column and self.strategy != "out_of_time":
            raise ValueError("time_column applies to strategy 'out_of_time' only")
        return self

    @property
    def pinned(self) -> bool:
        return self.strategy != "out_of_time"


class Window(_Strict):
    """Which retained batches the challenger trains on, besides the newest one."""

    batches: int = Field(
        1,
        ge=1,
        le=1000,
        description="The newest batch plus the N-1 retained before it.",
        examples=[3],
    )
    days: int | None = Field(
        None,
        ge=1,
        description="Instead: every retained batch stored within N days.",
        examples=[90],
    )


class Training(_Strict):
    window: Window = Window()


class Primary(_Strict):
    metric: str
    mode: Literal["superiority", "non_inferiority"] = "superiority"
    margin: float = 0.0
    margin_type: Literal["absolute", "relative"] = "absolute"


class Uncertainty(_Strict):
    """Paired bootstrap of the metric delta; the gate uses the CI's lower bound."""

    enabled: bool = True
    resamples: int = Field(1000, ge=100, le=100_000)
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    seed: int = 0


class Guardrail(_Strict):
    metric: str
    tolerance: float = Field(0.0, ge=0.0)
    tolerance_type: Literal["absolute", "relative"] = "absolute"


class Backtest(_Strict):
    """Optional guardrail: the challenger may not lose more than ``tolerance`` of the
    metric on an older holdout, so a model that fits only the newest batch is caught.

    The older holdout is the champion's own (the rows of the decision that promoted it;
    out-of-time strategy), or the fixed reference file ``path`` when set. Its rows are
    kept out of the challenger's training.
    """

    enabled: bool = Field(False, examples=[True])
    metric: str | None = Field(
        None, description="Default: the primary metric.", examples=["roc_auc"]
    )
    tolerance: float = Field(
        0.02, ge=0.0, description="Absolute; the point estimate is gated.", examples=[0.01]
    )
    path: str | None = Field(
        None,
        description="Reference holdout file, relative to include/.",
        examples=["holdouts/reference.csv"],
    )


class Slices(_Strict):
    columns: list[str] = Field(default_factory=list)
    metric: str | None = Field(None, description="Metric compared per slice.", examples=["roc_auc"])
    tolerance: float = Field(0.02, ge=0.0)
    min_size: int = Field(200, ge=1)


class Budgets(_Strict):
    max_model_bytes: int | None = Field(None, ge=1)
    max_latency_ms_p95: float | None = Field(None, gt=0, description="Single-row predict p95.")


class Approval(_Strict):
    required: bool = False
    timeout_hours: float = Field(24.0, gt=0)
    default: Literal["approve", "reject"] = "reject"


class Gate(_Strict):
    primary: Primary
    uncertainty: Uncertainty = Uncertainty()
    guardrails: list[Guardrail] = Field(default_factory=list)
    floors: dict[str, float] = Field(
        default_factory=dict,
        description="Absolute bounds: at least this for higher-is-better metrics, at most "
        "this for lower-is-better ones.",
    )
    slices: Slices = Slices()
    backtest: Backtest = Backtest()
    budgets: Budgets = Budgets()
    first_run: Literal["promote", "reject"] = Field(
        "promote", description="With no champion: promote if floors and budgets pass, or reject."
    )
    approval: Approval = Approval()


class Smoke(_Strict):
    """Checks on the candidate slot before it gets any traffic."""

    rows: int = Field(200, ge=1, le=10_000, description="Holdout rows compared with offline.")
    tolerance: float = Field(1e-6, ge=0.0, description="Max |served - offline| prediction.")
    latency_requests: int = Field(50, ge=5, le=10_000)
    ready_timeout_seconds: float = Field(60.0, gt=0)


class Canary(_Strict):
    """Live comparison of candidate and stable before the switch.

    In ``canary`` mode the candidate answers ``share`` of the requests; in ``shadow``
    mode it scores every request in the background and answers none. Either way the
    server also scores each candidate-scored request with the stable model, so the
    prediction shift is measured on the same rows.
    """

    enabled: bool = True
    mode: Literal["canary", "shadow"] = "canary"
    share: float = Field(0.2, gt=0.0, le=1.0)
    requests: int = Field(200, ge=1, description="Candidate-scored requests to wait for.")
    max_seconds: float = Field(600.0, gt=0, description="Give up (and roll back) after this.")
    synthetic_traffic: bool = Field(
        False,
        description="Replay holdout rows through /predict during the canary (no live traffic).",
    )
    max_error_rate: float = Field(0.0, ge=0.0, le=1.0)
    max_latency_ratio: float = Field(
        3.0, gt=0.0, description="Candidate p95 at most this times stable's p95."
    )
    max_mean_shift: float = Field(
        0.05,
        ge=0.0,
        description="Max |mean(candidate - stable)| prediction on the same rows.",
    )


class Serving(_Strict):
    """The model server for this model and the deploy checks (smoke test, canary)."""

    port: int = Field(8181, ge=1024, le=65535, description="Listens on 127.0.0.1 only.")
    max_batch_rows: int = Field(1000, ge=1, le=100_000)
    threshold: float = Field(0.5, gt=0.0, lt=1.0, description="Classification label cut.")
    prediction_range: tuple[float, float] | None = Field(
        None, description="Regression: predictions outside [min, max] are flagged."
    )
    positive_rate_band: tuple[float, float] | None = Field(
        None, description="Classification: a batch whose positive rate leaves it is flagged."
    )
    band_min_rows: int = Field(20, ge=1, description="Smallest batch judged against the band.")
    log_retention_days: int = Field(30, ge=1, le=3650)
    latency_budget_ms_p95: float = Field(100.0, gt=0, description="End-to-end HTTP p95.")
    smoke: Smoke = Smoke()
    canary: Canary = Canary()

    @model_validator(mode="after")
    def _ordered(self) -> Serving:
        for name in ("prediction_range", "positive_rate_band"):
            bounds = getattr(self, name)
            if bounds is not None and not bounds[0] < bounds[1]:
                raise ValueError(f"{name}: the lower bound must be below the upper bound")
        return self


class Schedule(_Strict):
    cron: str | None = None
    asset: str | None = Field(
        None,
        description="Asset URI; an update triggers retraining.",
        examples=["s3://bucket/churn/latest.csv"],
    )

    @model_validator(mode="after")
    def _one_of(self) -> Schedule:
        if self.cron and self.asset:
            raise ValueError("set either 'cron' or 'asset', not both")
        return self


class Retention(_Strict):
    """How long raw training batches stay in the artifact store.

    A batch may be pruned only when it is outside every limit that is set and no live
    version (an aliased one, or the newest) was trained on it. With no limit set nothing
    is ever pruned.
    """

    days: int | None = Field(
        None, ge=1, description="Keep batches stored within this many days.", examples=[365]
    )
    batches: int | None = Field(None, ge=1, description="Keep the newest N batches.", examples=[12])


class RetrainPolicy(_Strict):
    """When the monitor may start a retrain, and when it stops and asks a person.

    An incident is the run of alarm windows from the first alarm to the next healthy
    window. Within ``period_days``, once ``max_failed_retrains`` retrains started for
    the same incident were rejected by the gate, or promoted while the alarm kept
    firing, the monitor stops triggering and asks a person (docs/loop.md).
    """

    enabled: bool = Field(True, description="Emit retrain Asset events on alarms.")
    cooldown_hours: float = Field(
        24.0, ge=0.0, description="Least time between two retrain triggers of one model."
    )
    max_failed_retrains: int = Field(
        3, ge=1, le=100, description="K: failed retrains of one incident before a person is asked."
    )
    period_days: float = Field(
        14.0, gt=0.0, description="Only retrains triggered within this period are counted."
    )
    answer_timeout_hours: float = Field(
        24.0, gt=0.0, description="An unanswered escalation is acknowledged after this."
    )


class Drift(_Strict):
    """When a feature (or the score) has drifted from the champion's reference profile.

    Both must hold: the population stability index (PSI, an effect size that does not
    grow with the sample) is at least ``psi_threshold``, AND the chi-square test of the
    same bins rejects "same distribution" at ``alpha`` after Holm's correction over all
    features. The effect size keeps large windows from firing on tiny shifts; the test
    keeps small windows from firing on noise.
    """

    psi_threshold: float = Field(
        0.1,
        gt=0.0,
        description="Smallest PSI that counts as drift (0.1: a moderate shift).",
        examples=[0.2],
    )
    alpha: float = Field(
        0.01,
        gt=0.0,
        lt=0.5,
        description="Family-wise error rate over the features (Holm).",
        examples=[0.05],
    )
    bins: int = Field(
        10, ge=2, le=100, description="Quantile bins per numeric feature.", examples=[20]
    )
    max_categories: int = Field(
        30,
        ge=1,
        le=1000,
        description="Categories kept per feature; the rest count as other.",
        examples=[50],
    )


class Monitoring(_Strict):
    """The monitor: windows of served predictions against the champion's reference."""

    schedule: str = Field(
        "0 * * * *", min_length=1, description="Cron for the monitor DAG.", examples=["0 6 * * *"]
    )
    window_hours: float = Field(
        24.0, gt=0, le=24 * 366, description="Length of a window.", examples=[168]
    )
    log_dir: str | None = Field(
        None,
        description="Prediction logs; default MLOPS_PACK_PREDICTION_LOG_DIR/<model>, else "
        "MLOPS_PACK_HOME/serving/<model>/predictions (where the model server writes).",
        examples=["/srv/predictions/churn"],
    )
    labels_dir: str | None = Field(
        None,
        description="Label feed; default MLOPS_PACK_LABELS_DIR/<model>, else "
        "MLOPS_PACK_HOME/labels/<model>.",
        examples=["/srv/labels/churn"],
    )
    min_rows: int = Field(
        500, ge=1, description="Fewest served rows a drift verdict rests on.", examples=[2000]
    )
    min_labelled_rows: int = Field(
        200, ge=1, description="Fewest labelled rows a decay verdict rests on.", examples=[1000]
    )
    drift: Drift = Drift()
    decay_metric: str | None = Field(
        None, description="Default: the gate's primary metric.", examples=["roc_auc"]
    )
    decay_tolerance: float = Field(
        0.02,
        ge=0.0,
        description="Decay when the metric's interval bound (upper for higher-is-better) "
        "is worse than the reference by more than this (absolute).",
        examples=[0.05],
    )
    max_age_days: float | None = Field(
        90.0, gt=0, description="A champion older than this is stale; null: never.", examples=[30]
    )
    retrain: RetrainPolicy = RetrainPolicy()


class ModelSpec(_Strict):
    """A model: its data, features, estimator, checks, holdout, metrics and gate."""

    name: Annotated[
        str,
        Field(
            pattern=NAME_PATTERN,
            description="The model's name; must equal the file name (churn.yaml: churn).",
        ),
    ]
    description: str = ""
    task: Literal["classification", "regression"]
    data: DataSource
    target: str = Field(description="The label column.")
    positive_class: str | int | None = Field(
        None, description="Binary classification: the label value scored as positive."
    )
    classes: list[str | int] | None = Field(None, description="Allowed label values.")
    columns: list[Column] = Field(min_length=1)
    estimator: Estimator
    validation: Validation = Validation()
    holdout: Holdout = Holdout()
    training: Training = Training()
    metrics: list[str] = Field(min_length=1)
    gate: Gate
    schedule: Schedule = Schedule()
    retention: Retention = Retention()
    serving: Serving | None = Field(None, description="Serve the champion; deploy through it.")
    monitoring: Monitoring | None = Field(
        None, description="Watch the served model; retrain and escalate (docs/loop.md)."
    )

    @model_validator(mode="after")
    def _check_columns(self) -> ModelSpec:
        names = [c.name for c in self.columns]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"columns: duplicated names {dupes}")
        if self.target in names:
            raise ValueError(f"target {self.target!r} must not also be listed in columns")
        if not any(c.role == "feature" for c in self.columns):
            raise ValueError("columns: at least one column needs role 'feature'")
        for key in self.data.key:
            if key not in names:
                raise ValueError(f"data.key: {key!r} is not a declared column")
        for column in self.gate.slices.columns:
            if column not in names:
                raise ValueError(f"gate.slices.columns: {column!r} is not a declared column")
        time_column = self.holdout.time_column
        if time_column and time_column not in names:
            raise ValueError(f"holdout.time_column: {time_column!r} is not a declared column")
        return self

    @model_validator(mode="after")
    def _check_labels_and_metrics(self) -> ModelSpec:
        if self.task == "classification":
            if not self.classes or len(self.classes) != 2:
                raise ValueError(
                    "classes: binary classification needs exactly two label values "
                    "(multiclass is not supported yet)"
                )
            if self.positive_class is None or self.positive_class not in self.classes:
                raise ValueError("positive_class: must be one of 'classes'")
        if self.serving is not None:
            if self.task == "classification" and self.serving.prediction_range is not None:
                raise ValueError(
                    "serving.prediction_range is for regression; use positive_rate_band"
                )
            if self.task == "regression" and self.serving.positive_rate_band is not None:
                raise ValueError("serving.positive_rate_band is for classification")
        for metric in self.metrics:
            metric_info(metric, self.task)
        used = [self.gate.primary.metric, *(g.metric for g in self.gate.guardrails)]
        used += list(self.gate.floors)
        if self.gate.slices.metric:
            used.append(self.gate.slices.metric)
        if self.gate.backtest.metric:
            used.append(self.gate.backtest.metric)
        for metric in used:
            if metric not in self.metrics:
                raise ValueError(f"gate uses metric {metric!r}, which is not listed in 'metrics'")
        decay = self.monitoring.decay_metric if self.monitoring else None
        if decay and decay not in self.metrics:
            raise ValueError(
                f"monitoring.decay_metric: {decay!r} is not listed in 'metrics'; list it there"
            )
        return self

    # Convenience views -------------------------------------------------------------
    def monitoring_policy(self) -> Monitoring:
        """The monitoring section, or its defaults when the spec has none: every version
        gets a reference profile, so monitoring can be switched on later."""
        return self.monitoring or Monitoring()

    def features(self) -> list[Column]:
        return [c for c in self.columns if c.role == "feature"]

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    def expected_columns(self) -> list[str]:
        return [*(c.name for c in self.columns), self.target]

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True)

    def sha256(self) -> str:
        """Hash of the parsed spec, so comments and formatting do not change it."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()


# Loading ---------------------------------------------------------------------------

_EXPECTED = {
    "float_parsing": "a number",
    "float_type": "a number",
    "int_parsing": "an integer",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "missing": "a value (the field is required)",
    "extra_forbidden": "no such field (unknown key; check the spelling)",
}


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "[" in str(part) or str(part).startswith("function-"):
            continue  # pydantic's union/validator tags are noise to a reader
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def format_validation_error(source: str, error: ValidationError) -> str:
    lines = []
    for item in error.errors(include_url=False):
        where = _loc(item["loc"])
        kind = item["type"]
        if kind in _EXPECTED and kind not in {"extra_forbidden", "missing"}:
            got = item.get("input")
            lines.append(f"{source}: {where}: expected {_EXPECTED[kind]}, got {got!r}")
        elif kind in _EXPECTED:
            lines.append(f"{source}: {where}: expected {_EXPECTED[kind]}")
        else:
            message = str(item["msg"]).removeprefix("Value error, ")
            lines.append(f"{source}: {where}: {message}")
    return "\n".join(lines)


def parse_spec(raw: Any, source: str) -> ModelSpec:
    if not isinstance(raw, dict):
        raise SpecError(f"{source}: (top level): expected a mapping, got {type(raw).__name__}")
    try:
        return ModelSpec.model_validate(raw)
    except ValidationError as exc:
        message = format_validation_error(source, exc)
        raise SpecError(message, {"file": source, "errors": message.splitlines()}) from None


# libyaml's safe loader where PyYAML was built with it (its wheels are): the same
# documents and errors as the pure-Python one at about a tenth of the CPU. The
# dag-processor reads every spec on each parse, every min_file_process_interval; the
# pure-Python loader was most of the DAG factory's share of that parse (Airflow's
# serialization of the built DAGs is the larger share, docs/production.md).
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_spec(path: str | os.PathLike[str]) -> ModelSpec:
    """Read and validate a spec file; every failure names the file and the field."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{source}: file not found") from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"{source}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        raw = yaml.load(text, Loader=_SAFE_LOADER)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise SpecError(f"{source}: {where}invalid YAML ({getattr(exc, 'problem', exc)})") from None
    spec = parse_spec(raw, source)
    stem = Path(path).stem
    if spec.name != stem:
        raise SpecError(f"{source}: name: expected {stem!r} (the file name), got {spec.name!r}")
    return spec


def spec_json_schema() -> dict[str, Any]:
    schema = ModelSpec.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://github.com/airflow-mlops-pack/schema/model_spec.schema.json"
    return schema


# Per-run overrides -------------------------------------------------------------------


class GateOverrides(_Strict):
    """What a single run may change about the gate, within bounds."""

    mode: Literal["superiority", "non_inferiority"] | None = None
    margin: float | None = Field(None, ge=-0.2, le=0.2)
    confidence: float | None = Field(None, ge=0.8, le=0.999)
    first_run: Literal["promote", "reject"] | None = None


class RunOverrides(_Strict):
    """Per-run knobs (the Airflow trigger form and REST ``conf`` map onto these)."""

    data_path: str | None = Field(None, min_length=1, max_length=1024)
    data_sha256: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{64}$",
        description="Train on this retained batch (the monitor's labelled batch) instead "
        "of the data file.",
    )
    gate: GateOverrides = GateOverrides()
    reason: str = Field("", max_length=500)

    @field_validator("data_path")
    @classmethod
    def _no_traversal(cls, value: str | None) -> str | None:
        if value is not None and (".." in Path(value).parts or re.search(r"[\x00-\x1f]", value)):
            raise ValueError("must not contain '..' or control characters")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> RunOverrides:
        if self.data_path and self.data_sha256:
            raise ValueError("give data_path or data_sha256, not both")
        return self


def apply_overrides(spec: ModelSpec, overrides: RunOverrides) -> ModelSpec:
    """Return a new spec with the run's overrides applied (the original is untouched)."""
    data = spec.model_dump(by_alias=True)
    if overrides.data_path:
        data["data"]["path"] = overrides.data_path
    gate = overrides.gate
    if gate.mode is not None:
        data["gate"]["primary"]["mode"] = gate.mode
    if gate.margin is not None:
        data["gate"]["primary"]["margin"] = gate.margin
    if gate.confidence is not None:
        data["gate"]["uncertainty"]["confidence"] = gate.confidence
    if gate.first_run is not None:
        data["gate"]["first_run"] = gate.first_run
    return parse_spec(data, f"{spec.name} (with run overrides)")
