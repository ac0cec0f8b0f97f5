"""Scale-out: eight retrains on one Celery worker against the same eight on two.

One stack from docker-compose.local.yaml (the one the stack test runs: Postgres, Redis,
the MLflow server, Airflow 3 on Celery, images built locally, host networking), with
each worker taking one task at a time (``LOCAL_WORKER_CONCURRENCY=1``: a worker is one
slot, so adding a worker adds capacity) and each step container held to one CPU
(``MLOPS_PACK_STEP_CPUS=1``). Each phase retrains its own models (copies of the churn
spec, not served), all triggered at once through the REST API; the wall time runs from
the first trigger to the last run's end. Two workloads:

- ``champions`` (the default): eight models, each given its champion (a month-1 retrain
  that promotes) before anything is timed; a phase times one month-2 retrain per model,
  scored against its champion. Eight independent retrains: what a team's nightly
  schedule looks like.
- ``pairs``: four fresh models retrained twice each, month 1 then month 2, both timed. A
  model's second run waits for its first (``max_active_runs=1``), so the phase holds
  four chains of two retrains, and its tail (one model's last tasks alone) is part of
  the figure.

Four phases, each on its own models: two workers, one worker (worker 2 stopped with
Celery's warm shutdown), one worker again, two workers again (worker 2 started). The
ratio is the two one-worker phases' summed wall time over the two-worker phases'. In
that A B B A order a steady drift of the machine's speed, or the MLflow server and page
cache warming, weighs on both configurations alike; each pair's own ratio is printed
too. The machine's CPU count bounds the ratio: two workers cannot run two one-CPU steps
at once faster than the cores allow.

    .venv/bin/python bench/bench_scale_out.py
    .venv/bin/python bench/bench_scale_out.py --workload pairs
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

# The stack's start and stop come from its test's helpers.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "stack"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
import stack_support
import yaml
from support import build_task_image, open_dir, run_to_end

ROOT = _common.ROOT


def bench_include(models: list[str]) -> Path:
    include = open_dir("bench-scale-include-")
    shutil.copytree(ROOT / "include" / "expectations", include / "expectations")
    (include / "models").mkdir()
    # The served churn spec stays (the stack's model server and its keys need it); it is
    # not triggered. The benchmark's models are copies without serving.
    shutil.copy(ROOT / "include/models/churn.yaml", include / "models" / "churn.yaml")
    churn = yaml.safe_load((ROOT / "include/models/churn.yaml").read_text())
    churn.pop("serving", None)
    churn["gate"]["budgets"]["max_latency_ms_p95"] = None  # not what this measures
    for name in models:
        raw = {**churn, "name": name}
        (include / "models" / f"{name}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    for item in include.rglob("*"):
        item.chmod(0o755 if item.is_dir() else 0o644)
    return include


def bench_data(rows: int) -> Path:
    from mlops_pack.datagen import churn

    data = open_dir("bench-scale-data-")
    for month in (1, 2):
        path = data / "churn" / f"churn_month_{month:02d}.csv"
        churn.write(churn.ChurnConfig(rows=rows, month=month), path)
    for item in data.rglob("*"):
        item.chmod(0o755 if item.is_dir() else 0o644)
    return data


# The engine's CPU accounting per container (cgroup v1 with the cgroupfs driver, as here;
# cgroup v2 with systemd keeps it per scope). The parent's counter keeps what containers
# already removed (the step containers) used.
CGROUP_V1 = Path("/sys/fs/cgroup/cpuacct/docker")
CGROUP_V2 = Path("/sys/fs/cgroup/system.slice")


def _cgroup_cpu(container_id: str | None) -> float | None:
    """CPU-seconds a container (None: all containers) has used, or None if unknown."""
    if (CGROUP_V1 / "cpuacct.usage").exists():
        path = CGROUP_V1 / container_id if container_id else CGROUP_V1
        usage = path / "cpuacct.usage"
        return int(usage.read_text()) / 1e9 if usage.exists() else None
    if container_id and (CGROUP_V2 / f"docker-{container_id}.scope").exists():
        stat = (CGROUP_V2 / f"docker-{container_id}.scope" / "cpu.stat").read_text()
        return int(stat.split("usage_usec ")[1].split()[0]) / 1e6
    return None  # no total under cgroup v2: the step containers' share stays unknown


def stack_containers(project: str, stopped: bool = False) -> list[tuple[str, str]]:
    """(container id, compose service) of each of the stack's running containers, and
    of its stopped ones with ``stopped``."""
    listed = subprocess.run(
        ["docker", "ps", "--no-trunc", *(["-a"] if stopped else []),
         "--filter", f"label=com.docker.compose.project={project}",
         "--format", '{{.ID}} {{.Label "com.docker.compose.service"}}'],
        capture_output=True, text=True, check=True,
    ).stdout.split("\n")  # fmt: skip
    return [tuple(line.split(" ", 1)) for line in filter(None, listed)]


def container_cpu(project: str) -> dict[str, float]:
    """CPU-seconds so far of each of the stack's services, and of all containers."""
    found = {"all containers": _cgroup_cpu(None)}
    for container_id, service in stack_containers(project):
        found[service] = _cgroup_cpu(container_id)
    return {name: value for name, value in found.items() if value is not None}


def cpu_breakdown(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU-seconds per service during a phase; "step containers" is what every container
    used less the stack's services (the steps are gone when the phase ends)."""
    spent = {k: round(after[k] - before[k], 1) for k in after if k in before}
    total = spent.pop("all containers", None)
    if total is not None:
        spent["step containers"] = round(total - sum(spent.values()), 1)
    return dict(sorted(spent.items(), key=lambda item: -item[1]))


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def timeline(task_instances: list, began: datetime, ended: datetime) -> dict:
    """Where a phase's wall time went, from the task instances' own timestamps.

    ``lead_in_s`` runs from the first trigger (``began``) to the first task's start;
    ``after_last_task_s`` from the last task's end to the last run's end (``ended``).

    ``hand_off`` splits the wait between the run's previous task ending and the next one
    starting (the scheduler noticing and queueing it; the executor sending it and
    a worker starting it); ``both_busy_s`` is how long two tasks ran at once, and
    ``idle_between_tasks_s`` how long each worker waited between its tasks.
    """
    # Tasks a worker ran: a skipped task has dates but no host, and took no slot.
    done = [ti for ti in task_instances if ti.start_date and ti.end_date and ti.hostname]
    by_run: dict[tuple[str, str], list] = {}
    for ti in done:
        by_run.setdefault((ti.dag_id, ti.dag_run_id), []).append(ti)
    to_queued, to_start = [], []
    for tis in by_run.values():
        tis.sort(key=lambda ti: ti.start_date)
        for previous, ti in pairwise(tis):
            if ti.queued_when and ti.queued_when >= previous.end_date:
                to_queued.append((ti.queued_when - previous.end_date).total_seconds())
                to_start.append((ti.start_date - ti.queued_when).total_seconds())
    idle: dict[str, float] = {}
    for host in {ti.hostname for ti in done}:
        mine = sorted((ti for ti in done if ti.hostname == host), key=lambda ti: ti.start_date)
        idle[host] = round(
            sum(max(0.0, (b.start_date - a.end_date).total_seconds()) for a, b in pairwise(mine)),
            1,
        )
    # A sweep over starts (+1) and ends (-1): seconds with at least one / two tasks running.
    edges = sorted(
        [(ti.start_date.timestamp(), 1) for ti in done]
        + [(ti.end_date.timestamp(), -1) for ti in done]
    )
    running, last, covered = 0, None, {1: 0.0, 2: 0.0}
    for at, step in edges:
        if last is not None:
            for level in covered:
                if running >= level:
                    covered[level] += at - last
        running, last = running + step, at
    return {
        "tasks": len(done),
        # The sweep's first edge is the first start, its last the last end.
        "lead_in_s": round(edges[0][0] - began.timestamp(), 1) if edges else None,
        "after_last_task_s": round(ended.timestamp() - edges[-1][0], 1) if edges else None,
        "task_s_median": _median([(ti.end_date - ti.start_date).total_seconds() for ti in done]),
        "hand_off_median_s": {
            "upstream_end_to_queued": _median(to_queued),
            "queued_to_start": _median(to_start),
        },
        "hand_off_total_s": round(sum(to_queued) + sum(to_start), 1),
        "any_busy_s": round(covered[1], 1),
        "both_busy_s": round(covered[2], 1),
        "idle_between_tasks_s": idle,
    }


# Run inside a worker: the timestamp of the last line of each task log named on stdin.
_LAST_LOG_LINE = """
import json, sys
out = {}
for path in json.load(sys.stdin):
    try:
        lines = open("/opt/airflow/logs/" + path).read().splitlines()
        out[path] = json.loads(lines[-1])["timestamp"]
    except (OSError, IndexError, ValueError, KeyError):
        pass
print(json.dumps(out))
"""


def _utc(stamp: str) -> float:
    return datetime.fromisoformat(stamp.rstrip("Z")[:26]).replace(tzinfo=UTC).timestamp()


def slot_held_after_task(project: str, runs: list[tuple[str, str]]) -> dict:
    """How long each worker slot stayed taken after its task's last log line, from the
    workers' own logs ("Workload finished") and the task logs: the supervisor's wait for
    the task process's exit (docs/production.md)."""
    workers = {
        service: container_id
        for container_id, service in stack_containers(project, stopped=True)
        if service.startswith("airflow-worker")
    }
    finished: dict[str, float] = {}
    for container_id in workers.values():
        logs = subprocess.run(
            ["docker", "logs", container_id], check=True, capture_output=True, text=True
        )
        current = None
        for line in (logs.stdout + logs.stderr).splitlines():
            found = re.search(r"Executing workload in Celery: .*log_path='([^']+)'", line)
            if found:
                current = found.group(1)
            elif "Workload finished" in line and current:
                finished[current] = _utc(line.split()[0])
                current = None
    timed = tuple(f"dag_id={dag}/run_id={run}/" for dag, run in runs)
    finished = {k: v for k, v in finished.items() if k.startswith(timed)}
    last = json.loads(
        subprocess.run(  # worker 1 runs in both phases; the logs volume is shared
            ["docker", "exec", "-i", workers["airflow-worker-1"], "python", "-c", _LAST_LOG_LINE],
            input=json.dumps(sorted(finished)), capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    held = [finished[path] - _utc(stamp) for path, stamp in last.items()]
    return {
        "tasks": len(held),
        "median_s": _median(held),
        "over_1s": sum(1 for h in held if h > 1.0),
        "total_s": round(sum(held), 1),
    }


def month(number: int) -> dict:
    return {"data_path": f"churn/churn_month_{number:02d}.csv", "reason": "bench"}


def retrains(workload: str, models: list[str]) -> list[tuple[str, dict]]:
    """The (DAG, conf) of each retrain a phase times."""
    months = (2,) if workload == "champions" else (1, 2)
    return [(f"mlops_retrain__{name}", month(m)) for m in months for name in models]


def seed_champions(api, models: list[str]) -> None:
    """Give each model its champion before anything is timed: a month-1 retrain that
    promotes. A seed that fails stops the benchmark (it would time something else)."""
    for name in models:
        stack_support.unpaused(api, f"mlops_retrain__{name}")
    runs = [
        (dag, stack_support.trigger(api, dag, month(1)))
        for dag in (f"mlops_retrain__{name}" for name in models)
    ]
    states = [run_to_end(api, dag, run, timeout=3600) for dag, run in runs]
    if states.count("success") != len(runs):
        raise SystemExit(f"scale-out FAILED: seeding champions: {Counter(states)}")


def phase(api, project: str, models: list[str], workload: str) -> dict:
    """Trigger the phase's retrains at once; wait for all; wall time, where tasks ran
    and where the CPU went."""
    import airflow_client.client as ac

    for name in models:
        stack_support.unpaused(api, f"mlops_retrain__{name}")
    load_before = _common.loadavg()
    cpu_before = container_cpu(project)
    with _common.Meter() as meter:
        first_trigger = datetime.now(UTC)
        runs = [
            (dag, stack_support.trigger(api, dag, conf)) for dag, conf in retrains(workload, models)
        ]
        states = [run_to_end(api, dag, run, timeout=3600) for dag, run in runs]
    cpu = cpu_breakdown(cpu_before, container_cpu(project))
    # The phase ends when its last run ended, as Airflow recorded it: the polling above
    # notices up to its interval (3 s) later, which would add to both phases at random.
    last_end = max(ac.DagRunApi(api).get_dag_run(dag, run).end_date for dag, run in runs)
    wall = (last_end - first_trigger).total_seconds()
    hosts: Counter[str] = Counter()
    every_task = []
    for dag, run in runs:
        listed = ac.TaskInstanceApi(api).get_task_instances(dag, run).task_instances
        hosts.update(ti.hostname for ti in listed if ti.hostname)
        every_task += listed
    return {
        "retrains": len(runs),
        "succeeded": states.count("success"),
        "wall_s": round(wall, 1),
        "noticed_after_s": round(meter.wall, 1),
        "other_cpu_s": meter.other_cpu,
        "cores_busy": round(meter.other_cpu / meter.wall, 2),
        # Of that CPU, what the hypervisor ran for others on this machine's CPUs: time the
        # stack wanted a core and did not get one.
        "steal_s": round(meter.steal, 1),
        "cpu_s_by_container": cpu,
        "tasks_per_worker": dict(hosts),
        "timeline": timeline(every_task, first_trigger, last_end),
        "slot_held_after_task": slot_held_after_task(project, runs),
        "load_before": load_before,
        "load_after": _common.loadavg(),
    }


def stop_service(project: str, service: str) -> None:
    # Celery's warm shutdown: it finishes what it runs (nothing, between the phases).
    subprocess.run(
        ["docker", "stop", "-t", "120", stack_support.service_container(project, service)],
        check=True, capture_output=True,
    )  # fmt: skip


def start_worker(project: str, service: str, timeout: float = 180) -> None:
    """Start a stopped Celery worker again and wait until Celery says it takes tasks."""
    container_id = stack_support.service_container(project, service, stopped=True)
    since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    subprocess.run(["docker", "start", container_id], check=True, capture_output=True)
    try:
        stack_support.celery_ready(container_id, since, timeout)
    except AssertionError as exc:
        raise SystemExit(f"scale-out FAILED: {service} did not come back: {exc}") from None


# The phases in the order run: two workers, one, one, two (A B B A). The machine's speed
# drifts during a run (the same steps took up to 12% more CPU in one phase than in the
# other in single A B runs) and later phases find the MLflow server and page cache
# warmer; in A B B A a steady drift or warming adds to both configurations alike.
PHASES = (("two_a", 2), ("one_a", 1), ("one_b", 1), ("two_b", 2))


def ratios(phases: dict[str, dict], cores: int) -> dict:
    """The ratio of the summed wall times (one worker over two), each pair's own ratio,
    and what the two-worker phases' CPU allows."""
    one = [phases[label]["wall_s"] for label, workers in PHASES if workers == 1]
    two = [phases[label]["wall_s"] for label, workers in PHASES if workers == 2]
    # With every core busy the two-worker phases cannot end before their CPU work is
    # done, so the machine caps the ratio near one worker's wall time over that work per
    # core (an upper bound: the stack's idle CPU grows with wall time and lowers it
    # further). The CPU is read over the polled window (to noticed_after_s, up to 3 s
    # past the phase's end): its rate times the phase's wall time is the phase's work.
    work = sum(
        phases[label]["other_cpu_s"] / phases[label]["noticed_after_s"] * phases[label]["wall_s"]
        for label, workers in PHASES
        if workers == 2
    )
    return {
        "ratio": round(sum(one) / sum(two), 3),
        "ratio_first_pair": round(phases["one_a"]["wall_s"] / phases["two_a"]["wall_s"], 3),
        "ratio_second_pair": round(phases["one_b"]["wall_s"] / phases["two_b"]["wall_s"], 3),
        "cpu_bound_ratio": round(sum(one) / (work / cores), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workload", choices=("champions", "pairs"), default="champions",
        help="champions: one timed retrain per model, each against its champion; "
        "pairs: two timed retrains per fresh model (month 1, then month 2)",
    )  # fmt: skip
    parser.add_argument("--models", type=int, help="models per phase (8 champions, 4 pairs)")
    parser.add_argument("--rows", type=int, default=4000, help="rows per monthly batch")
    args = parser.parse_args()
    count = args.models or (8 if args.workload == "champions" else 4)
    _common.header(f"scale-out: retrains on one Celery worker against two ({args.workload})")
    models = {label: [f"scale_{label}_{i}" for i in range(count)] for label, _ in PHASES}
    every_model = [name for names in models.values() for name in names]
    include, data = bench_include(every_model), bench_data(args.rows)
    env = {"LOCAL_WORKER_CONCURRENCY": "1", "MLOPS_PACK_STEP_CPUS": "1"}
    started = time.perf_counter()
    phases: dict[str, dict] = {}
    with stack_support.local_stack(build_task_image(), include, data, **env) as stack:
        api = stack_support.airflow_api(stack)
        project = stack["project"]
        print(f"stack up in {time.perf_counter() - started:.0f} s")
        if args.workload == "champions":
            seeding = time.perf_counter()
            seed_champions(api, every_model)
            print(
                f"champions of {len(every_model)} models in {time.perf_counter() - seeding:.0f} s"
            )
        workers = 2
        for label, wanted in PHASES:
            if wanted < workers:
                stop_service(project, "airflow-worker-2")
            elif wanted > workers:
                start_worker(project, "airflow-worker-2")
            workers = wanted
            phases[label] = phase(api, project, models[label], args.workload)
            print(f"{label} ({workers} worker{'s' if workers > 1 else ''}):", phases[label])
    for name in (include, data):
        shutil.rmtree(name, ignore_errors=True)
    failed = {
        k: r["retrains"] - r["succeeded"]
        for k, r in phases.items()
        if r["succeeded"] < r["retrains"]
    }
    if failed:  # a failed run measured nothing: no ratio is reported
        print(f"scale-out FAILED: retrains that did not succeed per phase: {failed}")
        return 1
    cores = os.cpu_count() or 1
    result = {"phases": phases, **ratios(phases, cores)}
    result.update(
        cpus=cores, machine=_common.machine(), rows=args.rows, workload=args.workload,
        models_per_phase=count, order=[label for label, _ in PHASES],
    )  # fmt: skip
    path = _common.write_json_result("scale_out", result)
    walls = ", ".join(f"{label} {phases[label]['wall_s']:.0f} s" for label, _ in PHASES)
    print(
        f"{walls}: {result['ratio']:.2f}x (pairs {result['ratio_first_pair']:.2f}x and "
        f"{result['ratio_second_pair']:.2f}x; target 1.7x; {cores} CPUs, whose CPU allows "
        f"about {result['cpu_bound_ratio']:.2f}x at most); {path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
