"""Metrics computed with per-row weights, so the paired bootstrap is a matrix product.

A bootstrap resample is a vector of counts (how often each holdout row was drawn). Each
metric is *prepared* once for (labels, predictions) and then evaluated on a whole
(resamples x rows) count matrix at once, so champion and challenger are scored on exactly
the same resampled rows and 1,000 resamples of 100k rows cost seconds. ROC AUC groups
rows by score once and becomes a weighted Mann-Whitney statistic: two sparse products
and a cumulative sum per block, no sort per resample.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import sparse

from mlops_pack.metric_catalog import CUSTOM_IMPLEMENTATIONS

EPS = 1e-15
Weighted = Callable[[np.ndarray], np.ndarray]
# prepare(y_true, prediction) -> evaluate(weights[b, n]) -> values[b]. For classification
# the prediction is the positive-class probability; for regression the predicted value.
Preparer = Callable[[np.ndarray, np.ndarray], Weighted]


def _mean_of(per_row: np.ndarray) -> Weighted:
    return lambda w: (w @ per_row) / w.sum(axis=1)


def log_loss(y: np.ndarray, p: np.ndarray) -> Weighted:
    p = np.clip(p, EPS, 1 - EPS)
    return _mean_of(-(y * np.log(p) + (1 - y) * np.log(1 - p)))


def brier(y: np.ndarray, p: np.ndarray) -> Weighted:
    return _mean_of((p - y) ** 2)


def accuracy(y: np.ndarray, p: np.ndarray) -> Weighted:
    return _mean_of(((p >= 0.5) == (y == 1)).astype(float))


def f1(y: np.ndarray, p: np.ndarray) -> Weighted:
    predicted = p >= 0.5
    tp_rows = (predicted & (y == 1)).astype(float)
    # 2TP + FP + FN = predicted positives + actual positives
    denom_rows = predicted.astype(float) + (y == 1).astype(float)

    def evaluate(w: np.ndarray) -> np.ndarray:
        tp, denominator = w @ tp_rows, w @ denom_rows
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denominator > 0, 2 * tp / denominator, np.nan)

    return evaluate


def roc_auc(y: np.ndarray, p: np.ndarray) -> Weighted:
    """Weighted Mann-Whitney AUC; tied scores count one half, as in scikit-learn."""
    _, group = np.unique(p, return_inverse=True)
    rows, groups = np.arange(len(p)), int(group.max()) + 1 if len(p) else 0
    neg = sparse.csr_matrix(((y == 0).astype(float), (rows, group)), shape=(len(p), groups))
    pos = sparse.csr_matrix(((y == 1).astype(float), (rows, group)), shape=(len(p), groups))
    neg_t, pos_t = neg.T.tocsr(), pos.T.tocsr()

    def evaluate(w: np.ndarray) -> np.ndarray:
        neg_per_group = (neg_t @ w.T).T
        pos_per_group = (pos_t @ w.T).T
        credit = np.cumsum(neg_per_group, axis=1) - 0.5 * neg_per_group
        numerator = (pos_per_group * credit).sum(axis=1)
        denominator = pos_per_group.sum(axis=1) * neg_per_group.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denominator > 0, numerator / denominator, np.nan)

    return evaluate


def rmse(y: np.ndarray, p: np.ndarray) -> Weighted:
    mse = _mean_of((p - y) ** 2)
    return lambda w: np.sqrt(mse(w))


def mae(y: np.ndarray, p: np.ndarray) -> Weighted:
    return _mean_of(np.abs(p - y))


def r2(y: np.ndarray, p: np.ndarray) -> Weighted:
    squared_error = (p - y) ** 2

    def evaluate(w: np.ndarray) -> np.ndarray:
        total = w.sum(axis=1)
        mean_y = (w @ y) / total
        ss_tot = (w @ (y**2)) - total * mean_y**2
        ss_res = w @ squared_error
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(ss_tot > 1e-12 * np.maximum(total, 1), 1 - ss_res / ss_tot, np.nan)

    return evaluate


IMPLEMENTATIONS: dict[str, Preparer] = {
    "roc_auc": roc_auc,
    "log_loss": log_loss,
    "accuracy": accuracy,
    "f1": f1,
    "brier": brier,
    "rmse": rmse,
    "mae": mae,
    "r2": r2,
}


def implementation(name: str) -> Preparer:
    """A built-in metric, or a custom one registered through the catalog."""
    return IMPLEMENTATIONS.get(name) or CUSTOM_IMPLEMENTATIONS[name]


def score(name: str, y: np.ndarray, p: np.ndarray) -> float:
    """The metric on all rows once (every weight one)."""
    if len(y) == 0:
        return float("nan")
    return float(implementation(name)(y, p)(np.ones((1, len(y))))[0])


def bootstrap_counts(n: int, resamples: int, seed: int, block: int = 100):
    """Yield (block x n) matrices of multinomial bootstrap counts, reproducibly."""
    rng = np.random.default_rng(seed)
    done = 0
    while done < resamples:
        size = min(block, resamples - done)
        draws = rng.integers(0, n, size=(size, n)) + (np.arange(size) * n)[:, None]
        yield np.bincount(draws.ravel(), minlength=size * n).reshape(size, n).astype(np.float64)
        done += size


def paired_bootstrap(
    names: list[str],
    y: np.ndarray,
    champion: np.ndarray,
    challenger: np.ndarray,
    resamples: int,
    seed: int,
    higher_is_better: dict[str, bool],
) -> dict[str, np.ndarray]:
    """Sorted bootstrap improvements of challenger over champion, per metric.

    Both models see the same count matrix in every block: that pairing is what makes the
    delta's interval narrow enough to gate on.
    """
    block = max(1, min(100, 10_000_000 // max(1, len(y))))  # about 80 MB of counts a block
    prepared = {
        n: (implementation(n)(y, challenger), implementation(n)(y, champion)) for n in names
    }
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for weights in bootstrap_counts(len(y), resamples, seed, block):
        for name, (new, old) in prepared.items():
            diff = new(weights) - old(weights)
            parts[name].append(diff if higher_is_better[name] else -diff)
    return {name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()}
