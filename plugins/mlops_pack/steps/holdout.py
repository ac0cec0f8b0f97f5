"""The shared holdout: one per model, created once, pinned by sha256, reused everywhere.

The pin lives on the registered model (tags), the rows in the artifact store (Parquet),
so any worker can fetch the same bytes and prove they are the same by their hash.
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

    def as_dict(self) -> dict[str, object]:
        return {"sha256": self.sha256, "uri": self.uri, "rows": self.rows}


def pinned(ctx: StepContext) -> HoldoutPin | None:
    tags = ctx.registry.model_tags(ctx.spec.name)
    if f"{TAG}holdout_sha256" not in tags:
        return None
    return HoldoutPin(
        tags[f"{TAG}holdout_sha256"], tags[f"{TAG}holdout_uri"], int(tags[f"{TAG}holdout_rows"])
    )


def split(spec: ModelSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """Carve the holdout rows from ``frame`` (stratified on the label for classification)."""
    from sklearn.model_selection import train_test_split

    h = spec.holdout
    stratify = frame[spec.target] if h.stratify and spec.task == "classification" else None
    try:
        _, holdout = train_test_split(
            frame, test_size=h.fraction, random_state=h.seed, stratify=stratify
        )
    except ValueError as exc:
        raise BadInputError(f"model {spec.name}: cannot carve the holdout: {exc}") from None
    return holdout.sort_index().reset_index(drop=True)


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


def _publish(ctx: StepContext, holdout: pd.DataFrame, reason: str) -> HoldoutPin:
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
    pin = HoldoutPin(digest, f"{run.info.artifact_uri}/{FILE}", len(holdout))
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
