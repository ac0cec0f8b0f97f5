"""Curve points for the comparison report, computed where the holdout predictions exist.

The evaluate step keeps them in its record (a few hundred points per curve), so the gate
can draw the report without the holdout rows or the models.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mlops_pack.spec import ModelSpec

MAX_POINTS = 200  # per curve: enough for a smooth plot, small enough for a record
SCATTER_ROWS = 500  # regression: predicted vs actual sample
CALIBRATION_BINS = 10


def _thin(*arrays: np.ndarray) -> list[list[float]]:
    """At most MAX_POINTS evenly spaced points, first and last kept."""
    size = len(arrays[0])
    index = np.unique(np.linspace(0, size - 1, min(size, MAX_POINTS)).round().astype(int))
    return [[round(float(v), 6) for v in a[index]] for a in arrays]


def _classification(y: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import precision_recall_curve, roc_curve

    if len(np.unique(y)) < 2:  # curves need both classes on the holdout
        return {}
    fpr, tpr, _ = roc_curve(y, scores)
    precision, recall, _ = precision_recall_curve(y, scores)
    clipped = np.clip(scores, 0.0, 1.0)
    observed, predicted = calibration_curve(y, clipped, n_bins=CALIBRATION_BINS)
    return {
        "roc": dict(zip(("fpr", "tpr"), _thin(fpr, tpr), strict=True)),
        "pr": dict(zip(("recall", "precision"), _thin(recall, precision), strict=True)),
        "calibration": {
            "predicted": [round(float(v), 6) for v in predicted],
            "observed": [round(float(v), 6) for v in observed],
        },
    }


def curves(
    spec: ModelSpec,
    y: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray | None,
    seed: int = 0,
) -> dict[str, Any]:
    """Per model (``challenger``, ``champion``) the curves the report plots."""
    scored = {"challenger": challenger, "champion": champion}
    if spec.task == "classification":
        return {
            "task": "classification",
            **{name: _classification(y, p) for name, p in scored.items() if p is not None},
        }
    rows = np.random.default_rng(seed).permutation(len(y))[:SCATTER_ROWS]
    out: dict[str, Any] = {"task": "regression", "actual": [round(float(v), 6) for v in y[rows]]}
    for name, p in scored.items():
        if p is not None:
            out[name] = {"predicted": [round(float(v), 6) for v in np.asarray(p)[rows]]}
    return out
