"""The reference profile of a model version: what "normal" looked like when it was trained.

Written by ``train`` as one JSON artifact on the version's run (plain JSON, never a
pickle), so the monitor compares served traffic with it without the raw training data:
- per feature: bins (quantile edges from the training rows for numeric columns; the most
  frequent categories plus an "other" bucket for categorical ones), the training rows'
  count in each, and the missing rate (missing values have a bin of their own);
- the model's scores on its holdout, binned the same way, with their mean and the share
  at or above the serving threshold (the positive rate);
- the holdout metrics with their bootstrap intervals, drawn by the gate's code.

A profile is computed where all three are at hand: ``train`` holds the training rows,
the holdout and the fitted model at once; ``evaluate`` never sees the training rows.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlops_pack.gate import quantile
from mlops_pack.spec import Column, ModelSpec
from mlops_pack.steps import metrics

SCHEMA = "mlops_pack.reference_profile/1"
ARTIFACT = "reference_profile.json"
OTHER = "__other__"


@dataclass(frozen=True)
class Binning:
    """How one column's values fall into bins; the last bin holds the missing values.

    Numeric: ``edges`` are the interior cut points, bin ``i`` is [edges[i-1], edges[i]).
    Categorical: one bin per kept category, then "other", then missing.
    """

    kind: str
    edges: tuple[float, ...] = ()
    categories: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        if self.kind == "numeric":
            return len(self.edges) + 2
        return len(self.categories) + 2

    def labels(self) -> list[str]:
        if self.kind == "numeric":
            bounds = ["-inf", *(f"{e:g}" for e in self.edges), "inf"]
            ranges = [f"[{lo}, {hi})" for lo, hi in itertools.pairwise(bounds)]
            return [*ranges, "missing"]
        return [*self.categories, "other", "missing"]

    def counts(self, values: Any) -> np.ndarray:
        """How many of ``values`` fall in each bin (a list or array of raw values)."""
        if self.kind == "numeric":
            numbers = _numbers(values)
            missing = np.isnan(numbers)
            index = np.searchsorted(np.asarray(self.edges), numbers[~missing], side="right")
            out = np.bincount(index, minlength=self.size).astype(np.int64)
            out[-1] += int(missing.sum())
            return out
        other, missing = len(self.categories), len(self.categories) + 1
        if isinstance(values, list):
            # Values as logged (JSON: str, number, bool, null): a dict lookup per value is
            # several times faster than building a pandas Categorical of Python objects,
            # and matches the same way (by equality with the kept category's text).
            index = {None: missing, **{c: i for i, c in enumerate(self.categories)}}
            codes = np.fromiter(
                map(index.get, values, itertools.repeat(other)), dtype=np.int64, count=len(values)
            )
            for position in np.flatnonzero(codes == other):  # a NaN is missing, not other
                if _absent(values[position]):
                    codes[position] = missing
            return np.bincount(codes, minlength=self.size)
        import pandas as pd

        # Codes of the kept categories; -1 for anything else (other or missing).
        codes = pd.Categorical(values, categories=list(self.categories)).codes.astype(np.int64)
        codes[codes < 0] = other
        codes[values.isna().to_numpy()] = missing
        return np.bincount(codes, minlength=self.size)

    def as_dict(self) -> dict[str, Any]:
        if self.kind == "numeric":
            return {"kind": self.kind, "edges": list(self.edges)}
        return {"kind": self.kind, "categories": list(self.categories)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Binning:
        return cls(
            kind=raw["kind"],
            edges=tuple(float(e) for e in raw.get("edges", ())),
            categories=tuple(str(c) for c in raw.get("categories", ())),
        )


def _absent(value: Any) -> bool:
    """JSON null, or a NaN (what a missing value is in a frame)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _numbers(values: Any) -> np.ndarray:
    """Raw values as floats; None (JSON null) and anything unparsable become NaN."""
    try:
        return np.asarray(values, dtype=np.float64)  # None becomes NaN here
    except (TypeError, ValueError):
        return np.array([_float(v) for v in values], dtype=np.float64)


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def numeric_binning(values: np.ndarray, bins: int) -> Binning:
    present = values[~np.isnan(values)]
    if not len(present):
        return Binning("numeric")
    cuts = np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1])
    # Discrete columns repeat quantiles; a cut at the minimum would leave a bin empty.
    edges = sorted({float(c) for c in cuts if c > present.min()})
    return Binning("numeric", edges=tuple(edges))


def categorical_binning(values: Any, cap: int) -> Binning:
    import pandas as pd

    frequent = pd.Series(values).dropna().astype(str).value_counts()
    kept = sorted(frequent.index[:cap])
    return Binning("categorical", categories=tuple(kept))


def column_binning(column: Column, values: Any, spec: ModelSpec) -> Binning:
    drift = spec.monitoring_policy().drift
    if column.type == "numeric":
        return numeric_binning(_numbers(values), drift.bins)
    return categorical_binning(values, drift.max_categories)


def feature_profile(binning: Binning, values: Any) -> dict[str, Any]:
    counts = binning.counts(values)
    rows = int(counts.sum())
    return {
        **binning.as_dict(),
        "counts": counts.tolist(),
        "rows": rows,
        "missing_rate": float(counts[-1] / rows) if rows else 0.0,
    }


def score_summary(spec: ModelSpec, scores: np.ndarray) -> dict[str, float]:
    """Mean score and, for classification, the share at or above the serving threshold."""
    out = {"mean": float(np.mean(scores)) if len(scores) else float("nan")}
    if spec.task == "classification":
        out["positive_rate"] = float(np.mean(scores >= threshold(spec))) if len(scores) else 0.0
    return out


def threshold(spec: ModelSpec) -> float:
    return spec.serving.threshold if spec.serving is not None else 0.5


def interval(
    spec: ModelSpec, names: list[str], y: np.ndarray, scores: np.ndarray
) -> dict[str, dict[str, float | None]]:
    """Each metric on all rows with its bootstrap interval (the gate's resamples, seed and
    confidence)."""
    unc = spec.gate.uncertainty
    samples = metrics.bootstrap(names, y, scores, unc.resamples, unc.seed)
    alpha = 1.0 - unc.confidence
    out = {}
    for name in names:
        finite = [float(v) for v in samples[name] if np.isfinite(v)]
        value = metrics.score(name, y, scores)
        out[name] = {
            "value": _finite(value),
            "ci_low": _finite(quantile(finite, alpha / 2)),
            "ci_high": _finite(quantile(finite, 1 - alpha / 2)),
            "confidence": unc.confidence,
            "resamples": unc.resamples,
            "rows": len(y),
        }
    return out


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def build(
    spec: ModelSpec,
    train_frame: Any,
    holdout_y: np.ndarray,
    holdout_scores: np.ndarray,
) -> dict[str, Any]:
    """The profile of one version from its training rows and its holdout scores."""
    features = {}
    for column in spec.features():
        values = train_frame[column.name]
        binning = column_binning(column, values, spec)
        features[column.name] = {"type": column.type, **feature_profile(binning, values)}
    score_binning = numeric_binning(
        holdout_scores.astype(np.float64), spec.monitoring_policy().drift.bins
    )
    return {
        "schema": SCHEMA,
        "model": spec.name,
        "task": spec.task,
        "training_rows": len(train_frame),
        "features": features,
        "scores": {
            **feature_profile(score_binning, holdout_scores),
            **score_summary(spec, holdout_scores),
            "threshold": threshold(spec) if spec.task == "classification" else None,
        },
        "holdout_metrics": interval(spec, list(spec.metrics), holdout_y, holdout_scores),
    }
