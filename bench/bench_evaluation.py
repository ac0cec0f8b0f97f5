"""Evaluation compute: two churn models scored on one holdout plus a paired bootstrap.

Two sklearn pipelines are built with ``mlops_pack.steps.train.build_pipeline(spec)`` and
fitted on generated churn data (month 1, and month 2 with 10% label noise, so the two
models differ); the holdout is a separate generated batch (month 3). Timed, in one run:

- library (after): one-pass scoring (``predict_proba`` of both models on the holdout,
  every spec metric with ``mlops_pack.steps.metrics.score``) plus
  ``mlops_pack.steps.metrics.paired_bootstrap`` over the spec's metrics, 1,000 resamples;
- before: the same predictions and the previous bootstrap algorithm (one dense
  (resamples x rows) count matrix per block, every metric a product with it and ROC AUC
  two sparse products and a cumulative sum per block), kept below as ``Before`` so the
  comparison survives later changes to the library;
- naive baseline: the same predictions, then a Python loop over resamples that draws row
  indices with numpy and calls sklearn.metrics (roc_auc_score, log_loss, accuracy_score,
  f1_score, brier_score_loss) for both models. By default only --naive-resamples of them
  are timed and the time is extrapolated linearly to --resamples (the loop's iterations
  are independent and identical in cost); pass --naive-resamples equal to --resamples to
  time the whole loop.

Exactness: the library's paired bootstrap is compared, resample by resample, with
scikit-learn's metrics given the same resample's counts as ``sample_weight``: for the
churn models' five classification metrics and for a regression holdout of the same size
(rmse, mae, r2).

    .venv/bin/python bench/bench_evaluation.py
    .venv/bin/python bench/bench_evaluation.py --holdout-rows 20000 --resamples 200
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common

THRESHOLD = 0.5  # the library's accuracy and f1 count p >= 0.5 as positive


def naive_resample(y: Any, preds: list[Any], rng: Any, n: int) -> list[dict[str, float]]:
    """One bootstrap resample scored with sklearn.metrics, for each model."""
    from sklearn.metrics import accuracy_score, brier_score_loss, f1_score, log_loss, roc_auc_score

    idx = rng.integers(0, n, size=n)
    yt = y[idx]
    out = []
    for p in preds:
        pp = p[idx]
        hard = (pp >= THRESHOLD).astype(int)
        out.append(
            {
                "roc_auc": roc_auc_score(yt, pp),
                "log_loss": log_loss(yt, pp, labels=[0, 1]),
                "accuracy": accuracy_score(yt, hard),
                "f1": f1_score(yt, hard, zero_division=0),
                "brier": brier_score_loss(yt, pp),
            }
        )
    return out


# The previous algorithm, the "before" of this benchmark ----------------------------------
#
# The paired bootstrap as it stood before draws were counted per (prediction, label) key
# (steps/metrics.py at commit 859a8af): each block of resamples is a dense (block x rows)
# float matrix of counts, every metric is prepared once per model and evaluated on that
# matrix, ROC AUC through two sparse products and a cumulative sum over distinct scores.

BEFORE_EPS = 1e-15  # that version's log-loss clip


def before_mean(per_row: Any) -> Any:
    return lambda w: (w @ per_row) / w.sum(axis=1)


def before_f1(y: Any, p: Any) -> Any:
    import numpy as np

    predicted = p >= THRESHOLD
    true_positive = (predicted & (y == 1)).astype(float)
    denominator = predicted.astype(float) + (y == 1).astype(float)  # 2TP + FP + FN

    def evaluate(w: Any) -> Any:
        tp, total = w @ true_positive, w @ denominator
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, 2 * tp / total, np.nan)

    return evaluate


def before_roc_auc(y: Any, p: Any) -> Any:
    import numpy as np
    from scipy import sparse

    _, group = np.unique(p, return_inverse=True)
    rows, groups = np.arange(len(p)), int(group.max()) + 1
    shape = (len(p), groups)
    negatives = sparse.csr_matrix(((y == 0).astype(float), (rows, group)), shape=shape).T.tocsr()
    positives = sparse.csr_matrix(((y == 1).astype(float), (rows, group)), shape=shape).T.tocsr()

    def evaluate(w: Any) -> Any:
        neg = (negatives @ w.T).T
        pos = (positives @ w.T).T
        below = np.cumsum(neg, axis=1) - 0.5 * neg
        numerator = (pos * below).sum(axis=1)
        denominator = pos.sum(axis=1) * neg.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denominator > 0, numerator / denominator, np.nan)

    return evaluate


def before_prepare(name: str, y: Any, p: Any) -> Any:
    import numpy as np

    if name == "roc_auc":
        return before_roc_auc(y, p)
    if name == "f1":
        return before_f1(y, p)
    if name == "log_loss":
        q = np.clip(p, BEFORE_EPS, 1 - BEFORE_EPS)
        return before_mean(-(y * np.log(q) + (1 - y) * np.log(1 - q)))
    if name == "brier":
        return before_mean((p - y) ** 2)
    if name == "accuracy":
        return before_mean(((p >= THRESHOLD) == (y == 1)).astype(float))
    if name == "mae":
        return before_mean(np.abs(p - y))
    if name == "rmse":
        mse = before_mean((p - y) ** 2)
        return lambda w: np.sqrt(mse(w))
    if name == "r2":
        return before_r2(y, p)
    raise ValueError(f"no previous implementation of {name}")


def before_r2(y: Any, p: Any) -> Any:
    def evaluate(w: Any) -> Any:
        total = w.sum(axis=1)
        mean_y = (w @ y) / total
        return 1 - (w @ ((p - y) ** 2)) / (w @ (y * y) - total * mean_y**2)

    return evaluate


def before_counts(n: int, resamples: int, seed: int, block: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    for start in range(0, resamples, block):
        size = min(block, resamples - start)
        draws = rng.integers(0, n, size=(size, n)) + (np.arange(size) * n)[:, None]
        yield np.bincount(draws.ravel(), minlength=size * n).reshape(size, n).astype(np.float64)


def before_paired_bootstrap(
    names: list[str], y: Any, champion: Any, challenger: Any, resamples: int, seed: int, higher: Any
) -> dict[str, Any]:
    import numpy as np

    block = max(1, min(100, 10_000_000 // max(1, len(y))))  # about 80 MB of counts a block
    prepared = {
        m: (before_prepare(m, y, challenger), before_prepare(m, y, champion)) for m in names
    }
    parts: dict[str, list[Any]] = {m: [] for m in names}
    for weights in before_counts(len(y), resamples, seed, block):
        for m, (new, old) in prepared.items():
            diff = new(weights) - old(weights)
            parts[m].append(diff if higher[m] else -diff)
    return {m: np.sort(np.concatenate(chunks)) for m, chunks in parts.items()}


# Exactness against scikit-learn ------------------------------------------------------------

SAMPLE_WEIGHTED = {
    "roc_auc": lambda y, p, w: _skm().roc_auc_score(y, p, sample_weight=w),
    "log_loss": lambda y, p, w: _skm().log_loss(y, p, sample_weight=w, labels=[0, 1]),
    "accuracy": lambda y, p, w: _skm().accuracy_score(y, p >= THRESHOLD, sample_weight=w),
    "f1": lambda y, p, w: _skm().f1_score(y, p >= THRESHOLD, sample_weight=w, zero_division=0),
    "brier": lambda y, p, w: _skm().brier_score_loss(y, p, sample_weight=w),
    "rmse": lambda y, p, w: _skm().mean_squared_error(y, p, sample_weight=w) ** 0.5,
    "mae": lambda y, p, w: _skm().mean_absolute_error(y, p, sample_weight=w),
    "r2": lambda y, p, w: _skm().r2_score(y, p, sample_weight=w),
}


def _skm() -> Any:
    from sklearn import metrics as skm

    return skm


def worst_difference(names: list[str], y: Any, old: Any, new: Any, seeds: range) -> dict:
    """Largest |library - sklearn| per metric, over one paired resample per seed.

    The library's improvement from ``paired_bootstrap`` against the same improvement
    computed by scikit-learn with the resample's counts as ``sample_weight``. One resample
    per call is always a single block, so ``bootstrap_counts`` makes the very same draws.
    """
    import numpy as np
    from mlops_pack.metric_catalog import metric_info
    from mlops_pack.steps import metrics

    higher = {m: metric_info(m).higher_is_better for m in names}
    worst = dict.fromkeys(names, 0.0)
    for seed in seeds:
        got = metrics.paired_bootstrap(names, y, old, new, 1, seed, higher)
        (w,) = next(metrics.bootstrap_counts(len(y), 1, seed, block=1))
        for m in names:
            sign = 1.0 if higher[m] else -1.0
            want = sign * (SAMPLE_WEIGHTED[m](y, new, w) - SAMPLE_WEIGHTED[m](y, old, w))
            worst[m] = max(worst[m], float(np.abs(got[m][0] - want)))
    return worst


def regression_holdout(rows: int, seed: int) -> tuple[Any, Any, Any]:
    """A regression target and two models' predictions of it (different error levels)."""
    import numpy as np

    rng = np.random.default_rng([seed, 1])
    y = rng.normal(150.0, 75.0, rows).round(1)  # diabetes-like scale, with ties
    return y, y + rng.normal(0, 55.0, rows), y + rng.normal(0, 50.0, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--train-rows",
        type=int,
        default=200_000,
        help="rows of each training batch (month 1 and month 2)",
    )
    parser.add_argument("--holdout-rows", type=int, default=100_000)
    parser.add_argument("--resamples", type=int, default=1_000)
    parser.add_argument(
        "--naive-resamples",
        type=int,
        default=50,
        help="naive resamples actually timed; extrapolated to --resamples",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="cap OpenMP/BLAS threads (default: the libraries' own choice)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="time the library's evaluation this many times; report the median",
    )
    parser.add_argument(
        "--before-repeat",
        type=int,
        default=1,
        help="time the previous bootstrap algorithm this many times (it is slow)",
    )
    parser.add_argument(
        "--exact-resamples",
        type=int,
        default=3,
        help="resamples compared one by one with sklearn's sample_weight metrics",
    )
    args = parser.parse_args()
    _common.limit_threads(args.threads)

    import numpy as np
    from mlops_pack.metric_catalog import metric_info
    from mlops_pack.spec import load_spec
    from mlops_pack.steps import metrics
    from mlops_pack.steps.dataset import read_frame
    from mlops_pack.steps.evaluate import labels, predict
    from mlops_pack.steps.train import build_pipeline

    _common.header("bench_evaluation: paired bootstrap after vs before vs a naive loop")
    print(f"   {_common.versions()}; threads: {args.threads or 'library defaults'}")
    spec = load_spec(_common.SPEC)
    names = list(spec.metrics)
    direction = {m: metric_info(m).higher_is_better for m in names}

    files = {
        "train month 1": _common.churn_file(args.train_rows, month=1),
        "train month 2 (10% label noise)": _common.churn_file(
            args.train_rows, month=2, label_noise=0.1
        ),
        "holdout month 3": _common.churn_file(args.holdout_rows, month=3),
    }
    frames = {k: read_frame(v, spec) for k, v in files.items()}
    holdout = frames.pop("holdout month 3")
    y = labels(spec, holdout)
    models = []
    for name, frame in frames.items():
        pipeline = build_pipeline(spec)
        started = time.perf_counter()
        pipeline.fit(frame, frame[spec.target])
        print(
            f"   fitted {spec.estimator.class_path.rsplit('.', 1)[1]} on {name}: "
            f"{len(frame):,} rows in {time.perf_counter() - started:.1f}s "
            "(not part of the timing)"
        )
        models.append(pipeline)
    champion, challenger = models

    # Library: one pass of predictions and point metrics, then the paired bootstrap.
    boot_key = f"paired bootstrap, {args.resamples} resamples"
    runs = []
    boot_cpu: list[float] = []  # CPU seconds of this process: steadier on a shared machine
    lib_meter = _common.Meter().__enter__()
    for _ in range(args.repeat):
        t: dict[str, float] = {}
        with _common.timer(t, "predict both models"):
            old = predict(spec, champion, holdout)
            new = predict(spec, challenger, holdout)
        with _common.timer(t, "point metrics (both models)"):
            point = {m: (metrics.score(m, y, old), metrics.score(m, y, new)) for m in names}
        cpu_started = time.process_time()
        with _common.timer(t, boot_key):
            boot = metrics.paired_bootstrap(
                names, y, old, new, args.resamples, args.seed, direction
            )
        boot_cpu.append(time.process_time() - cpu_started)
        runs.append(t)
    lib_meter.__exit__(None, None, None)
    totals = sorted(sum(t.values()) for t in runs)
    lib_total = totals[len(totals) // 2]
    lib_parts = {k: float(np.median([t[k] for t in runs])) for k in runs[0]}

    # Before: the previous algorithm on the same predictions, same resample count.
    before_runs, before_cpu = [], []
    before_meter = _common.Meter().__enter__()
    for _ in range(args.before_repeat):
        started, cpu_started = time.perf_counter(), time.process_time()
        boot_before = before_paired_bootstrap(
            names, y, old, new, args.resamples, args.seed, direction
        )
        before_runs.append(time.perf_counter() - started)
        before_cpu.append(time.process_time() - cpu_started)
    before_meter.__exit__(None, None, None)
    before_seconds = float(np.median(before_runs))

    # Naive: same predictions, then a Python loop of resamples with sklearn.metrics.
    naive: dict[str, float] = {}
    naive_meter = _common.Meter().__enter__()
    with _common.timer(naive, "predict both models"):
        old_n = predict(spec, champion, holdout)
        new_n = predict(spec, challenger, holdout)
    yi = y.astype(int)
    with _common.timer(naive, "point metrics (both models)"):
        naive_point = [naive_resample(yi, [old_n, new_n], _Identity(), len(yi))]
    rng = np.random.default_rng(args.seed)
    timed = min(args.naive_resamples, args.resamples)
    naive_draws = []
    started = time.perf_counter()
    for _ in range(timed):
        naive_draws.append(naive_resample(yi, [old_n, new_n], rng, len(yi)))
    loop = time.perf_counter() - started
    naive_meter.__exit__(None, None, None)
    per_resample = loop / timed
    naive["bootstrap loop (extrapolated)"] = per_resample * args.resamples
    naive_total = sum(naive.values())

    n = len(y)
    boot_lib = lib_parts[boot_key]
    boot_naive = naive["bootstrap loop (extrapolated)"]
    print(f"\n-- holdout {n:,} rows, metrics {names}, {args.resamples:,} paired resamples")
    print(f"   library, after (median of {args.repeat}): {lib_total:8.2f} s")
    for key, value in lib_parts.items():
        print(f"      {key:<40} {value:8.3f} s")
    print(
        f"   paired bootstrap, before (median of {args.before_repeat}): {before_seconds:8.2f} s"
        f"  runs {', '.join(f'{v:.2f}' for v in before_runs)}"
    )
    print(
        f"   naive loop            : {naive_total:8.2f} s "
        f"({timed} resamples timed in {loop:.2f} s = {per_resample * 1000:.1f} ms each, "
        f"x{args.resamples / timed:g})"
    )
    for key, value in naive.items():
        print(f"      {key:<40} {value:8.3f} s")
    print(f"   library runs: {lib_meter.note()}")
    print(f"   before runs : {before_meter.note()}")
    print(f"   naive run   : {naive_meter.note()}")
    print(
        f"   bootstrap alone: before/after {before_seconds:.2f} s / {boot_lib:.2f} s = "
        f"{before_seconds / boot_lib:.1f}x; naive/after {boot_naive:.2f} s / {boot_lib:.2f} s "
        f"= {boot_naive / boot_lib:.1f}x"
    )
    after_cpu, before_cpu_median = float(np.median(boot_cpu)), float(np.median(before_cpu))
    print(
        f"   bootstrap CPU time of this process: before {before_cpu_median:.2f} s, after "
        f"{after_cpu:.2f} s = {before_cpu_median / after_cpu:.1f}x (after runs "
        f"{', '.join(f'{v:.2f}' for v in boot_cpu)})"
    )
    print(f"   ratio naive/library (whole evaluation): {naive_total / lib_total:.1f}x")

    # Regression: the same resamples of a holdout of the same size, three metrics.
    y_reg, old_reg, new_reg = regression_holdout(n, args.seed)
    reg_names = ["rmse", "mae", "r2"]
    reg_direction = {"rmse": False, "mae": False, "r2": True}
    reg_after, reg_before = [], []
    for runs_list, function, repeat in (
        (reg_after, metrics.paired_bootstrap, args.repeat),
        (reg_before, before_paired_bootstrap, args.before_repeat),
    ):
        for _ in range(repeat):
            started = time.perf_counter()
            function(reg_names, y_reg, old_reg, new_reg, args.resamples, args.seed, reg_direction)
            runs_list.append(time.perf_counter() - started)
    reg_after_s, reg_before_s = float(np.median(reg_after)), float(np.median(reg_before))
    print(
        f"   regression ({', '.join(reg_names)}), {args.resamples:,} paired resamples: "
        f"before {reg_before_s:.2f} s, after {reg_after_s:.2f} s (median of {args.repeat}) "
        f"= {reg_before_s / reg_after_s:.1f}x"
    )

    # Agreement: point metrics with sklearn's, and the paired bootstrap resample by
    # resample with sklearn's sample_weight metrics, classification and regression.
    worst_point = max(abs(point[m][i] - naive_point[0][i][m]) for m in names for i in (0, 1))
    seeds = range(args.seed, args.seed + args.exact_resamples)
    exact_cls = worst_difference(names, y, old, new, seeds)
    exact_reg = worst_difference(["rmse", "mae", "r2"], y_reg, old_reg, new_reg, seeds)
    print(f"   agreement: point metrics max |library - sklearn| = {worst_point:.2e}")
    for label, worst in (("classification", exact_cls), ("regression", exact_reg)):
        listed = ", ".join(f"{m} {v:.1e}" for m, v in worst.items())
        print(
            f"   paired bootstrap vs sklearn(sample_weight), {label}, {n:,} rows, "
            f"{args.exact_resamples} resamples: max {max(worst.values()):.2e} ({listed})"
        )
    print(
        "   95% interval of the challenger's improvement: after and before "
        f"({args.resamples} resamples each, same seed), naive ({timed} resamples):"
    )
    # Equal seeds draw the same rows in both versions when their blocks split the stream
    # alike; then every resample agrees and this difference is rounding.
    before_after = {m: float(np.nanmax(np.abs(boot[m] - boot_before[m]))) for m in names}
    for m in names:
        sign = 1.0 if direction[m] else -1.0
        deltas = np.sort([sign * (d[1][m] - d[0][m]) for d in naive_draws])
        lo, hi = np.quantile(boot[m], [0.025, 0.975])
        blo, bhi = np.quantile(boot_before[m], [0.025, 0.975])
        nlo, nhi = np.quantile(deltas, [0.025, 0.975])
        print(
            f"      {m:<9} after [{lo:+.5f}, {hi:+.5f}]   before [{blo:+.5f}, {bhi:+.5f}]"
            f"   naive [{nlo:+.5f}, {nhi:+.5f}]"
        )
    listed = ", ".join(f"{m} {v:.1e}" for m, v in before_after.items())
    print(f"   max |after - before| over the sorted resamples: {listed}")

    path = _common.write_json_result(
        "bench_evaluation",
        {
            "machine": _common.machine(),
            "holdout_rows": n,
            "resamples": args.resamples,
            "library_seconds": lib_total,
            "library_parts": lib_parts,
            "library_runs": runs,
            "before_bootstrap_seconds": before_seconds,
            "before_bootstrap_runs": before_runs,
            "before_bootstrap_cpu_seconds": before_cpu,
            "after_bootstrap_cpu_seconds": boot_cpu,
            "naive_seconds": naive_total,
            "naive_parts": naive,
            "naive_timed_resamples": timed,
            "naive_seconds_per_resample": per_resample,
            "ratio": naive_total / lib_total,
            "bootstrap_ratio_before_after": before_seconds / boot_lib,
            "bootstrap_ratio_naive_after": boot_naive / boot_lib,
            "library_meter": lib_meter.as_dict(),
            "before_meter": before_meter.as_dict(),
            "naive_meter": naive_meter.as_dict(),
            "regression_bootstrap_seconds": {"after": reg_after, "before": reg_before},
            "max_abs_diff_point": worst_point,
            "max_abs_diff_bootstrap_classification": exact_cls,
            "max_abs_diff_bootstrap_regression": exact_reg,
            "max_abs_diff_after_before": before_after,
        },
    )
    print(f"   figures saved to {path}")


class _Identity:
    """Stands in for the RNG so ``naive_resample`` scores every row once, in order."""

    @staticmethod
    def integers(low: int, high: int, size: int) -> Any:
        import numpy as np

        return np.arange(low, high)[:size]


if __name__ == "__main__":
    main()
