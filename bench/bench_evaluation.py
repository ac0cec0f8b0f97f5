"""Evaluation compute: two churn models scored on one holdout plus a paired bootstrap.

Two sklearn pipelines are built with ``mlops_pack.steps.train.build_pipeline(spec)`` and
fitted on generated churn data (month 1, and month 2 with 10% label noise, so the two
models differ); the holdout is a separate generated batch (month 3). Timed:

- library: one-pass scoring (``predict_proba`` of both models on the holdout, every spec
  metric with ``mlops_pack.steps.metrics.score``) plus
  ``mlops_pack.steps.metrics.paired_bootstrap`` over the spec's metrics, 1,000 resamples;
- naive baseline, same run: the same predictions, then a Python loop over resamples that
  draws row indices with numpy and calls sklearn.metrics (roc_auc_score, log_loss,
  accuracy_score, f1_score, brier_score_loss) for both models. By default only
  --naive-resamples of them are timed and the time is extrapolated linearly to
  --resamples (the loop's iterations are independent and identical in cost); pass
  --naive-resamples equal to --resamples to time the whole loop.

A correctness check compares the library's weighted metrics on its own bootstrap count
vectors with sklearn's metrics given the same counts as ``sample_weight``.

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


def sklearn_weighted(name: str, y: Any, p: Any, w: Any) -> float:
    from sklearn.metrics import accuracy_score, brier_score_loss, f1_score, log_loss, roc_auc_score

    hard = (p >= THRESHOLD).astype(int)
    funcs = {
        "roc_auc": lambda: roc_auc_score(y, p, sample_weight=w),
        "log_loss": lambda: log_loss(y, p, sample_weight=w, labels=[0, 1]),
        "accuracy": lambda: accuracy_score(y, hard, sample_weight=w),
        "f1": lambda: f1_score(y, hard, sample_weight=w, zero_division=0),
        "brier": lambda: brier_score_loss(y, p, sample_weight=w),
    }
    return float(funcs[name]())


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
    args = parser.parse_args()
    _common.limit_threads(args.threads)

    import numpy as np
    from mlops_pack.metric_catalog import metric_info
    from mlops_pack.spec import load_spec
    from mlops_pack.steps import metrics
    from mlops_pack.steps.dataset import read_frame
    from mlops_pack.steps.evaluate import labels, predict
    from mlops_pack.steps.train import build_pipeline

    _common.header("bench_evaluation: one-pass scoring + paired bootstrap vs a naive loop")
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
    runs = []
    lib_meter = _common.Meter().__enter__()
    for _ in range(args.repeat):
        t: dict[str, float] = {}
        with _common.timer(t, "predict both models"):
            old = predict(spec, champion, holdout)
            new = predict(spec, challenger, holdout)
        with _common.timer(t, "point metrics (both models)"):
            point = {m: (metrics.score(m, y, old), metrics.score(m, y, new)) for m in names}
        with _common.timer(t, f"paired bootstrap, {args.resamples} resamples"):
            boot = metrics.paired_bootstrap(
                names, y, old, new, args.resamples, args.seed, direction
            )
        runs.append(t)
    lib_meter.__exit__(None, None, None)
    totals = sorted(sum(t.values()) for t in runs)
    lib_total = totals[len(totals) // 2]
    lib_parts = {k: float(np.median([t[k] for t in runs])) for k in runs[0]}

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
    print(f"\n-- holdout {n:,} rows, metrics {names}, {args.resamples:,} paired resamples")
    print(f"   library (median of {args.repeat}): {lib_total:8.2f} s")
    for key, value in lib_parts.items():
        print(f"      {key:<40} {value:8.3f} s")
    print(
        f"   naive loop            : {naive_total:8.2f} s "
        f"({timed} resamples timed in {loop:.2f} s = {per_resample * 1000:.1f} ms each, "
        f"x{args.resamples / timed:g})"
    )
    for key, value in naive.items():
        print(f"      {key:<40} {value:8.3f} s")
    print(f"   library runs: {lib_meter.note()}")
    print(f"   naive run   : {naive_meter.note()}")
    boot_lib = lib_parts[f"paired bootstrap, {args.resamples} resamples"]
    boot_naive = naive["bootstrap loop (extrapolated)"]
    print(
        f"   ratio naive/library   : {naive_total / lib_total:.1f}x "
        f"(bootstrap alone: {boot_naive:.2f} s / {boot_lib:.2f} s = "
        f"{boot_naive / boot_lib:.1f}x)"
    )

    # Agreement: point metrics, and the library's weighted metrics vs sklearn's weights.
    worst_point = max(abs(point[m][i] - naive_point[0][i][m]) for m in names for i in (0, 1))
    counts = next(metrics.bootstrap_counts(n, 3, args.seed, block=3))
    worst_weighted = 0.0
    for m in names:
        lib_values = metrics.IMPLEMENTATIONS[m](y, new)(counts)
        for row in range(len(counts)):
            ref = sklearn_weighted(m, yi, new, counts[row])
            worst_weighted = max(worst_weighted, abs(lib_values[row] - ref))
    print(
        f"   agreement: point metrics max |library - sklearn| = {worst_point:.2e}; "
        f"weighted metrics on 3 library resamples vs sklearn(sample_weight) = "
        f"{worst_weighted:.2e}"
    )
    print(
        "   95% interval of the challenger's improvement (library, "
        f"{args.resamples} resamples) and the naive loop's ({timed} resamples):"
    )
    for m in names:
        sign = 1.0 if direction[m] else -1.0
        deltas = np.sort([sign * (d[1][m] - d[0][m]) for d in naive_draws])
        lo, hi = np.quantile(boot[m], [0.025, 0.975])
        nlo, nhi = np.quantile(deltas, [0.025, 0.975])
        print(f"      {m:<9} library [{lo:+.5f}, {hi:+.5f}]   naive [{nlo:+.5f}, {nhi:+.5f}]")

    path = _common.write_json_result(
        "bench_evaluation",
        {
            "machine": _common.machine(),
            "holdout_rows": n,
            "resamples": args.resamples,
            "library_seconds": lib_total,
            "library_parts": lib_parts,
            "library_runs": runs,
            "naive_seconds": naive_total,
            "naive_parts": naive,
            "naive_timed_resamples": timed,
            "naive_seconds_per_resample": per_resample,
            "ratio": naive_total / lib_total,
            "library_meter": lib_meter.as_dict(),
            "naive_meter": naive_meter.as_dict(),
            "max_abs_diff_point": worst_point,
            "max_abs_diff_weighted": worst_weighted,
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
