"""Drift computation over 1M logged predictions: the monitor step vs Evidently.

Data: a reference of ``--reference-rows`` churn rows (month 1) and a current window of
``--rows`` rows with covariate drift 0.3, both from the pack's generator. The current
rows are written as the model server writes its prediction logs (one JSON line per
request of 100 rows, columnar ``inputs``; scores are uniform random numbers, as only the
features are compared here), under ``bench/results/monitoring/``.

Measured, each in a fresh interpreter (peak RSS is that process's):
- ours: the monitor's own code path, reading the log files line by line into chunks and
  accumulating histograms in the reference profile's bins (``monitor_feed.read_window``,
  ``monitor.Accumulator``), then the drift rule (PSI + Holm-corrected chi-square) over
  the ten features. Reading the logs is included.
- Evidently's ``DataDriftPreset`` (its default per-column tests) on the same rows, given
  as pandas DataFrames read from Parquet; its time is ``Report.run`` alone (reading the
  Parquet files excluded), its memory includes the DataFrames it needs.
Evidently is installed only in a separate venv under ``bench/results/`` (created by
this script with pip, never in the project's dependencies). A failed run reports the
failure, never a figure.

Also measured: what logging the inputs costs the model server per request (building
and serialising the log line, with vs without ``inputs``), for 1-row and 100-row requests.

    .venv/bin/python bench/bench_monitoring.py
    .venv/bin/python bench/bench_monitoring.py --rows 200000   # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common

WORK = _common.RESULTS / "monitoring"
EVIDENTLY_VENV = _common.RESULTS / "evidently-venv"
# Evidently 0.7.23 imports a pandas internal that pandas 3 removed: its venv keeps pandas 2.
EVIDENTLY = ("evidently==0.7.23", "pandas<3", "pyarrow")
ROWS_PER_REQUEST = 100
FEATURES = [
    "tenure_months", "monthly_charges", "total_charges", "support_calls", "age",
    "contract", "plan", "payment_method", "paperless_billing", "region",
]  # fmt: skip


# Child side ---------------------------------------------------------------------------


def _peak_mb() -> float:
    """This process's own peak RSS (VmHWM). ru_maxrss from wait4 is not used: Linux
    carries the forking parent's peak over the exec, so a parent that generated the data
    would make every child look as large as itself."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child_ours(work: Path) -> None:
    from datetime import datetime

    import numpy as np
    from mlops_pack.spec import load_spec
    from mlops_pack.steps import drift, monitor, monitor_feed

    spec = load_spec(_common.SPEC)
    reference = json.loads((work / "reference_profile.json").read_text())
    started, cpu = time.perf_counter(), time.process_time()
    skipped = monitor_feed.Skipped()
    acc = monitor.Accumulator(reference)
    start = datetime.fromisoformat("2026-01-01T00:00:00+00:00")
    end = datetime.fromisoformat("2026-01-02T00:00:00+00:00")
    for chunk in monitor_feed.read_window(
        spec, work / "logs", start, end, "1", monitor_feed.Labels(), skipped
    ):
        acc.add(chunk)
    read = time.perf_counter() - started
    rule = spec.monitoring.drift
    distances = {
        name: drift.distance(np.asarray(entry["counts"]), acc.counts[name])
        for name, entry in reference["features"].items()
    }
    judged = drift.judge(distances, rule.psi_threshold, rule.alpha)
    seconds = time.perf_counter() - started
    print(
        "RESULT "
        + json.dumps(
            {
                "seconds": seconds,
                "cpu_seconds": time.process_time() - cpu,
                "peak_mb": _peak_mb(),
                "read_and_bin_seconds": read,
                "rows": acc.rows,
                "skipped": skipped.total,
                "drifted": sorted(n for n, f in judged.items() if f["drifted"]),
                "psi": {n: f["distance"] for n, f in judged.items()},
            }
        )
    )


def child_evidently(work: Path) -> None:
    import pandas as pd
    from evidently import Report
    from evidently.presets import DataDriftPreset

    reference = pd.read_parquet(work / "reference.parquet", columns=FEATURES)
    current = pd.read_parquet(work / "current.parquet", columns=FEATURES)
    started, cpu = time.perf_counter(), time.process_time()
    snapshot = Report([DataDriftPreset()]).run(current_data=current, reference_data=reference)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    drifted = []
    for metric in snapshot.dict()["metrics"]:
        name = str(metric.get("metric_name", ""))
        value = metric.get("value")
        if name.startswith("ValueDrift") and isinstance(value, float):
            column = name.split("column=", 1)[1].split(",", 1)[0]
            threshold = float(name.split("threshold=", 1)[1].rstrip(")").split(",")[0])
            method = name.split("method=", 1)[1].split(",", 1)[0]
            # p-value tests drift below the threshold; distances above it.
            fired = (
                value < threshold
                if "p_value" in method or "test" in method
                else (value >= threshold)
            )
            if fired:
                drifted.append(column)
    result = {"seconds": seconds, "cpu_seconds": cpu, "peak_mb": _peak_mb()}
    print("RESULT " + json.dumps({**result, "drifted": sorted(drifted)}))


# Parent side --------------------------------------------------------------------------


def _generate(args: argparse.Namespace) -> None:
    """Reference and current batches, the reference profile, and the prediction logs."""
    import numpy as np
    from mlops_pack.datagen import churn
    from mlops_pack.spec import load_spec
    from mlops_pack.steps import profile

    wanted = {"rows": args.rows, "reference_rows": args.reference_rows, "version": 1}
    stamp = WORK / "inputs.json"
    if stamp.exists() and json.loads(stamp.read_text()) == wanted:
        print(f"reusing {WORK.relative_to(_common.ROOT)}")
        return
    WORK.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    started = time.perf_counter()
    churn.write(churn.ChurnConfig(rows=args.reference_rows, month=1), WORK / "reference.parquet")
    churn.write(
        churn.ChurnConfig(rows=args.rows, month=2, covariate_drift=0.3),
        WORK / "current.parquet",
    )
    spec = load_spec(_common.SPEC)
    import pandas as pd

    reference = pd.read_parquet(WORK / "reference.parquet")
    rng = np.random.default_rng(0)
    record = profile.build(
        spec, reference, (rng.random(2000) < 0.3).astype(float), rng.random(2000)
    )
    (WORK / "reference_profile.json").write_text(json.dumps(record))
    _write_logs(pd.read_parquet(WORK / "current.parquet"), WORK / "logs", rng)
    stamp.write_text(json.dumps(wanted))
    print(f"generated inputs in {time.perf_counter() - started:.1f}s")


def _write_logs(frame, logs: Path, rng) -> None:
    folder = logs / "date=2026-01-01"
    folder.mkdir(parents=True, exist_ok=True)
    body = frame[FEATURES].astype(object)
    body = body.where(body.notna(), None)
    columns = {name: body[name].tolist() for name in FEATURES}
    scores = rng.random(len(frame)).round(6).tolist()
    with (folder / "part-0.jsonl").open("w", encoding="utf-8") as handle:
        for first in range(0, len(frame), ROWS_PER_REQUEST):
            part = slice(first, first + ROWS_PER_REQUEST)
            seconds = 86_000 * first / len(frame)
            record = {
                "ts": f"2026-01-01T{int(seconds // 3600):02d}:{int(seconds % 3600 // 60):02d}:"
                f"{seconds % 60:06.3f}+00:00",
                "request_id": f"r{first}",
                "version": "1",
                "slot": "stable",
                "latency_ms": 1.0,
                "rows": len(scores[part]),
                "predictions": scores[part],
                "flags": [],
                "inputs": {name: values[part] for name, values in columns.items()},
            }
            handle.write(json.dumps(record, separators=(",", ":")) + "\n")


def _evidently_python() -> Path:
    python = EVIDENTLY_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(EVIDENTLY_VENV)], check=True)
    done = subprocess.run(
        [str(python), "-c", "import evidently; print(evidently.__version__)"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        print(f"installing {' '.join(EVIDENTLY)} into {EVIDENTLY_VENV.relative_to(_common.ROOT)}")
        subprocess.run([str(python), "-m", "pip", "install", "-q", *EVIDENTLY], check=True)
    return python


def _run(name: str, python: Path, args: list[str]) -> dict | None:
    env = {**os.environ, "PYTHONPATH": str(_common.ROOT / "plugins")}
    child = _common.run_child(
        __file__, args, env=env, log=WORK / f"{name}.log", timeout=1800, python=str(python)
    )
    text = child.log.read_text(encoding="utf-8", errors="replace")
    line = next((x for x in text.splitlines() if x.startswith("RESULT ")), None)
    if child.returncode != 0 or child.timed_out or line is None:
        print(f"{name}: FAILED (exit {child.returncode}); no figure. Log tail:\n{child.tail()}")
        return None
    result = json.loads(line.removeprefix("RESULT "))
    result["process_wall"] = child.wall
    print(
        f"{name}: drift {result['seconds']:.2f} s wall, {result['cpu_seconds']:.2f} s CPU, "
        f"peak RSS {result['peak_mb']:.0f} MB; drifted {result['drifted']}; process "
        f"{child.meter.note()}"
    )
    return result


def log_overhead(repeat: int = 2000) -> dict[str, float]:
    """Microseconds per request to build and serialise its log line, with and without
    the inputs (what the server adds per request for the monitor)."""
    import pandas as pd
    from mlops_pack.serving.requests import RequestSchema
    from mlops_pack.spec import load_spec

    spec = load_spec(_common.SPEC)
    schema = RequestSchema(spec, 1000)
    frame = pd.read_parquet(WORK / "current.parquet", columns=FEATURES).head(100)
    body = frame.astype(object).where(frame.notna(), None)
    out = {}
    for size in (1, 100):
        parsed = schema.parse_rows(body.head(size).to_dict(orient="records"))
        base = {"request_id": "x" * 32, "version": "1", "slot": "stable", "latency_ms": 1.0,
                "rows": size, "predictions": [0.123456789] * size, "flags": []}  # fmt: skip
        for label, with_inputs in (("without", False), ("with", True)):
            started = time.perf_counter()
            for _ in range(repeat):
                record = dict(base)
                if with_inputs:
                    record["inputs"] = parsed.logged_inputs(schema.names)
                line = json.dumps(record, separators=(",", ":"))
            out[f"{size}_rows_{label}_us"] = (time.perf_counter() - started) / repeat * 1e6
            out[f"{size}_rows_{label}_bytes"] = len(line) + 1
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reference-rows", type=int, default=200_000)
    parser.add_argument("--child", choices=["ours", "evidently"])
    args = parser.parse_args()
    if args.child == "ours":
        child_ours(WORK)
        return 0
    if args.child == "evidently":
        child_evidently(WORK)
        return 0
    _common.header(f"monitoring drift: {args.rows:,} logged rows vs Evidently DataDriftPreset")
    _generate(args)
    evidently_python = _evidently_python()
    ours = _run("ours", Path(sys.executable), ["--child", "ours"])
    theirs = _run("evidently", evidently_python, ["--child", "evidently"])
    overhead = log_overhead()
    for size in (1, 100):
        print(
            f"log line, {size}-row request: {overhead[f'{size}_rows_without_us']:.1f} us / "
            f"{overhead[f'{size}_rows_without_bytes']} B without inputs, "
            f"{overhead[f'{size}_rows_with_us']:.1f} us / "
            f"{overhead[f'{size}_rows_with_bytes']} B with"
        )
    ratio = None
    if ours and theirs:
        # CPU time is the figure a shared machine disturbs least; wall time is given too.
        ratio = theirs["cpu_seconds"] / ours["cpu_seconds"]
        print(
            f"Evidently / ours: {ratio:.1f}x CPU time, "
            f"{theirs['seconds'] / ours['seconds']:.1f}x wall; peak RSS "
            f"{theirs['peak_mb']:.0f} MB vs {ours['peak_mb']:.0f} MB"
        )
    _common.write_json_result(
        "bench_monitoring",
        {"rows": args.rows, "reference_rows": args.reference_rows, "ours": ours,
         "evidently": theirs, "ratio": ratio, "log_overhead": overhead,
         "machine": _common.machine()},
    )  # fmt: skip
    return 0 if ours and theirs else 1


if __name__ == "__main__":
    raise SystemExit(main())
