"""The holdout both models are scored on: out of time per retrain, or pinned per model.

``out_of_time``: each retrain holds out the newest rows of its own batch (the latest by
the spec's time column, or a seeded, stratified share); the rows are stored with the
challenger's version, so its evaluation, gate and promotion all refer to exactly them.
Pinned (``split``, ``file``): one holdout per model, created once, reused until a
deliberate refresh; the pin lives on the registered model's tags.

Either way the rows sit in the artifact store as Parquet, so any worker can fetch the
same bytes and prove by their hash that they are the same.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mlops_pack.errors import BadInputError, HoldoutMismatchError
from mlops_pack.hashing import sha256_file
from mlops_pack.registry import TAG
from mlops_pack.spec import ModelSpec
from mlops_pack.steps.context import StepContext
from mlops_pack.steps.dataset import read_frame, row_hashes

FILE = "holdout.parquet"


@dataclass(frozen=True)
class HoldoutPin:
    sha256: str
    uri: str
    rows: int
    strategy: str = "split"
    source: str | None = None  # out_of_time: the sha256 of the batch the rows came from
    time_range: tuple[str, str] | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "sha256": self.sha256,
            "uri": self.uri,
            "rows": self.rows,
            "strategy": self.strategy,
            "source_data_sha256": self.source,
            "time_range": list(self.time_range) if self.time_range else None,
        }

    def version_tags(self) -> dict[str, str]:
        """What a challenger records so its evaluation finds these very rows."""
        tags = {
            "holdout_sha256": self.sha256,
            "holdout_uri": self.uri,
            "holdout_rows": str(self.rows),
            "holdout_strategy": self.strategy,
        }
        if self.source:
            tags["holdout_source"] = self.source
        if self.time_range:
            tags["holdout_time_range"] = "/".join(self.time_range)
        return {f"{TAG}{k}": v for k, v in tags.items()}


def for_version(ctx: StepContext, tags: dict[str, str]) -> HoldoutPin | None:
    """The holdout a version must be judged on: its own (out of time), or the model's pin."""
    if tags.get(f"{TAG}holdout_strategy") != "out_of_time":
        return pinned(ctx)
    return recorded(tags)


def recorded(tags: dict[str, str]) -> HoldoutPin:
    """The holdout a version's tags name: the rows kept out of its training when it was fit.

    For a pinned strategy this stays the version's own pin after a later refresh.
    """
    span = tags.get(f"{TAG}holdout_time_range")
    first, _, last = (span or "").partition("/")
    return HoldoutPin(
        tags[f"{TAG}holdout_sha256"],
        tags[f"{TAG}holdout_uri"],
        int(tags[f"{TAG}holdout_rows"]),
        tags.get(f"{TAG}holdout_strategy", "split"),
        tags.get(f"{TAG}holdout_source"),
        (first, last) if span else None,
    )


@dataclass(frozen=True)
class Reference:
    """An older holdout for the backtest guardrail."""

    frame: pd.DataFrame
    sha256: str
    source: str


def backtest_reference(ctx: StepContext, champion_tags: dict[str, str] | None) -> Reference | None:
    """The backtest's rows: the spec's reference file, else the champion's own holdout.

    None when the backtest is off, or when the only candidate is the pinned holdout the
    evaluation already uses (a backtest on the same rows would say nothing new).
    """
    rule = ctx.spec.gate.backtest
    if not rule.enabled:
        return None
    if rule.path:
        path = ctx.include_path(rule.path)
        return Reference(read_frame(path, ctx.spec), sha256_file(path), f"reference {rule.path}")
    if not champion_tags or champion_tags.get(f"{TAG}holdout_strategy") != "out_of_time":
        return None
    pin = for_version(ctx, champion_tags)
    return Reference(load(ctx, pin), pin.sha256, "the champion's own holdout")


def pinned(ctx: StepContext) -> HoldoutPin | None:
    tags = ctx.registry.model_tags(ctx.spec.name)
    if f"{TAG}holdout_sha256" not in tags:
        return None
    return HoldoutPin(
        tags[f"{TAG}holdout_sha256"],
        tags[f"{TAG}holdout_uri"],
        int(tags[f"{TAG}holdout_rows"]),
        ctx.spec.holdout.strategy,
    )


def split(spec: ModelSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """Carve the holdout rows from ``frame`` (stratified on the label for classification)."""
    return _seeded_split(spec, frame)[1]


def _seeded_split(spec: ModelSpec, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    from sklearn.model_selection import train_test_split

    h = spec.holdout
    stratify = frame[spec.target] if h.stratify and spec.task == "classification" else None
    try:
        rest, holdout = train_test_split(
            frame, test_size=h.fraction, random_state=h.seed, stratify=stratify
        )
    except ValueError as exc:
        raise BadInputError(f"model {spec.name}: cannot carve the holdout: {exc}") from None
    return rest.sort_index(), holdout.sort_index().reset_index(drop=True)


def _times(spec: ModelSpec, frame: pd.DataFrame, path: Path) -> pd.Series:
    """The time column as comparable values: numbers as they are, text as ISO-8601."""
    name = spec.holdout.time_column or ""
    column = frame[name]
    missing = column.isna()
    if missing.any():
        raise BadInputError(
            f"{path}: holdout.time_column: {name!r} is empty in {int(missing.sum())} rows "
            f"(first at row {int(missing.to_numpy().argmax())}); every row needs a time"
        )
    if pd.api.types.is_numeric_dtype(column):
        return column
    try:
        return pd.to_datetime(column, format="ISO8601", utc=True)
    except (ValueError, TypeError) as exc:
        raise BadInputError(
            f"{path}: holdout.time_column: {name!r} holds values that are not ISO-8601 "
            f"times ({str(exc).splitlines()[0][:120]}); write times like 2026-05-31T12:00:00Z "
            "or declare a numeric column"
        ) from None


def out_of_time(
    spec: ModelSpec, frame: pd.DataFrame, path: Path
) -> tuple[pd.DataFrame, pd.DataFrame, tuple[str, str] | None]:
    """Split the newest batch into (rows to train on, holdout rows, holdout time span).

    With a time column the holdout is the latest ``fraction`` of the rows, cut at a time
    so that no training row is later than a holdout row; without one, a seeded share.
    """
    h = spec.holdout
    span = None
    if h.time_column:
        times = _times(spec, frame, path)
        ordered = times.sort_values(kind="stable")
        cut = ordered.iloc[max(0, len(frame) - max(1, round(h.fraction * len(frame))))]
        late = (times >= cut).to_numpy()
        rest, holdout = frame.loc[~late], frame.loc[late].reset_index(drop=True)
        held_times = times[late]
        span = (str(held_times.min()), str(held_times.max()))
    else:
        rest, holdout = _seeded_split(spec, frame)
    if len(holdout) < h.min_rows or rest.empty:
        raise BadInputError(
            f"{path}: holdout.min_rows: this batch of {len(frame)} rows gives "
            f"{len(holdout)} holdout rows and {len(rest)} to train on; the spec needs at "
            f"least {h.min_rows} holdout rows. Send a larger batch, or lower "
            "holdout.min_rows or raise holdout.fraction"
        )
    return rest, holdout, span


@dataclass(frozen=True)
class Exclusion:
    """Which training rows are holdout rows, and how they were recognised."""

    mask: pd.Series
    by: str

    @property
    def excluded(self) -> int:
        return int(self.mask.sum())


def exclusion(spec: ModelSpec, frame: pd.DataFrame, held: pd.DataFrame) -> Exclusion:
    """Mark the rows of ``frame`` that are holdout rows.

    With a key, a row is a holdout row when its key is: two customers who happen to share
    every feature value stay in training. Without a key, identity is all the values a model
    sees (features and label), the only way left to recognise a copied row.
    """
    if spec.data.key:
        key = list(spec.data.key)
        held_keys = pd.MultiIndex.from_frame(held[key])
        mask = pd.Series(pd.MultiIndex.from_frame(frame[key]).isin(held_keys), index=frame.index)
        return Exclusion(mask, f"key {key}")
    held_hashes = set(row_hashes(held, spec).to_numpy())
    return Exclusion(row_hashes(frame, spec).isin(held_hashes), "row values")


def store(
    ctx: StepContext,
    holdout: pd.DataFrame,
    reason: str,
    source: str | None = None,
    time_range: tuple[str, str] | None = None,
) -> HoldoutPin:
    """Write the rows to the artifact store as Parquet; the pin names them by sha256."""
    registry = ctx.registry
    experiment = registry.experiment_id(f"mlops-pack/{ctx.spec.name}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / FILE
        holdout.to_parquet(path, index=False)
        digest = sha256_file(path)
        run = registry.client.create_run(
            experiment,
            run_name="holdout",
            tags={f"{TAG}step": "holdout", f"{TAG}holdout_sha256": digest, f"{TAG}reason": reason},
        )
        registry.client.log_artifact(run.info.run_id, str(path))
        registry.client.set_terminated(run.info.run_id)
    return HoldoutPin(
        digest,
        f"{run.info.artifact_uri}/{FILE}",
        len(holdout),
        ctx.spec.holdout.strategy,
        source,
        time_range,
    )


def _publish(ctx: StepContext, holdout: pd.DataFrame, reason: str) -> HoldoutPin:
    """Store the rows and pin them on the registered model (the pinned strategies)."""
    pin = store(ctx, holdout, reason)
    registry = ctx.registry
    registry.ensure_model(ctx.spec.name)
    for key, value in (
        ("holdout_sha256", pin.sha256),
        ("holdout_uri", pin.uri),
        ("holdout_rows", pin.rows),
    ):
        registry.set_model_tag(ctx.spec.name, f"{TAG}{key}", str(value))
    return pin


def ensure(ctx: StepContext, frame: pd.DataFrame | None) -> HoldoutPin:
    """Return the pinned holdout, creating it from ``frame`` (or the spec's file) once."""
    current = pinned(ctx)
    if current is not None:
        return current
    with ctx.registry.lock(ctx.spec.name):
        current = pinned(ctx)  # another run may have created it while we waited
        if current is not None:
            return current
        if ctx.spec.holdout.strategy == "file":
            holdout = read_frame(ctx.include_path(ctx.spec.holdout.path or ""), ctx.spec)
        elif frame is not None:
            holdout = split(ctx.spec, frame)
        else:
            raise BadInputError(f"model {ctx.spec.name}: no holdout yet; run train first")
        pin = _publish(ctx, holdout, "created from the first training data")
        ctx.registry.append_event(
            ctx.spec.name,
            "holdout_created",
            {"holdout_sha256": pin.sha256, "rows": pin.rows, "dag_run_id": ctx.dag_run_id},
        )
        return pin


def load(ctx: StepContext, pin: HoldoutPin) -> pd.DataFrame:
    """Fetch the holdout and prove by its hash that it is the pinned one."""
    with tempfile.TemporaryDirectory() as tmp:
        path = ctx.registry.download(pin.uri, Path(tmp))
        actual = sha256_file(path)
        if actual != pin.sha256:
            raise HoldoutMismatchError(
                f"model {ctx.spec.name}: holdout at {pin.uri} has sha256 {actual[:12]}, pinned "
                f"{pin.sha256[:12]}; the stored holdout was modified: restore it or refresh "
                "it deliberately"
            )
        return pd.read_parquet(path)


def refresh(
    ctx: StepContext, frame: pd.DataFrame, reason: str
) -> tuple[HoldoutPin | None, HoldoutPin]:
    """Deliberately replace the pinned holdout with rows from ``frame``; recorded."""
    if not ctx.spec.holdout.pinned:
        raise BadInputError(
            f"model {ctx.spec.name}: holdout.strategy is out_of_time: every retrain already "
            "holds out the newest rows of its batch; refreshing is for the pinned strategies"
        )
    if not reason.strip():
        raise BadInputError("refreshing the holdout needs a reason (--reason)")
    with ctx.registry.lock(ctx.spec.name):
        old = pinned(ctx)
        holdout = split(ctx.spec, frame) if ctx.spec.holdout.strategy == "split" else frame
        pin = _publish(ctx, holdout, reason)
        ctx.registry.append_event(
            ctx.spec.name,
            "holdout_refreshed",
            {
                "old_holdout_sha256": old.sha256 if old else None,
                "holdout_sha256": pin.sha256,
                "rows": pin.rows,
                "reason": reason,
                "dag_run_id": ctx.dag_run_id,
            },
        )
    return old, pin
