"""Metrics computed with per-row weights, and the paired bootstrap over them.

A bootstrap resample is a vector of counts (how often each holdout row was drawn). Each
metric can be *prepared* once for (labels, predictions) and then evaluated on a whole
(resamples x rows) count matrix; that is the extension point custom metrics implement.
The built-in metrics take a faster path in ``paired_bootstrap``: rows with the same
(prediction, label) are interchangeable, so draws are counted per such key, mean-type
metrics become one matrix product with a small per-key table, and ROC AUC one cumulative
sum over keys in score order, in exact integers. With continuous scores nearly every
row is its own key; then draws are counted once per row for both models. The two models
are scored on two threads. Champion and challenger are always scored on exactly the same
drawn rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import sparse

from mlops_pack.metric_catalog import CUSTOM_IMPLEMENTATIONS

# Probabilities are clipped to [eps, 1 - eps] before the log, as scikit-learn does.
EPS = float(np.finfo(np.float64).eps)
Weighted = Callable[[np.ndarray], np.ndarray]
# prepare(y_true, prediction) -> evaluate(weights[b, n]) -> values[b]. For classification
# the prediction is the positive-class probability; for regression the predicted value.
Preparer = Callable[[np.ndarray, np.ndarray], Weighted]


# The fast path for built-in metrics ----------------------------------------------------
#
# A built-in metric of one model depends on a row only through (prediction, label). Rows
# that share both are interchangeable, so a resample is fully described by how many draws
# fell on each distinct (prediction, label) pair: a "key". Counting draws per key (one
# bincount), every mean-type metric becomes one product of that count matrix with a
# small table of per-key values, and ROC AUC a cumulative sum over keys sorted by score,
# done in exact integer arithmetic. Both models read the same draws, so the pairing holds.

# Each mean-type metric, defined once: name -> (columns of per-row (or per-key) values
# from (label, prediction), finish(weighted sums, total weight) -> values). The fast
# path and the count-matrix preparers below both use it.
_Columns = Callable[[np.ndarray, np.ndarray], list[np.ndarray]]
_Finish = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def _r2_finish(sums: np.ndarray, total: np.ndarray) -> np.ndarray:
    mean_y = sums[:, 0] / total
    ss_tot = sums[:, 1] - total * mean_y**2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ss_tot > 1e-12 * np.maximum(total, 1), 1 - sums[:, 2] / ss_tot, np.nan)


def _clipped(p: np.ndarray) -> np.ndarray:
    return np.clip(p, EPS, 1 - EPS)


_SUMS: dict[str, tuple[_Columns, _Finish]] = {
    "log_loss": (
        lambda y, p: [-(y * np.log(_clipped(p)) + (1 - y) * np.log(1 - _clipped(p)))],
        lambda s, t: s[:, 0] / t,
    ),
    "brier": (lambda y, p: [(p - y) ** 2], lambda s, t: s[:, 0] / t),
    "accuracy": (
        lambda y, p: [((p >= 0.5) == (y == 1)).astype(float)],
        lambda s, t: s[:, 0] / t,
    ),
    # 2TP + FP + FN = predicted positives + actual positives
    "f1": (
        lambda y, p: [
            ((p >= 0.5) & (y == 1)).astype(float),
            (p >= 0.5).astype(float) + (y == 1).astype(float),
        ],
        lambda s, t: _ratio(2 * s[:, 0], s[:, 1]),
    ),
    "rmse": (lambda y, p: [(p - y) ** 2], lambda s, t: np.sqrt(s[:, 0] / t)),
    "mae": (lambda y, p: [np.abs(p - y)], lambda s, t: s[:, 0] / t),
    "r2": (lambda y, p: [y, y**2, (p - y) ** 2], _r2_finish),
}


def _from_sums(name: str) -> Preparer:
    """The count-matrix form of a mean-type metric, from its one definition in ``_SUMS``."""
    columns, finish = _SUMS[name]

    def prepare(y: np.ndarray, p: np.ndarray) -> Weighted:
        table = np.column_stack(columns(y, p))
        return lambda w: finish(w @ table, w.sum(axis=1))

    return prepare


log_loss = _from_sums("log_loss")
brier = _from_sums("brier")
accuracy = _from_sums("accuracy")
f1 = _from_sums("f1")
rmse = _from_sums("rmse")
mae = _from_sums("mae")
r2 = _from_sums("r2")


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


def bootstrap_draws(n: int, resamples: int, seed: int, block: int = 100):
    """Yield (block x n) matrices of drawn row indices (with replacement), reproducibly."""
    rng = np.random.default_rng(seed)
    done = 0
    while done < resamples:
        size = min(block, resamples - done)
        yield rng.integers(0, n, size=(size, n), dtype=np.int32 if n < 2**31 else np.int64)
        done += size


def bootstrap_counts(n: int, resamples: int, seed: int, block: int = 100):
    """Yield (block x n) matrices of multinomial bootstrap counts, reproducibly.

    Row ``b`` says how often each holdout row was drawn in resample ``b``; the same seed
    gives the same resamples as ``paired_bootstrap``.
    """
    for draws in bootstrap_draws(n, resamples, seed, block):
        yield _histograms(draws, None, n).astype(np.float64)


def _histograms(draws: np.ndarray, key: np.ndarray | None, bins: int) -> np.ndarray:
    """Per resample, how many draws fell on each key (``key[row]`` in ``0..bins-1``;
    without a key, on each row)."""
    keyed = draws if key is None else np.take(key, draws)
    # One bincount per resample: its output stays in the CPU cache, which one bincount
    # over the whole block with offset keys does not (measured 1.4x slower at 100k rows).
    out = np.empty((draws.shape[0], bins), dtype=np.int64)
    for row, values in zip(out, keyed, strict=True):
        row[:] = np.bincount(values, minlength=bins)
    return out


class _KeyedModel:
    """One model's predictions grouped into keys, with what each metric needs per key.

    Keys are numbered negatives first, then positives, each in score order, so a count
    matrix splits into two contiguous halves and AUC needs one cumulative sum.

    When most keys hold a single row (continuous scores), grouping saves nothing and
    counting draws again for each model would repeat work: such a model is *dense*. Its
    units are the rows themselves in (label, score) order; it reads the per-row counts
    both models share (one gather), and its mean-type sums come from one product of the
    shared row weights with its table laid out per row. Ties need no grouping for AUC:
    the cumulative sum over negatives is indexed per positive row.
    """

    def __init__(self, names: list[str], y: np.ndarray, p: np.ndarray) -> None:
        self.names = names
        positive = y == 1
        order = np.lexsort((p, positive))  # negatives first, then by score
        sorted_p, sorted_y = p[order], y[order]
        first = np.ones(len(p), dtype=bool)
        first[1:] = (sorted_p[1:] != sorted_p[:-1]) | (sorted_y[1:] != sorted_y[:-1])
        starts = np.flatnonzero(first)
        # Dense: at least a quarter as many keys as rows (then a per-model count costs
        # about as much as the shared one it would repeat).
        self.dense = 4 * len(starts) >= len(p) and len(p) > 0
        if self.dense:
            self.order = order
            unit_p, unit_y = sorted_p, sorted_y
        else:
            key = np.empty(len(p), dtype=np.int64)
            key[order] = np.cumsum(first, dtype=np.int64) - 1
            self.key = key.astype(np.int32) if len(starts) < 2**31 else key
            unit_p, unit_y = sorted_p[starts], sorted_y[starts]
        self.units = len(unit_p)
        self.negatives = int(np.count_nonzero(unit_y == 0))
        self.slices: dict[str, slice] = {}
        columns, row_columns = [], []
        for name in names:
            if name in _SUMS:
                made = _SUMS[name][0](unit_y, unit_p)
                self.slices[name] = slice(len(columns), len(columns) + len(made))
                columns.extend(made)
                if self.dense:
                    row_columns.extend(_SUMS[name][0](y, p))
        self.table = np.column_stack(columns) if columns else np.zeros((self.units, 0))
        # The same table in the holdout's row order, for the product with the shared
        # row weights.
        self.row_table = np.column_stack(row_columns) if row_columns else None
        # For each positive unit: how many negatives score below it (strictly), and how
        # many below or tied; indexes into a cumulative sum with a leading zero. Only
        # the positives tied with a negative need the second index.
        negative_p = unit_p[: self.negatives]
        positive_p = unit_p[self.negatives :]
        self.below = np.searchsorted(negative_p, positive_p, side="left")
        below_or_tied = np.searchsorted(negative_p, positive_p, side="right")
        self.tied = np.flatnonzero(below_or_tied != self.below)
        self.tied_to = below_or_tied[self.tied]

    def evaluate(
        self, draws: np.ndarray, row_counts: np.ndarray | None, weights: np.ndarray | None
    ) -> dict[str, np.ndarray]:
        """Every metric for each resample of the block.

        ``row_counts`` (draws per row, integers) and ``weights`` (the same as floats) are
        given when a dense model or a custom metric needs them.
        """
        if self.dense:
            counts = np.take(row_counts, self.order, axis=1)
            sums = weights @ self.row_table if self.row_table is not None else None
        else:
            counts = _histograms(draws, self.key, self.units)
            sums = counts.astype(np.float64) @ self.table
        totals = np.full(len(counts), float(draws.shape[1]))
        out = {name: _SUMS[name][1](sums[:, part], totals) for name, part in self.slices.items()}
        if "roc_auc" in self.names:
            out["roc_auc"] = self._auc(counts)
        return out

    def _auc(self, counts: np.ndarray) -> np.ndarray:
        """Weighted Mann-Whitney AUC, ties counting one half, in exact integers (x2)."""
        size = len(counts)
        cumulative = np.zeros((size, self.negatives + 1), dtype=np.int64)
        np.cumsum(counts[:, : self.negatives], axis=1, out=cumulative[:, 1:])
        # 2 x (negatives strictly below + half the tied ones) = below + below_or_tied
        credit2 = np.take(cumulative, self.below, axis=1)
        credit2 *= 2
        if len(self.tied):
            credit2[:, self.tied] += (
                np.take(cumulative, self.tied_to, axis=1) - credit2[:, self.tied] // 2
            )
        positives = counts[:, self.negatives :]
        numerator2 = np.einsum("ij,ij->i", positives, credit2)
        denominator = positives.sum(axis=1) * cumulative[:, -1]
        return _ratio(numerator2.astype(np.float64), 2.0 * denominator)


def _resampled(
    names: list[str], y: np.ndarray, predictions: list[np.ndarray], resamples: int, seed: int
) -> Iterator[list[dict[str, np.ndarray]]]:
    """Per block of resamples, every metric of each model, all models on the same draws.

    Built-in metrics take the keyed fast path; custom metrics get the (resamples x rows)
    count matrix their ``prepare`` expects.
    """
    n = len(y)
    # Small blocks keep a block's draws and counts in the CPU cache: measured fastest at
    # 4 to 8 resamples of 100k rows (docs/benchmarks.md, evaluation).
    block = max(1, min(100, 600_000 // max(1, n)))
    builtin = [name for name in names if name in _SUMS or name == "roc_auc"]
    custom = [name for name in names if name not in builtin]
    keyed = [_KeyedModel(builtin, y, p) for p in predictions] if builtin else []
    prepared = [{name: implementation(name)(y, p) for name in custom} for p in predictions]
    need_rows = bool(custom) or any(model.dense for model in keyed)
    # Two cores: while the last model is scored here, the pool draws the next block and
    # scores the others (numpy draws, gathers, sums and products without the GIL). The
    # generator is advanced by one job at a time, so the draws stay the same.
    blocks = bootstrap_draws(n, resamples, seed, block)
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="bootstrap") as pool:
        upcoming = pool.submit(next, blocks, None)
        while (draws := upcoming.result()) is not None:
            upcoming = pool.submit(next, blocks, None)
            row_counts = _histograms(draws, None, n) if need_rows else None
            weights = row_counts.astype(np.float64) if need_rows else None
            jobs = [pool.submit(model.evaluate, draws, row_counts, weights) for model in keyed[:-1]]
            last = [keyed[-1].evaluate(draws, row_counts, weights)] if keyed else []
            results = [job.result() for job in jobs] + last or [{} for _ in predictions]
            for values, functions in zip(results, prepared, strict=True):
                values.update({name: f(weights) for name, f in functions.items()})
            yield results


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

    Both models see the same drawn rows in every block: that pairing is what makes the
    delta's interval narrow enough to gate on.
    """
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for new, old in _resampled(names, y, [challenger, champion], resamples, seed):
        for name in names:
            diff = new[name] - old[name]
            parts[name].append(diff if higher_is_better[name] else -diff)
    return {name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()}


def bootstrap(
    names: list[str], y: np.ndarray, prediction: np.ndarray, resamples: int, seed: int
) -> dict[str, np.ndarray]:
    """Sorted bootstrap values of each metric for one model (its interval, not a delta).

    The same draws and the same fast path as ``paired_bootstrap``, so the reference
    profile's intervals and the monitor's are computed as the gate computes its own.
    """
    if len(y) == 0:
        return {name: np.array([]) for name in names}
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for (values,) in _resampled(names, y, [prediction], resamples, seed):
        for name in names:
            parts[name].append(values[name])
    return {name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()}
