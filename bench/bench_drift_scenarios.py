"""Drift scenario matrix: how often the gate promotes a retrained churn model, per drift.

Each replicate (one generator seed) trains a champion on a month-1 churn batch and, per
cell, a challenger on a later batch with the cell's drift; both are scored on the holdout
the spec's strategy gives and the gate decides with the policy of
``include/models/churn.yaml``. Cells (challenger batch; the champion is always month 1):

- no drift: month 2, same size;
- concept drift 1.0: month 6 with ``concept_drift=1.0`` (the issue's scenario);
- covariate drift 0.3: month 6 with ``covariate_drift=0.3``;
- label noise 0.35 under concept drift 1.0: month 6, 35% of its labels flipped.

Every cell runs under the spec's default strategy (``out_of_time``: the holdout is a
seeded, stratified 20% of the challenger's batch, the challenger trains on the rest) and,
for contrast, under the pinned ``split`` strategy (the holdout is 20% of the month-1
batch, carved once; the challenger trains on its whole batch).

Real, as the train and evaluate steps run them: the generator (``churn.frame``); the
holdout carve (``holdout.out_of_time``, ``holdout.split``); the removal of holdout rows
from training (``train.training_rows``, by the spec's key); the Pipeline
(``train.build_pipeline``) and its fit; predictions (``model_io.predict``); point metrics
(``metrics.score``); the paired bootstrap (``metrics.paired_bootstrap``, the spec's 1,000
resamples and seed); the slice scores (``evaluate._slices``); the evaluation record
(``EvaluationRecord``, built as ``steps/evaluate.py`` builds it) and the gate
(``gate.decide`` with the spec's whole gate policy).

Bypassed: MLflow (no registry, no artifact store, no skops round trip: the fitted
Pipeline is scored in memory, which gives the same predictions), data validation (the
generator's batches pass it) and the two budget checks (model size and single-row
latency are recorded as 0, so they pass; they judge the model's bytes and speed, not
its data: the churn model is about 1.5 MB as skops bytes against a 20 MB budget, and
latency is not measured here). The holdout hash is a hash of the rows in memory, not of
a Parquet file.

Each model is also scored on a large "fresh" sample: a clean (noise-free) month-7 batch
of the cell's drifted world, so the table says whether a promoted challenger is really
better where it will serve.

A cell whose runs raised reports FAILED, never a rate. The exit status is 1 when a run
failed or a cell misses the issue's target under the default strategy.

    .venv/bin/python bench/bench_drift_scenarios.py                  # 20 seeds, 30,000 rows
    .venv/bin/python bench/bench_drift_scenarios.py --seeds 5 --rows 20000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "include" / "models" / "churn.yaml"
RESULTS = ROOT / "bench" / "results"
STRATEGIES = ("out_of_time", "split")
FRESH_MONTH = 7  # the "large fresh sample" comes from a month no model trained on
PLACEHOLDER_SHA = "0" * 64  # artifacts are never written, so they have no hash


@dataclass(frozen=True)
class Cell:
    """A challenger batch, and the issue's target for the default strategy (if any)."""

    name: str
    month: int
    covariate_drift: float = 0.0
    concept_drift: float = 0.0
    label_noise: float = 0.0
    max_rate: float | None = None
    min_rate: float | None = None

    def batch(self, rows: int, seed: int, month: int | None = None, noise: bool = True):
        from mlops_pack.datagen import churn

        return churn.frame(
            churn.ChurnConfig(
                rows=rows,
                month=month or self.month,
                seed=seed,
                covariate_drift=self.covariate_drift,
                concept_drift=self.concept_drift,
                label_noise=self.label_noise if noise else 0.0,
            )
        )

    @property
    def world(self) -> tuple[float, float]:
        """What the fresh sample depends on: the drift, not the noise (it is the truth)."""
        return self.covariate_drift, self.concept_drift

    def target(self) -> str:
        if self.max_rate is not None:
            return f"<= {self.max_rate:.0%}"
        if self.min_rate is not None:
            return f">= {self.min_rate:.0%}"
        return "report"


CHAMPION = Cell("champion", month=1)  # every replicate's champion trains on this batch
CELLS = (
    Cell("no drift", month=2, max_rate=0.05),
    Cell("concept drift 1.0", month=6, concept_drift=1.0, min_rate=0.95),
    Cell("covariate drift 0.3", month=6, covariate_drift=0.3),
    Cell(
        "noisy labels 0.35 + concept 1.0",
        month=6,
        concept_drift=1.0,
        label_noise=0.35,
        max_rate=0.05,
    ),
)


@dataclass
class Outcome:
    """One gate decision (or the error that prevented it)."""

    cell: str
    strategy: str
    seed: int
    promoted: bool | None = None
    improvement: float | None = None  # primary metric, challenger over champion, holdout
    ci: tuple[float, float] | None = None  # the gate's bootstrap interval of it
    failed: list[str] = field(default_factory=list)
    summary: str = ""
    holdout_rows: int = 0
    train_rows: tuple[int, int] = (0, 0)  # champion, challenger
    fresh_auc: tuple[float, float] | None = None  # champion, challenger on a fresh sample
    error: str | None = None


def load_specs(strategies: Iterable[str]) -> dict[str, Any]:
    """The shipped churn spec, once per holdout strategy (parsed and validated as usual)."""
    import yaml
    from mlops_pack.spec import parse_spec

    specs = {}
    for strategy in strategies:
        raw = yaml.safe_load(SPEC.read_text(encoding="utf-8"))
        raw["holdout"]["strategy"] = strategy
        specs[strategy] = parse_spec(raw, str(SPEC))
    return specs


def _frame_sha256(frame: Any) -> str:
    import pandas as pd

    return hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy()).hexdigest()


def _model_score(version: str, metrics: dict[str, float], holdout_sha: str) -> Any:
    from mlops_pack.records import ModelScore

    return ModelScore(
        version=version,
        artifact_sha256=PLACEHOLDER_SHA,
        holdout_sha256=holdout_sha,
        metrics=metrics,
        size_bytes=0,
        latency_ms_p50=0.0,
        latency_ms_p95=0.0,
        batch_rows_per_s=0.0,
    )


def judge(spec: Any, champion: Any, challenger: Any, holdout: Any) -> tuple[Any, Any, Any]:
    """Score both models on ``holdout`` in one pass and let the real gate decide.

    Returns the evaluation record, the decision and the primary metric's sorted bootstrap
    improvements.
    """
    import numpy as np
    from mlops_pack.gate import decide
    from mlops_pack.metric_catalog import metric_info
    from mlops_pack.model_io import predict
    from mlops_pack.records import EvaluationRecord, HoldoutInfo, MetricDelta
    from mlops_pack.steps import metrics
    from mlops_pack.steps.evaluate import _slices, labels

    y = labels(spec, holdout)
    old, new = predict(spec, champion, holdout), predict(spec, challenger, holdout)
    direction = {m: metric_info(m).higher_is_better for m in spec.metrics}
    unc = spec.gate.uncertainty
    samples = metrics.paired_bootstrap(
        spec.metrics, y, old, new, unc.resamples, unc.seed, direction
    )
    old_values = {m: metrics.score(m, y, old) for m in spec.metrics}
    new_values = {m: metrics.score(m, y, new) for m in spec.metrics}
    deltas = []
    for name in spec.metrics:
        diff = new_values[name] - old_values[name]
        boot = samples[name]
        deltas.append(
            MetricDelta(
                metric=name,
                higher_is_better=direction[name],
                improvement=(diff if direction[name] else -diff) if np.isfinite(diff) else None,
                bootstrap=[float(v) for v in boot[np.isfinite(boot)].round(8)],
            )
        )
    digest = _frame_sha256(holdout)
    record = EvaluationRecord(
        model=spec.name,
        holdout_sha256=digest,
        holdout_rows=len(holdout),
        holdout=HoldoutInfo(strategy=spec.holdout.strategy, rows=len(holdout)),
        spec_sha256=spec.sha256(),
        champion=_model_score("1", old_values, digest),
        challenger=_model_score("2", new_values, digest),
        deltas=deltas,
        slices=_slices(spec, holdout, y, old, new),
        bootstrap_resamples=unc.resamples,
        bootstrap_seed=unc.seed,
    )
    return record, decide(record, spec.gate), samples[spec.gate.primary.metric]


def describe(outcome: Outcome, spec: Any, record: Any, decision: Any, boot: Any) -> None:
    """Copy what the matrix reports from one evaluation and its decision."""
    from mlops_pack.gate import quantile

    primary = spec.gate.primary.metric
    alpha = 1.0 - spec.gate.uncertainty.confidence
    ordered = [float(v) for v in boot]
    outcome.promoted = decision.verdict == "promote"
    outcome.improvement = next(d.improvement for d in record.deltas if d.metric == primary)
    outcome.ci = (quantile(ordered, alpha / 2), quantile(ordered, 1 - alpha / 2))
    outcome.failed = [c.name for c in decision.checks if c.verdict == "fail"]
    outcome.summary = decision.summary
    outcome.holdout_rows = record.holdout_rows


class Replicate:
    """One seed: the month-1 champion and, per strategy and cell, a judged challenger."""

    def __init__(self, seed: int, rows: int, fresh_rows: int) -> None:
        self.seed, self.rows, self.fresh_rows = seed, rows, fresh_rows
        self._fits: dict[str, Any] = {}
        self._fresh: dict[tuple[float, float], Any] = {}
        self._fresh_auc: dict[tuple[str, tuple[float, float]], float] = {}

    def fit(self, spec: Any, frame: Any) -> str:
        """Fit the spec's Pipeline on ``frame``; returns the fit's key (its rows' hash).

        Identical training rows give an identical model (the estimator's seed is fixed),
        so they are fitted once: the champion is the same under both strategies.
        """
        from mlops_pack.steps.train import build_pipeline

        key = _frame_sha256(frame)
        if key not in self._fits:
            pipeline = build_pipeline(spec)
            pipeline.fit(frame, frame[spec.target])
            self._fits[key] = pipeline
        return key

    def fresh_auc(self, spec: Any, cell: Cell, key: str) -> float:
        """ROC AUC of a fitted model on a large, clean sample of the cell's drifted world."""
        from mlops_pack.model_io import predict
        from mlops_pack.steps import metrics
        from mlops_pack.steps.evaluate import labels

        if cell.world not in self._fresh:
            self._fresh[cell.world] = cell.batch(self.fresh_rows, self.seed, FRESH_MONTH, False)
        sample = self._fresh[cell.world]
        if (key, cell.world) not in self._fresh_auc:
            scores = predict(spec, self._fits[key], sample)
            self._fresh_auc[key, cell.world] = metrics.score(
                "roc_auc", labels(spec, sample), scores
            )
        return self._fresh_auc[key, cell.world]

    def split(self, spec: Any, batch: Any, pinned: Any, name: str) -> tuple[Any, Any]:
        """(training rows, holdout) for a retrain on ``batch``, as the train step picks them.

        Out of time: the holdout is carved from ``batch`` itself. Pinned: it is ``pinned``
        (carved once from the month-1 batch) and the whole batch trains. Either way rows of
        the holdout are removed from training by the spec's key.
        """
        from mlops_pack.steps import holdout as holdouts
        from mlops_pack.steps.train import training_rows

        if spec.holdout.pinned:
            rest, held = batch, pinned
        else:
            rest, held, _ = holdouts.out_of_time(spec, batch, Path(name))
        return training_rows(spec, [rest], held)[0], held

    def run(self, specs: dict[str, Any], plan: dict[str, list[Cell]]) -> list[Outcome]:
        """Judge each strategy's cells; ``specs`` holds the churn spec per strategy."""
        from mlops_pack.steps import holdout as holdouts

        month1 = CHAMPION.batch(self.rows, self.seed)
        out = []
        for strategy, cells in plan.items():
            spec = specs[strategy]
            pinned = holdouts.split(spec, month1) if spec.holdout.pinned else None
            champion_rows = self.split(spec, month1, pinned, "month 1")[0]
            champion = self.fit(spec, champion_rows)
            for cell in cells:
                outcome = Outcome(cell.name, strategy, self.seed)
                try:
                    train_frame, held = self.split(
                        spec, cell.batch(self.rows, self.seed), pinned, cell.name
                    )
                    challenger = self.fit(spec, train_frame)
                    record, decision, boot = judge(
                        spec, self._fits[champion], self._fits[challenger], held
                    )
                    describe(outcome, spec, record, decision, boot)
                    outcome.train_rows = (len(champion_rows), len(train_frame))
                    if self.fresh_rows:
                        outcome.fresh_auc = (
                            self.fresh_auc(spec, cell, champion),
                            self.fresh_auc(spec, cell, challenger),
                        )
                except Exception as exc:  # a failed run is reported as such, never a rate
                    outcome.error = f"{type(exc).__name__}: {exc}"
                out.append(outcome)
        return out


def run_matrix(
    seeds: Iterable[int],
    rows: int,
    fresh_rows: int,
    plan: dict[str, list[Cell]],
    threads: int = 1,
    progress: Any = None,
) -> list[Outcome]:
    """The cells ``plan`` lists per strategy, for every seed; ``progress(seed, outcomes)``
    after each seed."""
    from mlops_pack.steps.train import build_pipeline
    from threadpoolctl import threadpool_limits

    strategies = list(plan)
    specs = load_specs(strategies)
    # Loads scikit-learn's OpenMP runtime first: the limit only reaches libraries already
    # loaded, and on a shared 2-core machine unlimited OpenMP threads spin-wait (measured:
    # one 24,000-row fit in 77 s instead of 3 s).
    build_pipeline(specs[strategies[0]])
    outcomes: list[Outcome] = []
    with threadpool_limits(limits=threads):
        for seed in seeds:
            try:
                got = Replicate(seed, rows, fresh_rows).run(specs, plan)
            except Exception as exc:  # e.g. the champion's own fit
                error = f"{type(exc).__name__}: {exc}"
                got = [Outcome(c.name, s, seed, error=error) for s, cs in plan.items() for c in cs]
            outcomes += got
            if progress:
                progress(seed, got)
    return outcomes


@dataclass
class CellResult:
    cell: str
    strategy: str
    target: str
    runs: int
    errors: list[str]
    promoted: int = 0
    rate: float | None = None  # None when a run failed: no rate is reported then
    rate_ci: tuple[float, float] | None = None
    median_improvement: float | None = None
    median_ci: tuple[float, float] | None = None
    median_fresh_auc: tuple[float, float] | None = None
    promoted_fresh_wins: int = 0  # promoted runs whose challenger wins on the fresh sample
    failing_checks: dict[str, int] = field(default_factory=dict)
    met: bool | None = None  # None: no target for this cell and strategy

    @property
    def failed(self) -> bool:
        return bool(self.errors)


def summarize(outcomes: list[Outcome], cells: Iterable[Cell] = CELLS) -> list[CellResult]:
    """Promotion rate and its exact (Clopper-Pearson) 95% interval per cell and strategy."""
    from scipy.stats import binomtest

    out = []
    strategies = list(dict.fromkeys(o.strategy for o in outcomes))
    for cell in cells:
        for strategy in strategies:
            runs = [o for o in outcomes if o.cell == cell.name and o.strategy == strategy]
            if not runs:
                continue
            targeted = strategy == "out_of_time" and cell.target() != "report"
            result = CellResult(
                cell.name,
                strategy,
                cell.target() if targeted else "report",
                len(runs),
                [f"seed {o.seed}: {o.error}" for o in runs if o.error],
            )
            out.append(result)
            if result.failed:
                result.met = False if targeted else None
                continue
            result.promoted = sum(bool(o.promoted) for o in runs)
            result.rate = result.promoted / len(runs)
            interval = binomtest(result.promoted, len(runs)).proportion_ci(0.95)
            result.rate_ci = (float(interval.low), float(interval.high))
            result.median_improvement = median(o.improvement for o in runs)
            result.median_ci = (median(o.ci[0] for o in runs), median(o.ci[1] for o in runs))
            fresh = [o.fresh_auc for o in runs if o.fresh_auc]
            if fresh:
                result.median_fresh_auc = (median(f[0] for f in fresh), median(f[1] for f in fresh))
            result.promoted_fresh_wins = sum(
                1 for o in runs if o.promoted and o.fresh_auc and o.fresh_auc[1] > o.fresh_auc[0]
            )
            result.failing_checks = dict(
                Counter(name for o in runs if not o.promoted for name in o.failed).most_common()
            )
            if targeted:
                result.met = _meets(cell, result, bool(fresh))
    return out


def _meets(cell: Cell, result: CellResult, fresh: bool) -> bool:
    if cell.max_rate is not None:
        return result.rate <= cell.max_rate
    # A promotion must also be right: the challenger wins on the fresh sample every time.
    wins = result.promoted_fresh_wins == result.promoted if fresh else True
    return result.rate >= cell.min_rate and wins


def table(results: list[CellResult]) -> str:
    head = (
        "cell",
        "strategy",
        "runs",
        "promoted",
        "rate [95% CI]",
        "target",
        "median dAUC",
        "median CI of dAUC",
        "fresh AUC old->new",
        "fresh wins",
        "rejected mostly by",
    )
    rows = [head]
    for r in results:
        if r.failed:
            rows.append(
                (r.cell, r.strategy, str(r.runs), "-", f"FAILED ({len(r.errors)} runs)", r.target)
                + ("",) * 5
            )
            continue
        fresh = (
            f"{r.median_fresh_auc[0]:.3f}->{r.median_fresh_auc[1]:.3f}"
            if r.median_fresh_auc
            else "-"
        )
        top = ", ".join(f"{name} ({n})" for name, n in list(r.failing_checks.items())[:2])
        verdict = "" if r.met is None else (" met" if r.met else " MISSED")
        rows.append(
            (
                r.cell,
                r.strategy,
                str(r.runs),
                str(r.promoted),
                f"{r.rate:.0%} [{r.rate_ci[0]:.0%}, {r.rate_ci[1]:.0%}]",
                r.target + verdict,
                f"{r.median_improvement:+.4f}",
                f"[{r.median_ci[0]:+.4f}, {r.median_ci[1]:+.4f}]",
                fresh,
                f"{r.promoted_fresh_wins}/{r.promoted}" if r.median_fresh_auc else "-",
                top or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _machine() -> str:
    try:
        load = " ".join(Path("/proc/loadavg").read_text(encoding="ascii").split()[:3])
    except OSError:
        load = "?"
    return (
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load average {load}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=20, help="replicates per cell")
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--rows", type=int, default=30_000, help="rows of every batch")
    parser.add_argument(
        "--fresh-rows", type=int, default=50_000, help="rows of the fresh sample (0: none)"
    )
    parser.add_argument("--threads", type=int, default=1, help="OpenMP/BLAS threads")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    args = parser.parse_args()

    import sklearn

    seeds = range(args.first_seed, args.first_seed + args.seeds)
    print("== bench_drift_scenarios: gate promotion rates under drift, churn spec as shipped")
    print(f"   {_machine()} at start; scikit-learn {sklearn.__version__}")
    print(
        f"   {args.seeds} seeds x {len(CELLS)} cells x strategies {args.strategies}; "
        f"{args.rows:,} rows per batch, fresh samples of {args.fresh_rows:,} rows "
        f"(month {FRESH_MONTH}); {args.threads} thread(s)"
    )
    started, cpu_started = time.perf_counter(), time.process_time()

    def progress(seed: int, got: list[Outcome]) -> None:
        marks = " ".join("E" if o.error else ("P" if o.promoted else ".") for o in got)
        print(f"   seed {seed:>3}: {marks}  ({time.perf_counter() - started:.0f} s)", flush=True)

    plan = {strategy: list(CELLS) for strategy in args.strategies}
    outcomes = run_matrix(seeds, args.rows, args.fresh_rows, plan, args.threads, progress)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    results = summarize(outcomes)
    spec = load_specs(["out_of_time"])["out_of_time"]
    gate = spec.gate
    print(
        f"\n-- gate: primary {gate.primary.metric} {gate.primary.mode} margin "
        f"{gate.primary.margin}, {gate.uncertainty.confidence:.0%} bootstrap CI lower bound "
        f"({gate.uncertainty.resamples} paired resamples); guardrails "
        + ", ".join(f"{g.metric} tol {g.tolerance}" for g in gate.guardrails)
        + f"; floors {gate.floors}; slices {gate.slices.columns} tol {gate.slices.tolerance} "
        f"min {gate.slices.min_size}; holdout fraction {spec.holdout.fraction}"
    )
    print(table(results))
    for r in results:
        for error in r.errors[:3]:
            print(f"   FAILED {r.cell} / {r.strategy}: {error}")
    print(
        f"   run time {seconds:.0f} s wall, {cpu:.0f} s CPU of this process "
        f"({cpu / max(1, args.seeds):.1f} s CPU per seed); {_machine()} at end"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "bench_drift_scenarios.json"
    payload = {
        "args": vars(args),
        "seconds": seconds,
        "cpu_seconds": cpu,
        "results": [asdict(r) for r in results],
        "outcomes": [asdict(o) for o in outcomes],
    }
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"   figures saved to {path}")
    missed = [r for r in results if r.met is False or r.failed]
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
