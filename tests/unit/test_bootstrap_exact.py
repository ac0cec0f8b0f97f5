"""The paired bootstrap's fast path equals scikit-learn given the same resample counts.

Each resample is scored by scikit-learn with the resample's counts as ``sample_weight``;
the bootstrap's sorted improvements must match those to rounding, for classification
(with tied scores, ties across labels and probabilities of exactly 0 and 1) and for
regression, and a custom metric must still see the same resamples.
"""

from __future__ import annotations

import numpy as np
import pytest
from mlops_pack.steps import metrics
from sklearn import metrics as skm

RESAMPLES = 20
SEED = 11

SKLEARN = {
    "roc_auc": lambda y, p, w: skm.roc_auc_score(y, p, sample_weight=w),
    "log_loss": lambda y, p, w: skm.log_loss(y, p, sample_weight=w, labels=[0, 1]),
    "accuracy": lambda y, p, w: skm.accuracy_score(y, p >= 0.5, sample_weight=w),
    "f1": lambda y, p, w: skm.f1_score(y, p >= 0.5, sample_weight=w),
    "brier": lambda y, p, w: skm.brier_score_loss(y, p, sample_weight=w),
    "rmse": lambda y, p, w: np.sqrt(skm.mean_squared_error(y, p, sample_weight=w)),
    "mae": lambda y, p, w: skm.mean_absolute_error(y, p, sample_weight=w),
    "r2": lambda y, p, w: skm.r2_score(y, p, sample_weight=w),
}
HIGHER = {"roc_auc": True, "accuracy": True, "f1": True, "r2": True}


def _expected(names, y, old, new):
    # One block holds every resample, so these are the draws paired_bootstrap makes.
    counts = next(metrics.bootstrap_counts(len(y), RESAMPLES, SEED, block=RESAMPLES))
    out = {}
    for name in names:
        sign = 1 if HIGHER.get(name, False) else -1
        deltas = [sign * (SKLEARN[name](y, new, w) - SKLEARN[name](y, old, w)) for w in counts]
        out[name] = np.sort(deltas)
    return out


def _bootstrap(names, y, old, new):
    direction = {name: HIGHER.get(name, False) for name in names}
    return metrics.paired_bootstrap(names, y, old, new, RESAMPLES, SEED, direction)


def test_classification_matches_sklearn_with_ties_and_extremes():
    rng = np.random.default_rng(3)
    n = 3_000
    y = (rng.random(n) < 0.3).astype(float)
    # Coarse scores give many ties, within and across labels; clipping gives 0s and 1s.
    old = np.clip(np.round(0.3 + 0.3 * (y - 0.3) + rng.normal(0, 0.25, n), 2), 0, 1)
    new = np.clip(0.3 + 0.35 * (y - 0.3) + rng.normal(0, 0.25, n), 0, 1)
    assert len(np.unique(old)) < n / 10 and (old == 0).any() and (old == 1).any()
    names = ["roc_auc", "log_loss", "accuracy", "f1", "brier"]
    got, expected = _bootstrap(names, y, old, new), _expected(names, y, old, new)
    for name in names:
        assert got[name].shape == (RESAMPLES,)
        np.testing.assert_allclose(got[name], expected[name], rtol=0, atol=1e-12, err_msg=name)


def test_classification_matches_sklearn_with_distinct_scores():
    """Continuous scores (every row its own key) take the shared per-row counts."""
    rng = np.random.default_rng(6)
    n = 4_000
    y = (rng.random(n) < 0.4).astype(float)
    old = 1 / (1 + np.exp(-(1.2 * (y - 0.4) + rng.normal(0, 1, n))))
    new = 1 / (1 + np.exp(-(1.5 * (y - 0.4) + rng.normal(0, 1, n))))
    assert len(np.unique(old)) == n and len(np.unique(new)) == n
    names = ["roc_auc", "log_loss", "accuracy", "f1", "brier"]
    got, expected = _bootstrap(names, y, old, new), _expected(names, y, old, new)
    for name in names:
        np.testing.assert_allclose(got[name], expected[name], rtol=0, atol=1e-12, err_msg=name)


def test_regression_matches_sklearn():
    rng = np.random.default_rng(4)
    n = 2_000
    y = rng.normal(size=n)
    old, new = y + rng.normal(0, 0.6, n), y + rng.normal(0, 0.5, n)
    names = ["rmse", "mae", "r2"]
    got, expected = _bootstrap(names, y, old, new), _expected(names, y, old, new)
    for name in names:
        np.testing.assert_allclose(got[name], expected[name], rtol=0, atol=1e-12, err_msg=name)


def test_custom_metric_sees_the_same_resamples():
    """A custom metric (count-matrix API) and a built-in agree when they are the same."""
    from mlops_pack.metric_catalog import CUSTOM_IMPLEMENTATIONS

    CUSTOM_IMPLEMENTATIONS["brier_again"] = metrics.brier
    try:
        rng = np.random.default_rng(5)
        n = 1_500
        y = (rng.random(n) < 0.4).astype(float)
        old, new = rng.random(n), np.clip(y * 0.5 + rng.random(n) * 0.5, 0, 1)
        names = ["brier", "brier_again"]
        got = metrics.paired_bootstrap(
            names, y, old, new, RESAMPLES, SEED, {"brier": False, "brier_again": False}
        )
        np.testing.assert_allclose(got["brier"], got["brier_again"], rtol=0, atol=1e-14)
    finally:
        del CUSTOM_IMPLEMENTATIONS["brier_again"]


@pytest.mark.parametrize("n", [1, 7])
def test_tiny_holdouts(n):
    """Degenerate resamples (one class drawn) give NaN for AUC, never an exception."""
    y = np.array([1.0, 0.0] * n)[:n] if n > 1 else np.array([1.0])
    p = np.linspace(0.1, 0.9, n)
    got = _bootstrap(["roc_auc", "brier"], y, p, p[::-1].copy())
    assert got["brier"].shape == (RESAMPLES,)
    if n == 1:
        assert np.isnan(got["roc_auc"]).all()
