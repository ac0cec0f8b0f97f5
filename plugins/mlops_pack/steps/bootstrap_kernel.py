"""The bootstrap's inner loop, compiled: count one block of draws, score every model.

For each resample the draws are counted per holdout row once (one byte per row, so the
counts stay in the CPU cache), then, per model, the counts are read in the model's
(label, score) order: mean-type metrics are dot products of those counts with the
model's per-row table, ROC AUC one running sum over the negatives plus one pass over
the positives, in exact integers. numpy would need a full (resamples x rows) matrix at
each of those stages; the compiled loop keeps one row of it.

Compiled with numba on first use and cached on disk (``NUMBA_CACHE_DIR``; the task image
ships a cache built for its own code and seeds it into the container's tmpfs).
"""

from __future__ import annotations

import numba
import numpy as np

from mlops_pack.steps.cache_seed import seed_cache

# Where the task image keeps the kernel compiled at build time (read-only at run time);
# numba needs a writable cache directory, so the files are copied to NUMBA_CACHE_DIR once.
SEED_ENV = "MLOPS_PACK_NUMBA_CACHE_SEED"

seed_cache(SEED_ENV, "NUMBA_CACHE_DIR")


# Reassociation lets the dot products use SIMD lanes; the sums then differ from a strict
# left-to-right sum only in rounding (about 1e-15 relative), which the exactness tests
# bound against scikit-learn.
@numba.njit(nogil=True, cache=True, boundscheck=False, fastmath={"reassoc", "contract"})
def score_block(draws, counts, orders, negatives, below, upto, tables, auc, sums, auc_parts):
    """Score one block of resamples for every model; False if a count overflowed.

    draws      (resamples, n) drawn row indices
    counts     (n,) scratch, zeroed here; uint8 unless the caller retries wider
    orders     (models, n) row indices in (label, score) order: negatives first
    negatives  (models,) number of negative rows
    below/upto (models, n) per positive (in order): negatives scoring strictly below it,
               and below or tied; indexes into the running sum (leading zero)
    tables     (models, columns, n) per-row values of the mean-type metrics, in order
    auc        whether to compute ROC AUC (classification)
    sums       out (models, resamples, columns): weighted sums of the table's columns
    auc_parts  out (models, resamples, 3): 2 x Mann-Whitney numerator, positives, negatives
    """
    resamples, n = draws.shape
    models, columns = tables.shape[0], tables.shape[1]
    drawn = np.empty(n, np.int32)
    running = np.empty(n + 1, np.int64)
    for r in range(resamples):
        counts[:] = 0
        row = draws[r]
        for j in range(n):
            counts[row[j]] += 1
        for m in range(models):
            order = orders[m]
            total = 0
            for i in range(n):
                drawn[i] = counts[order[i]]
                total += drawn[i]
            if total != n:  # a row drawn more often than the counts' type holds
                return False
            for c in range(columns):
                column = tables[m, c]
                acc = 0.0
                for i in range(n):
                    acc += drawn[i] * column[i]
                sums[m, r, c] = acc
            if auc:
                split = negatives[m]
                running[0] = 0
                for i in range(split):
                    running[i + 1] = running[i] + drawn[i]
                low, high = below[m], upto[m]
                numerator2 = 0
                positives = 0
                for j in range(n - split):
                    weight = drawn[split + j]
                    positives += weight
                    numerator2 += weight * (running[low[j]] + running[high[j]])
                auc_parts[m, r, 0] = numerator2
                auc_parts[m, r, 1] = positives
                auc_parts[m, r, 2] = running[split]
    return True


def warm() -> None:
    """Compile the kernel for the types the bootstrap passes (the task image runs this)."""
    from mlops_pack.steps.metrics import paired_bootstrap

    rng = np.random.default_rng(0)
    y = (rng.random(64) < 0.5).astype(float)
    old, new = rng.random(64), rng.random(64)
    paired_bootstrap(["roc_auc", "brier"], y, old, new, 4, 0, {"roc_auc": True, "brier": False})


if __name__ == "__main__":
    warm()
