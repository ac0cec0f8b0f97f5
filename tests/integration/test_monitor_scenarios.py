"""A small run of the detection-delay benchmark (bench/bench_monitor_scenarios.py): the
simulator's day generator, a champion fitted with the spec's Pipeline, the monitor's own
verdict per window."""

from __future__ import annotations

import argparse
import sys

from support import ROOT

sys.path.insert(0, str(ROOT / "bench"))

import _common
import bench_monitor_scenarios as scenarios


def test_detection_delay_and_false_alarms_over_scenarios():
    from mlops_pack.spec import load_spec

    _common.limit_threads(1)
    spec = load_spec(_common.SPEC)
    model, reference = scenarios.champion(spec, 6000)
    args = argparse.Namespace(seeds=1, windows=6, onset=3, rows=1000)
    cases = {c.name: c for c in scenarios.CASES}
    results = {
        name: scenarios.run_case(spec, model, reference, cases[name], args)
        for name in ("stable", "covariate 0.3", "random labels")
    }
    print(scenarios.table(list(results.values())))
    stable = results["stable"]
    assert stable["windows_before_onset"] == 6 and stable["false_alarms"] == 0
    assert stable["detected"] is None  # nothing to detect
    for name, kind in (("covariate 0.3", "data_drift"), ("random labels", "decay")):
        result = results[name]
        assert result["windows_before_onset"] == 3 and result["false_alarms"] == 0, result
        assert result["delays"] == [0], result  # the first window after the onset
        assert result["alarm_kinds_after_onset"].get(kind) == 3, result
    table = scenarios.table(list(results.values()))
    assert "| covariate 0.3 | 0 of 3 | 0.0% | 1 of 1 | 0, 0 | 100% |" in table
