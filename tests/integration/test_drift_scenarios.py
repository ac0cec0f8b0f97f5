"""The drift scenario matrix, small: the gate's verdicts follow the data, not a stale holdout.

Runs the matrix of ``bench/bench_drift_scenarios.py`` (its module docstring says which
parts are the library's and which are bypassed) with fewer seeds and smaller batches,
under the churn spec's default policy (``holdout.strategy: out_of_time``), plus the
concept-drift cell under the pinned ``split`` strategy for contrast. The bounds are loose
enough to hold for any seeds (the benchmark measures the rates over 20 seeds) and still
fail when the gate judges on the wrong rows.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_drift_scenarios.py"
SEEDS = range(101, 106)
ROWS = 20_000  # holdout 4,000 rows: every region and contract slice is over min_size
FRESH_ROWS = 20_000


def _matrix():
    loaded = importlib.util.spec_from_file_location("bench_drift_scenarios", BENCH)
    module = importlib.util.module_from_spec(loaded)
    sys.modules[loaded.name] = module  # dataclasses resolve their module by name
    loaded.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_gate_follows_drift_out_of_time_and_not_pinned():
    matrix = _matrix()
    started = time.perf_counter()
    concept = next(c for c in matrix.CELLS if c.name == "concept drift 1.0")
    plan = {"out_of_time": list(matrix.CELLS), "split": [concept]}
    outcomes = matrix.run_matrix(SEEDS, ROWS, FRESH_ROWS, plan)
    results = {(r.cell, r.strategy): r for r in matrix.summarize(outcomes)}
    print(f"\n{matrix.table(list(results.values()))}\n{time.perf_counter() - started:.0f} s")

    assert not [o.error for o in outcomes if o.error]
    runs = len(SEEDS)
    assert all(r.runs == runs for r in results.values())
    # The world did not move: a same-size retrain is not better, so it is not promoted.
    assert results["no drift", "out_of_time"].promoted <= 1
    # The scenario: the retrain on drifted data wins on the newest rows, every
    # time, and each promoted challenger is better on a large fresh sample too.
    drifted = results["concept drift 1.0", "out_of_time"]
    assert drifted.promoted == runs
    assert drifted.promoted_fresh_wins == runs
    assert drifted.median_improvement > 0.05
    # A challenger trained on 35% flipped labels never gets through.
    assert results["noisy labels 0.35 + concept 1.0", "out_of_time"].promoted == 0
    # Judged on a holdout pinned in month 1, the same better challenger is always rejected.
    pinned = results["concept drift 1.0", "split"]
    assert pinned.promoted == 0
    assert pinned.median_improvement < 0
