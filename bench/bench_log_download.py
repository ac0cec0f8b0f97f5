"""A monitor window's prediction logs from the model server: whole, against a worker's cache.

A worker that shares no volume with the model server (``MLOPS_PACK_PREDICTION_LOGS=
server``) downloads the window's days before each monitor run. Until the cache, every
run downloaded them whole; now the worker keeps them and asks only for the bytes
appended since (``served_logs.download_window`` with a cache folder).

How, in one run on one machine:

- A fresh MLOPS_PACK_HOME; churn v1 trained by ``mlops-pack retrain`` in this process;
  our server started as a local process (``start_server_process``) serving it.
- One real request's log line, as the server wrote it, is the template: yesterday's and
  today's day folders each get a part file of ``--mb-per-day`` megabytes of such lines
  (a server process's file, written as the server writes it: whole JSON lines).
- whole: ``download_window`` without a cache, ``--repeat`` times (median): what each
  monitor run of a 24-hour window cost before.
- cold: the first run with an empty cache (the same bytes, plus writing the cache).
- warm: ``--repeat`` times, one hour of traffic (a 24th of a day's megabytes) is
  appended to today's file, then a run with the cache (median); each warm window must
  equal the server's files byte for byte, or the run fails and no figure is printed.
- The ratio is whole over warm. Client and server share this machine (2 vCPUs, loopback
  HTTP), so the figures are the pack's own cost, not a network's: over a real network
  the bytes not sent count for more.

    .venv/bin/python bench/bench_log_download.py
    .venv/bin/python bench/bench_log_download.py --mb-per-day 20 --repeat 2   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
from bench_serving import (
    MODEL,
    fresh_home,
    group_cpu_seconds,
    run_step,
    server_workspace,
    start_ours,
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb-per-day", type=float, default=200.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rows", type=int, default=2000, help="rows of v1's training batch")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    return parser.parse_args()


def template_line(served, home: Path) -> bytes:
    """One request's line as the server logged it (100 rows, the inputs logged)."""
    from mlops_pack.server_client import ServerClient

    sample = json.loads((home.parent / "v1" / "smoke_sample.json").read_text())
    rows = sample["rows"][:100]
    client = ServerClient(served.url, served.secret("prediction_key"))
    status, body, _ = client.call("POST", "/predict", {"rows": rows})
    if status != 200:
        raise SystemExit(f"the server refused the template request: {status} {body}")
    logged = sorted(predictions(home).glob("date=*/part-*.jsonl"))
    line = logged[-1].read_bytes().splitlines()[-1] + b"\n"
    return line


def predictions(home: Path) -> Path:
    return home / "serving" / MODEL / "predictions"


def fill(path: Path, line: bytes, megabytes: float) -> int:
    """Append whole copies of ``line`` to ``path`` up to ``megabytes``; returns bytes."""
    count = max(1, int(megabytes * 2**20 / len(line)))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as out:
        for start in range(0, count, 1000):
            out.write(line * min(1000, count - start))
    return count * len(line)


def timed_window(client, dest: Path, cache: Path | None, server_pid: int) -> dict:
    """One window's download: its wall time, the model server's CPU-seconds for it, and
    the bytes fetched and taken from the cache."""
    from mlops_pack.served_logs import download_window

    os.sync()  # the files written before are on disk: their writeback does not slow this
    end = datetime.now(UTC)
    server_cpu = group_cpu_seconds(server_pid)
    started = time.perf_counter()
    got = download_window(client, end - timedelta(hours=24), end, dest, cache)
    return {
        "seconds": time.perf_counter() - started,
        "server_cpu_s": group_cpu_seconds(server_pid) - server_cpu,
        "fetched": got.fetched,
        "cached": got.cached,
    }


def same_as_server(dest: Path, home: Path) -> bool:
    ours = {p.relative_to(dest): p.read_bytes() for p in dest.glob("date=*/part-*.jsonl")}
    root = predictions(home)
    theirs = {p.relative_to(root): p.read_bytes() for p in root.glob("date=*/part-*.jsonl")}
    return bool(ours) and ours == theirs


def run(args: argparse.Namespace, work: Path, pids: list[int]) -> dict:
    from mlops_pack.server_client import ServerClient

    home = fresh_home(work)
    month1 = _common.churn_file(args.rows, month=1)
    run_step(["retrain", "--data", str(month1)], work / "v1", work / "steps.log")
    served, pid, _ = start_ours(work, home)
    pids.append(pid)
    line = template_line(served, home)
    today = datetime.now(UTC).date()
    files = {
        day: predictions(home) / f"date={day.isoformat()}" / "part-20000101T000000-1.jsonl"
        for day in (today - timedelta(days=1), today)
    }
    size = sum(fill(path, line, args.mb_per_day) for path in files.values())
    client = ServerClient(served.url, served.secret("admin_token"), timeout=300)
    print(
        f"   window: 2 days, {size / 2**20:.0f} MiB of logged requests "
        f"({len(line)} bytes a line of 100 rows)"
    )

    whole = []
    for i in range(args.repeat):
        whole.append(timed_window(client, work / f"whole-{i}", None, pid))
        if not same_as_server(work / f"whole-{i}", home):
            raise SystemExit("a whole download differs from the server's files")
        shutil.rmtree(work / f"whole-{i}")
    cache = work / "cache"
    cold = timed_window(client, work / "cold", cache, pid)
    if not same_as_server(work / "cold", home):
        raise SystemExit("the cold cache's window differs from the server's files")
    shutil.rmtree(work / "cold")
    warm = []
    for i in range(args.repeat):
        appended = fill(files[today], line, args.mb_per_day / 24)
        warm.append(timed_window(client, work / f"warm-{i}", cache, pid))
        if not same_as_server(work / f"warm-{i}", home):
            raise SystemExit(f"warm window {i} differs from the server's files")
        if warm[-1]["fetched"] != appended:
            raise SystemExit(
                f"warm window {i} fetched {warm[-1]['fetched']} bytes, not the {appended} appended"
            )
        shutil.rmtree(work / f"warm-{i}")
    return {
        "window_bytes": size,
        "line_bytes": len(line),
        "whole": whole,
        "cold": cold,
        "warm": warm,
    }


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r.get(key, 0) for r in runs)


def main() -> None:
    args = parse_args()
    _common.header("bench_log_download: a monitor window's logs, whole vs a worker's cache")
    with _common.Meter() as meter, server_workspace("bench-log-download-", args.keep) as held:
        out = run(args, *held)
    mib = 2**20
    for name, runs in (
        ("whole (no cache)", out["whole"]),
        ("cold cache", [out["cold"]]),
        ("warm cache (an hour appended)", out["warm"]),
    ):
        print(
            f"   {name}, median of {len(runs)}: "
            f"{median(runs, 'seconds'):.3f} s, the server's CPU "
            f"{median(runs, 'server_cpu_s'):.3f} s; fetched "
            f"{median(runs, 'fetched') / mib:.1f} MiB, "
            f"{median(runs, 'cached') / mib:.1f} MiB from the cache"
        )
    ratio = median(out["whole"], "seconds") / median(out["warm"], "seconds")
    print(f"   ratio whole / warm: {ratio:.1f}x wall time")
    print(f"   machine: {meter.other_cpu:.1f} CPU-s used by other processes meanwhile")
    path = _common.write_json_result(
        "bench_log_download",
        {
            "machine": _common.machine(),
            "args": vars(args),
            "meter": meter.as_dict(),
            "ratio": ratio,
            **out,
        },
    )
    print(f"   figures saved to {path}")


if __name__ == "__main__":
    main()
