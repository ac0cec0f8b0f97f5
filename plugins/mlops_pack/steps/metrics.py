"""Metrics computed with per-row weights, and the paired bootstrap over them.

A bootstrap resample is a vector of counts (how often each holdout row was drawn). Each
metric can be *prepared* once for (labels, predictions) and then evaluated on a whole
(resamples x rows) count matrix; that is the extension point custom metrics implement.
The built-in metrics take a faster path in ``paired_bootstrap``: a compiled loop
(``bootstrap_kernel``) counts each resample's draws once and reads the counts in each
model's score order, so mean-type metrics are dot products with a per-row table and ROC
AUC a running sum, in exact integers; numpy draws the next block on a second thread
meanwhile. Champion and challenger are always scored on exactly the same drawn rows.
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


# Each mean-type metric, defined once: name -> (columns of per-row (or per-key) values
# from (label, prediction), finish(weighted sums, total weight) -> values). The compiled
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
        yield _histograms(draws, n).astype(np.float64)


def _histograms(draws: np.ndarray, bins: int) -> np.ndarray:
    """Per resample, how many draws fell on each row."""
    # One bincount per resample: its output stays in the CPU cache, which one bincount
    # over the whole block with offset keys does not (measured 1.4x slower at 100k rows).
    out = np.empty((draws.shape[0], bins), dtype=np.int64)
    for row, values in zip(out, draws, strict=True):
        row[:] = np.bincount(values, minlength=bins)
    return out


class _Prepared:
    """What the compiled kernel needs of each model, stacked over the models.

    Rows are laid out per model in (label, score) order, negatives first, so ROC AUC is
    a running sum over the negatives read at two indexes per positive (negatives strictly
    below it, and below or tied: ties count one half, as in scikit-learn).
    """

    def __init__(self, names: list[str], y: np.ndarray, predictions: list[np.ndarray]) -> None:
        n, models = len(y), len(predictions)
        self.names = names
        self.auc = "roc_auc" in names
        self.slices: dict[str, slice] = {}
        for name in names:
            if name in _SUMS:
                width = len(_SUMS[name][0](y[:1], predictions[0][:1]))
                start = sum(part.stop - part.start for part in self.slices.values())
                self.slices[name] = slice(start, start + width)
        columns = sum(part.stop - part.start for part in self.slices.values())
        index = np.int32 if n < 2**31 else np.int64
        self.orders = np.empty((models, n), dtype=index)
        self.tables = np.empty((models, columns, n))
        self.below = np.zeros((models, n), dtype=np.int64)
        self.upto = np.zeros((models, n), dtype=np.int64)
        positive = y == 1
        self.negatives = np.full(models, n - int(np.count_nonzero(positive)), dtype=np.int64)
        for m, p in enumerate(predictions):
            order = np.lexsort((p, positive))
            self.orders[m] = order
            sorted_y, sorted_p = y[order], p[order]
            for name, part in self.slices.items():
                self.tables[m, part] = np.vstack(_SUMS[name][0](sorted_y, sorted_p))
            if self.auc:
                split = int(self.negatives[m])
                negative_p, positive_p = sorted_p[:split], sorted_p[split:]
                self.below[m, : n - split] = np.searchsorted(negative_p, positive_p, "left")
                self.upto[m, : n - split] = np.searchsorted(negative_p, positive_p, "right")

    def score(self, draws: np.ndarray) -> list[dict[str, np.ndarray]]:
        """Every built-in metric of each model for each resample of the block."""
        from mlops_pack.steps.bootstrap_kernel import score_block

        models, resamples, n = len(self.orders), draws.shape[0], draws.shape[1]
        sums = np.empty((models, resamples, self.tables.shape[1]))
        auc_parts = np.zeros((models, resamples, 3), dtype=np.int64)
        args = (self.orders, self.negatives, self.below, self.upto, self.tables, self.auc)
        # One byte per row keeps the counts in cache; a row drawn 256 times or more (never
        # seen at any realistic size, but possible) makes the kernel say so, and the block
        # is counted again in 32 bits.
        if not score_block(draws, np.empty(n, np.uint8), *args, sums, auc_parts):
            score_block(draws, np.empty(n, np.int32), *args, sums, auc_parts)
        totals = np.full(resamples, float(n))
        out = []
        for m in range(models):
            values = {
                name: _SUMS[name][1](sums[m][:, part], totals) for name, part in self.slices.items()
            }
            if self.auc:
                numerator2, positives, negatives = auc_parts[m].T
                values["roc_auc"] = _ratio(
                    numerator2.astype(np.float64), 2.0 * positives * negatives.astype(np.float64)
                )
            out.append(values)
        return out


def _resampled(
    names: list[str], y: np.ndarray, predictions: list[np.ndarray], resamples: int, seed: int
) -> Iterator[list[dict[str, np.ndarray]]]:
    """Per block of resamples, every metric of each model, all models on the same draws.

    Built-in metrics go through the compiled kernel; custom metrics get the
    (resamples x rows) count matrix their ``prepare`` expects.
    """
    n = len(y)
    # Small blocks keep a block's draws in the CPU cache: measured fastest at 4 to 8
    # resamples of 100k rows (docs/benchmarks.md, evaluation).
    block = max(1, min(100, 600_000 // max(1, n)))
    builtin = [name for name in names if name in _SUMS or name == "roc_auc"]
    custom = [name for name in names if name not in builtin]
    prepared = _Prepared(builtin, y, predictions) if builtin else None
    functions = [{name: implementation(name)(y, p) for name in custom} for p in predictions]
    # Two cores: while this thread scores a block, the pool draws the next one (numpy
    # draws without the GIL; the kernel releases it too). One draw job at a time keeps
    # the generator's sequence, so the resamples are those of ``bootstrap_counts``.
    blocks = bootstrap_draws(n, resamples, seed, block)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bootstrap-draws") as pool:
        upcoming = pool.submit(next, blocks, None)
        while (draws := upcoming.result()) is not None:
            upcoming = pool.submit(next, blocks, None)
            results = prepared.score(draws) if prepared else [{} for _ in predictions]
            if custom:
                weights = _histograms(draws, n).astype(np.float64)
                for values, prepared_custom in zip(results, functions, strict=True):
                    values.update({name: f(weights) for name, f in prepared_custom.items()})
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
