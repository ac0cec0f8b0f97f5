"""The scheduler's Celery state check: a new database connection each time, or one kept.

On every loop with tasks in flight Airflow's Celery executor asks the result backend for
their states. Celery's database backend, outside a forked process, connects anew for each
such query; the pack's scheduler keeps one connection (``mlops_pack.airflow.celery_results``).
This runs the executor's own check (its ``BulkStateFetcher``, eight task ids) in the
scheduler's container of a docker-compose.local.yaml stack (Postgres, Redis, the
scheduler: nothing else is started), ``--checks`` times each way, alternating the two
ways ``--rounds`` times, and reports per check: the wall time, the scheduler's CPU, the
Postgres container's CPU and the sessions Postgres opened.

    .venv/bin/python bench/bench_state_check.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "stack"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
import stack_support
from bench_scale_out import container_cpu
from support import build_task_image, open_dir

WAYS = {"as-celery": False, "kept": True}


def one_way(stack: dict, checks: int, kept: bool) -> dict:
    """``checks`` state checks one way: per-check figures."""
    before = container_cpu(stack["project"]).get("postgres")
    found = stack_support.state_checks(stack, checks, kept)
    after = container_cpu(stack["project"]).get("postgres")
    # Postgres's CPU over the run includes the 2 s the helper waits for its statistics:
    # idle, a few milliseconds.
    postgres = None if before is None or after is None else (after - before) / checks
    return {
        "wall_ms": 1000 * found["wall_s"] / checks,
        "scheduler_cpu_ms": 1000 * found["cpu_s"] / checks,
        "postgres_cpu_ms": None if postgres is None else 1000 * postgres,
        "sessions_per_check": found["sessions_opened"] / checks,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checks", type=int, default=300, help="checks per way and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each way once")
    args = parser.parse_args()
    _common.header("the scheduler's Celery state check: connection per check or kept")
    # The shipped include folder: `stack init` writes the served specs' secrets, which the
    # compose file requires; nothing here parses a spec.
    include, data = _common.ROOT / "include", open_dir("state-check-data-")
    services = ("airflow-scheduler",)
    rounds: dict[str, list[dict]] = {way: [] for way in WAYS}
    with stack_support.local_stack(build_task_image(), include, data, services) as stack:
        for number in range(args.rounds):
            # Alternate which way goes first, so a drift of the machine weighs on both.
            order = list(WAYS) if number % 2 == 0 else list(reversed(WAYS))
            for way in order:
                rounds[way].append(one_way(stack, args.checks, WAYS[way]))
                print(f"round {number + 1}, {way}:", rounds[way][-1])
                time.sleep(1)
    data.rmdir()
    if any(r["sessions_per_check"] < 0 for way in rounds.values() for r in way):
        print("state check FAILED: Postgres's session count went back")
        return 1
    result: dict = {"checks": args.checks, "rounds": args.rounds, "machine": _common.machine()}
    for way, found in rounds.items():
        result[way] = {
            key: round(statistics.median(r[key] for r in found), 3)
            for key in found[0]
            if all(r[key] is not None for r in found)
        }
    celery, kept = result["as-celery"], result["kept"]
    cpu_celery = celery["scheduler_cpu_ms"] + celery.get("postgres_cpu_ms", 0)
    cpu_kept = kept["scheduler_cpu_ms"] + kept.get("postgres_cpu_ms", 0)
    result["cpu_ratio"] = round(cpu_celery / cpu_kept, 2)
    path = _common.write_json_result("state_check", result)
    print(
        f"per check (median of {args.rounds} rounds of {args.checks}): as Celery does it "
        f"{celery['wall_ms']:.1f} ms, {cpu_celery:.2f} CPU-ms (scheduler "
        f"{celery['scheduler_cpu_ms']:.2f}, Postgres {celery.get('postgres_cpu_ms', 0):.2f}), "
        f"{celery['sessions_per_check']:.2f} sessions; kept {kept['wall_ms']:.1f} ms, "
        f"{cpu_kept:.2f} CPU-ms (scheduler {kept['scheduler_cpu_ms']:.2f}, Postgres "
        f"{kept.get('postgres_cpu_ms', 0):.2f}), {kept['sessions_per_check']:.3f} sessions: "
        f"{result['cpu_ratio']:.1f}x less CPU; {path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
