"""Detection delay and false alarms of the monitor over the traffic simulator's scenarios.

A champion is fitted on month-1 churn rows with the spec's Pipeline (80%; its reference
profile is built from those rows and its scores on the other 20%, as ``train`` builds it).
Then, per scenario and seed, a run of windows is drawn with the simulator's own day
generator (``datagen.traffic.day_rows``: one window is one simulated day of
``--rows`` rows, the scenario's knobs on from the onset window), scored by the champion
and judged by the monitor's own code (``monitor.Accumulator`` and ``monitor.assess``: the
drift rule, prediction drift and decay with the gate's bootstrap) with the spec's
monitoring policy. Every window's labels are taken as arrived (the monitor judges a window
once its labels are in); staleness is off (age 0).

Bypassed: the model server, the log files and the label feed (the rows go to the
accumulator directly, as the feed's reader would hand them over), MLflow. The log
reading is measured in ``bench_monitoring.py``; the end-to-end loop in the tests.

Per scenario: false alarms before the onset (any status but healthy) and their rate;
the delay to the first alarm after the onset in windows (0: the first window after the
onset), its median and worst over the seeds, how many seeds detected it at all; the
share of windows after the onset with an alarm, and the alarm kinds seen.

    .venv/bin/python bench/bench_monitor_scenarios.py                     # 5 seeds
    .venv/bin/python bench/bench_monitor_scenarios.py --seeds 2 --windows 12 --onset 4
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common

ALARM_STATUSES = ("drift", "decay", "stale")


@dataclass(frozen=True)
class Case:
    name: str
    knobs: dict[str, float] = field(default_factory=dict)

    @property
    def drifts(self) -> bool:
        return any(self.knobs.values())


CASES = (
    Case("stable"),
    Case("covariate 0.1", {"covariate_drift": 0.1}),
    Case("covariate 0.3", {"covariate_drift": 0.3}),
    Case("concept 1.0", {"concept_drift": 1.0}),
    Case("concept 1.0 + 15% noisy labels", {"concept_drift": 1.0, "label_noise": 0.15}),
    Case("random labels", {"label_noise": 0.5}),
)


def champion(spec: Any, rows: int) -> tuple[Any, dict[str, Any]]:
    """The spec's Pipeline fitted on 80% of a month-1 batch, and its reference profile."""
    import numpy as np
    from mlops_pack.datagen import churn
    from mlops_pack.model_io import predict
    from mlops_pack.steps import profile
    from mlops_pack.steps.train import build_pipeline

    frame = churn.frame(churn.ChurnConfig(rows=rows, month=1, seed=7))
    cut = int(len(frame) * 0.8)
    train, holdout = frame.iloc[:cut], frame.iloc[cut:]
    model = build_pipeline(spec).fit(train, train[spec.target])
    labels = (holdout[spec.target] == spec.positive_class).to_numpy(dtype=np.float64)
    return model, profile.build(spec, train, labels, predict(spec, model, holdout))


def judge_window(spec: Any, model: Any, reference: dict[str, Any], frame: Any) -> dict:
    """One window through the monitor's accumulator and verdict."""
    from mlops_pack.model_io import predict
    from mlops_pack.steps import monitor, monitor_feed

    names = [c.name for c in spec.features()]
    body = frame[names].astype(object)
    body = body.where(body.notna(), None)  # as the server logs it: NaN as null
    scores = predict(spec, model, frame).tolist()
    labels = (frame[spec.target] == spec.positive_class).astype(float).tolist()
    acc = monitor.Accumulator(reference)
    acc.add(
        monitor_feed.Chunk(
            inputs={n: body[n].tolist() for n in names},
            scores=scores,
            labelled=list(zip(scores, labels, strict=True)),
            flags={},
            rows=len(frame),
            requests=1,
        )
    )
    return monitor.assess(spec, acc, reference, age_days=0.0)


def run_case(spec, model, reference, case: Case, args) -> dict[str, Any]:
    from mlops_pack.datagen import traffic

    false_alarms, before, after, fired_after = 0, 0, 0, 0
    delays: list[int | None] = []
    kinds: Counter[str] = Counter()
    onset = args.onset if case.drifts else args.windows
    for seed in range(1, args.seeds + 1):
        scenario = traffic.Scenario(
            days=args.windows, rows_per_day=args.rows, onset_day=onset, seed=seed, **case.knobs
        )
        delay = None
        for window in range(args.windows):
            verdict = judge_window(spec, model, reference, traffic.day_rows(scenario, window))
            alarm = verdict["status"] != "healthy"
            if window < onset:
                before += 1
                false_alarms += alarm
                continue
            after += 1
            fired_after += alarm
            kinds.update(a["kind"] for a in verdict["alarms"])
            if alarm and delay is None:
                delay = window - onset
        delays.append(delay)
    found = [d for d in delays if d is not None]
    return {
        "scenario": case.name,
        "knobs": case.knobs,
        "windows_before_onset": before,
        "false_alarms": false_alarms,
        "false_alarm_rate": false_alarms / before if before else None,
        "seeds": args.seeds,
        "detected": len(found) if case.drifts else None,
        "delays": delays if case.drifts else None,
        "median_delay": median(found) if found else None,
        "worst_delay": max(found) if found and len(found) == len(delays) else None,
        "alarm_rate_after_onset": fired_after / after if after else None,
        "alarm_kinds_after_onset": dict(kinds),
    }


def _cell(value: Any, fmt: str = "{}") -> str:
    return "n/a" if value is None else fmt.format(value)


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| scenario | false alarms before onset | rate | detected | windows to detection "
        "(median, worst) | alarms after onset | alarm kinds after onset |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        worst = "never" if r["detected"] is not None and r["worst_delay"] is None else None
        delay = (
            "n/a"
            if r["detected"] is None
            else f"{_cell(r['median_delay'])}, {worst or _cell(r['worst_delay'])}"
        )
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(r["alarm_kinds_after_onset"].items()))
        detected = "n/a" if r["detected"] is None else f"{r['detected']} of {r['seeds']}"
        lines.append(
            f"| {r['scenario']} | {r['false_alarms']} of {r['windows_before_onset']} | "
            f"{_cell(r['false_alarm_rate'], '{:.1%}')} | "
            f"{detected} | "
            f"{delay} | {_cell(r['alarm_rate_after_onset'], '{:.0%}')} | {kinds or '-'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--windows", type=int, default=30, help="windows per seed")
    parser.add_argument("--onset", type=int, default=10, help="first drifted window")
    parser.add_argument("--rows", type=int, default=1000, help="rows per window")
    parser.add_argument("--train-rows", type=int, default=10_000)
    parser.add_argument("--only", action="append", help="scenario name (repeatable)")
    parser.add_argument("--threads", type=int, default=1, help="OpenMP threads (0: default)")
    args = parser.parse_args(argv)
    _common.limit_threads(args.threads)
    from mlops_pack.spec import load_spec

    _common.header(
        f"monitor scenarios: {args.seeds} seeds x {args.windows} windows of {args.rows} rows, "
        f"onset at window {args.onset}"
    )
    spec = load_spec(_common.SPEC)
    started = time.perf_counter()
    model, reference = champion(spec, args.train_rows)
    results = []
    for case in CASES:
        if args.only and case.name not in args.only:
            continue
        case_started = time.perf_counter()
        results.append(run_case(spec, model, reference, case, args))
        print(f"{case.name}: {time.perf_counter() - case_started:.1f}s", flush=True)
    print(table(results))
    print(f"total {time.perf_counter() - started:.1f}s")
    policy = spec.monitoring_policy()
    _common.write_json_result(
        "bench_monitor_scenarios",
        {"args": vars(args), "results": results, "machine": _common.machine(),
         "policy": policy.model_dump(mode="json")},
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
