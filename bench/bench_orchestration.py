"""The churn retrain DAG through Airflow (``dag.test()``) against the sum of its steps' compute.

For each size (``--rows``) and each runner (``docker``: every step in a hardened container
of the task image; ``inprocess``: the steps called in the Airflow task's own process), a
fresh child process builds ``mlops_retrain__churn`` with the DAG factory against a fresh
include dir, data dir and ``MLOPS_PACK_HOME`` (owned by uid 65534, as the step containers
run), starts the churn model server on a free port (a hardened container with the docker
runner, a local process with inprocess; the Airflow Connection reaches the DAG through
the environment, as ``make demo`` does), then calls ``dag.test(run_conf=...)`` twice:
run 1 on a month-1 batch (no champion yet: it promotes and deploys), run 2 on a month-2
batch (scored against the champion with the paired bootstrap, under a lenient
non-inferiority gate so that deploy, with its smoke test and canary, and promote always
run). The whole DAG is timed, deploy and promote included. A run that does not succeed
is reported as a failure, with the failed task and its error, and gets no ratio.
Airflow runs against a throwaway ``AIRFLOW_HOME`` migrated once with ``airflow db
migrate``.

Per run the child records the DAG wall time (around ``dag.test``), each task instance's
start and end, and from each step's work dir
(``<MLOPS_PACK_HOME>/work/<dag_id>/<run>/<task>.<try>/``) the step's own timing
(``validation.json`` / ``train.json`` / ``evaluation.json`` ``seconds``, ``fit_seconds``)
and two file times: the operator's input files (written just before it launches the step)
and ``result.json`` (written by the step as its last act). The DAG wall time splits
exactly into: before the first task, gaps between tasks, the two small Python tasks, and
for each step task the Airflow side before the launch, the launch-to-result span (step
compute plus everything else the step process does) and the time after the result.

Probes then attribute the step-side overhead: an empty container (``docker run --rm
--network none <image> python -c pass`` against ``python -c pass``, and the operator's
own create/start/wait/remove API sequence with the hardened host config), the heavy
imports inside the image (great_expectations, mlflow, scikit-learn, ...) and on the host,
and opening the MLflow SQLite store inside the image.

    .venv/bin/python bench/bench_orchestration.py
    .venv/bin/python bench/bench_orchestration.py --rows 100000 --runners docker
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
import yaml

ROOT = _common.ROOT
NOBODY = 65534
DAG_ID = "mlops_retrain__churn"
STEP_TASKS = ["validate", "train", "evaluate", "gate", "deploy", "promote"]
PY_TASKS = ["run_overrides", "challenger_passed"]
RECORDS = {"validate": "validation.json", "train": "train.json", "evaluate": "evaluation.json"}
# Steps that time their own work ('seconds' in their record; deploy's is in result.json).
OWN_TIMED = (*RECORDS, "deploy")
BATCHES = ["churn_month_01.csv", "churn_month_02.csv"]
# Run 2 must reach deploy and promote whatever the two models score: a lenient gate.
RUN_CONF = [
    {"reason": "bench_orchestration run 1"},
    {"reason": "bench_orchestration run 2", "gate_mode": "non_inferiority", "gate_margin": 0.2},
]
LOGS = _common.RESULTS / "logs"

# Heavy imports, each timed alone in a fresh interpreter (in the image and on the host).
IMPORTS = {
    "great_expectations": "import great_expectations",
    "mlflow (client, sklearn flavour)": "import mlflow, mlflow.tracking, mlflow.sklearn",
    "scikit-learn (ensemble, pipeline)": "import sklearn.ensemble, sklearn.pipeline",
    "pandas + pyarrow": "import pandas, pyarrow, pyarrow.csv, pyarrow.parquet",
    "skops.io": "import skops.io",
}
# What each step process imports before and while doing its work (from the step modules:
# validate runs GX and logs to MLflow; train/evaluate fit or load sklearn models through
# skops and MLflow; gate and promote read and write the registry).
STEP_IMPORTS = {
    "validate": "import mlops_pack.cli, mlops_pack.steps.validate, great_expectations, "
    "mlflow.tracking",
    "train": "import mlops_pack.cli, mlops_pack.steps.train, sklearn.ensemble, "
    "sklearn.pipeline, mlflow.sklearn, skops.io",
    "evaluate": "import mlops_pack.cli, mlops_pack.steps.evaluate, sklearn.ensemble, "
    "sklearn.pipeline, skops.io, mlflow.tracking, mlflow.artifacts",
    "gate": "import mlops_pack.cli, mlops_pack.steps.decide, mlops_pack.gate, mlflow.tracking",
    "deploy": "import mlops_pack.cli, mlops_pack.steps.deploy, mlflow.tracking, mlflow.artifacts",
    "promote": "import mlops_pack.cli, mlops_pack.steps.decide, mlflow.tracking",
}
# Prints the import time, then the wall-clock time just before the interpreter exits.
TIMED = (
    "import time; s = time.perf_counter(); {stmt}; print(time.perf_counter() - s); "
    "print(repr(time.time()))"
)


# Child side: one runner, one size, two dag.test() runs ---------------------------------


def _epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def _mtime(path: Path) -> float | None:
    return path.stat().st_mtime if path.exists() else None


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _step_files(work: Path, task_id: str) -> dict[str, Any]:
    """The step's own timing and the launch/result file times from its work dir."""
    result = _read(work / "result.json") or {}
    record = _read(work / RECORDS[task_id]) if task_id in RECORDS else None
    record = record or result.get("result") or {}
    error = result.get("error")
    # Files the operator writes just before it launches the step (the gate step itself
    # writes a decision.json; only promote's is an input).
    names = ["overrides.json"] + (["decision.json"] if task_id == "promote" else [])
    inputs = [t for t in (_mtime(work / n) for n in names) if t is not None]
    out = {
        "work": str(work),
        "status": result.get("status"),
        "launched": max(inputs) if inputs else None,
        "result_written": _mtime(work / "result.json"),
        "seconds": record.get("seconds") if task_id in OWN_TIMED else None,
        "error": error[:500] if error else None,
        "fit_seconds": record.get("fit_seconds") if task_id == "train" else None,
    }
    if task_id == "gate":
        out["verdict"] = (result.get("result") or {}).get("verdict")
    return out


def child(world: Path, result_path: Path) -> None:
    started = time.perf_counter()
    from mlops_pack.airflow.dag_factory import build_retrain_dag

    imported = time.perf_counter() - started
    from mlops_pack.airflow import model_server

    dag = build_retrain_dag(world / "include" / "models" / "churn.yaml")
    home = Path(os.environ["MLOPS_PACK_HOME"])
    served, handle = model_server.launch(
        "churn",
        runner=os.environ["MLOPS_PACK_RUNNER"],
        include_dir=world / "include",
        home=home,
        secrets_dir=world / "secrets",
        log_file=world / "server-churn.log",
        image=os.environ["MLOPS_PACK_TASK_IMAGE"],
        port=_common.free_port(),
    )
    os.environ.update(served.connection_env())  # the Connection, as make demo passes it
    try:
        runs = _runs(dag, home)
    finally:
        model_server.stop(handle)
    result_path.write_text(
        json.dumps({"import_factory": imported, "runs": runs}, indent=2), encoding="utf-8"
    )


def _runs(dag: Any, home: Path) -> list[dict[str, Any]]:
    runs = []
    for index, (batch, conf) in enumerate(zip(BATCHES, RUN_CONF, strict=True), 1):
        load = _common.loadavg()
        meter = _common.Meter().__enter__()
        called = time.time()
        dag_run = dag.test(run_conf={"data_path": f"churn/{batch}", **conf})
        returned = time.time()
        meter.__exit__(None, None, None)
        safe_run = re.sub(r"[^A-Za-z0-9_.-]", "_", dag_run.run_id)
        tasks = {}
        for ti in dag_run.get_task_instances():
            entry = {
                "state": str(ti.state),
                "try_number": ti.try_number,
                "start": _epoch(ti.start_date),
                "end": _epoch(ti.end_date),
            }
            if ti.task_id in STEP_TASKS:
                work = home / "work" / dag_run.dag_id / safe_run / f"{ti.task_id}.{ti.try_number}"
                entry.update(_step_files(work, ti.task_id))
            tasks[ti.task_id] = entry
        runs.append(
            {
                "run": index,
                "batch": batch,
                "run_id": dag_run.run_id,
                "state": str(dag_run.state),
                "called": called,
                "returned": returned,
                "wall": returned - called,
                "meter": meter.as_dict(),
                "loadavg": load,
                "tasks": tasks,
            }
        )
        print(f"BENCH run {index}: {dag_run.state} in {returned - called:.1f} s", flush=True)
    return runs


# Parent side: worlds, children, probes -------------------------------------------------


def task_image() -> str:
    from mlops_pack.airflow.local_docker import build_task_image

    return build_task_image(ROOT)


def _open_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    path.chmod(0o755)
    return path


def make_world(parent: Path, files: list[Path]) -> Path:
    """An include dir, a data dir and a store the container user (65534) can use."""
    world = _open_dir(parent)
    include, data, home = (_open_dir(world / n) for n in ("include", "data", "home"))
    shutil.copytree(ROOT / "include" / "expectations", include / "expectations")
    (include / "models").mkdir()
    # The gate is not what this measures: run 2 must reach deploy and promote, and out of
    # time a guardrail or a slice can reject an equally good month-2 model on noise.
    spec = yaml.safe_load(Path(_common.SPEC).read_text())
    spec["gate"]["guardrails"], spec["gate"]["slices"] = [], {"columns": []}
    (include / "models" / "churn.yaml").write_text(yaml.safe_dump(spec))
    (data / "churn").mkdir()
    for source, name in zip(files, BATCHES, strict=True):
        shutil.copyfile(source, data / "churn" / name)
    for path in (include, data):
        for item in path.rglob("*"):
            item.chmod(0o755 if item.is_dir() else 0o644)
    os.chown(home, NOBODY, NOBODY)
    return world


def airflow_env(airflow_home: Path) -> dict[str, str]:
    return dict(
        os.environ,
        AIRFLOW_HOME=str(airflow_home),
        AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
        GX_ANALYTICS_ENABLED="false",
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
    )


def run_child(
    world: Path, runner: str, image: str, env: dict[str, str], log: Path
) -> dict[str, Any]:
    env = dict(
        env,
        MLOPS_PACK_INCLUDE_DIR=str(world / "include"),
        MLOPS_PACK_DATA_DIR=str(world / "data"),
        MLOPS_PACK_HOME=str(world / "home"),
        MLOPS_PACK_TASK_IMAGE=image,
        MLOPS_PACK_RUNNER=runner,
    )
    result = world / "child-result.json"
    events_file = world / "docker-events.jsonl"
    watcher = None
    if runner == "docker":
        # The engine's own record of each step container's create/start/die/destroy.
        with events_file.open("w", encoding="utf-8") as sink:
            watcher = subprocess.Popen(
                [
                    "docker",
                    "events",
                    "--filter",
                    "type=container",
                    "--filter",
                    "label=io.mlops-pack.step",
                    "--format",
                    "{{json .}}",
                ],
                stdout=sink,
                stderr=subprocess.DEVNULL,
            )
    try:
        child_run = _common.run_child(
            __file__,
            ["--child", "--world", str(world), "--result", str(result)],
            env=env,
            log=log,
            cwd=world,
        )
    finally:
        if watcher is not None:
            time.sleep(1)  # let the last destroy event arrive
            watcher.terminate()
            watcher.wait(timeout=10)
    if child_run.returncode != 0 or not result.exists():
        raise RuntimeError(f"child exited {child_run.returncode}; log {log}:\n{child_run.tail()}")
    payload = json.loads(result.read_text(encoding="utf-8"))
    payload["process_wall"] = child_run.wall
    if watcher is not None:
        attach_events(payload["runs"], events_file)
    return payload


def attach_events(runs: list[dict[str, Any]], events_file: Path) -> None:
    """Add each step container's engine event times to its task (the last try's container)."""
    events = []
    for line in events_file.read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    for run in runs:
        label = run["run_id"][:63]
        for task_id, task in run["tasks"].items():
            if task_id not in STEP_TASKS:
                continue
            part = f"-{DAG_ID}-{task_id}-"  # names are mlops-<stack>-<dag>-<task>-<run>
            found: dict[str, float] = {}
            for event in events:
                attributes = (event.get("Actor") or {}).get("Attributes") or {}
                if attributes.get("io.mlops-pack.run") != label or part not in attributes.get(
                    "name", ""
                ):
                    continue
                action = event.get("Action") or event.get("status")
                if action == "create":
                    found = {}
                if action in ("create", "start", "die", "destroy"):
                    found[action] = int(event["timeNano"]) / 1e9
            task["container"] = found


def _median_printed(argv: list[str], repeat: int) -> tuple[float, float]:
    """Medians of the import time a TIMED command prints and of the time from its last
    statement until the command returned (interpreter shutdown, plus container exit and
    removal for ``docker run --rm``)."""
    values, tails = [], []
    for _ in range(repeat):
        proc = subprocess.run(argv, check=True, capture_output=True, text=True)
        returned = time.time()
        lines = proc.stdout.strip().splitlines()
        values.append(float(lines[-2]))
        tails.append(returned - float(lines[-1]))
    return statistics.median(values), statistics.median(tails)


def probe_container(image: str, repeat: int) -> dict[str, float]:
    """An empty container against an empty interpreter, by the CLI and by the API."""
    out = {
        "host: python -c pass": _common.median_wall([sys.executable, "-c", "pass"], repeat),
        "docker run --rm --network none IMAGE python -c pass": _common.median_wall(
            [
                "docker",
                "run",
                "--rm",
                "--network",
                "none",
                "--entrypoint",
                "python",
                image,
                "-c",
                "pass",
            ],
            repeat,
        ),
        "same, a step container's hardening and limits": _common.median_wall(
            _common.docker_run(image, ["-c", "pass"]), repeat
        ),
        "same, step entry point (python -m mlops_pack --help)": _common.median_wall(
            _common.docker_run(image, ["--help"], entrypoint=None), repeat
        ),
    }
    out.update(_probe_api(image, repeat))
    return out


def _probe_api(image: str, repeat: int) -> dict[str, float]:
    """The operator's own sequence (container.run) around `python -c pass`, per phase."""
    from docker.types import Mount
    from mlops_pack.airflow import container

    client = _common.docker_client()
    scratch = Path(tempfile.mkdtemp(prefix="bench-orch-mounts-"))
    mounts = []
    for name in ("include", "data", "home", "work"):
        path = _open_dir(scratch / name)
        mounts.append(
            Mount(f"/mnt/{name}", str(path), type="bind", read_only=name in ("include", "data"))
        )
    spec = container.ContainerSpec(
        image=image,
        command=["-c", "pass"],
        name="bench-orch-probe",
        user=f"{NOBODY}:{NOBODY}",
        mounts=mounts,
        network_mode="none",
    )
    phases: dict[str, list[float]] = {}

    def timed(label: str, func, *args, **kwargs):
        started = time.perf_counter()
        value = func(*args, **kwargs)
        phases.setdefault(label, []).append(time.perf_counter() - started)
        return value

    try:
        for _ in range(repeat):
            total = time.perf_counter()
            timed("api: inspect_image", client.inspect_image, image)
            timed(
                "api: remove stale (NotFound)",
                container.remove_quietly,
                client,
                spec.name,
                _quiet_log(),
            )
            created = timed(
                "api: create_container",
                client.create_container,
                image=image,
                entrypoint=["python"],
                command=spec.command,
                name=spec.name,
                user=spec.user,
                working_dir="/work",
                host_config=container.host_config(client, spec),
            )
            timed("api: start", client.start, created["Id"])
            timed("api: wait (python -c pass runs)", client.wait, created["Id"])
            timed("api: remove_container", client.remove_container, created["Id"], force=True)
            phases.setdefault("api: whole sequence", []).append(time.perf_counter() - total)
    finally:
        container.remove_quietly(client, spec.name, _quiet_log())
        shutil.rmtree(scratch, ignore_errors=True)
    return {k: statistics.median(v) for k, v in phases.items()}


def _quiet_log():
    import logging

    return logging.getLogger("bench_orchestration.probe")


def probe_imports(image: str, repeat: int) -> dict[str, dict[str, float]]:
    """Each import set alone in a fresh interpreter: in the image and on the host; and the
    time from the last statement to the process being gone, with those modules loaded."""
    out: dict[str, dict[str, float]] = {"image": {}, "host": {}, "image_exit": {}, "host_exit": {}}
    sets = {
        "nothing (pass)": "pass",
        **IMPORTS,
        **{f"step {k}": v for k, v in STEP_IMPORTS.items()},
    }
    for label, stmt in sets.items():
        code = TIMED.format(stmt=stmt)
        out["image"][label], out["image_exit"][label] = _median_printed(
            _common.docker_run(image, ["-c", code]), repeat
        )
        out["host"][label], out["host_exit"][label] = _median_printed(
            [sys.executable, "-c", code], repeat
        )
    return out


def probe_store(image: str, home: Path, repeat: int) -> dict[str, float] | None:
    """Open a copy of a run's MLflow SQLite store inside the image, as each step does."""
    from docker.types import Mount

    db = home / "mlflow.db"
    if not db.exists():
        return None
    scratch = Path(tempfile.mkdtemp(prefix="bench-orch-store-"))
    scratch.chmod(0o755)
    try:
        shutil.copyfile(db, scratch / "mlflow.db")
        for path in (scratch, scratch / "mlflow.db"):
            os.chown(path, NOBODY, NOBODY)
        code = (
            "import time; s = time.perf_counter(); from mlflow.tracking import MlflowClient; "
            "i = time.perf_counter(); c = MlflowClient('sqlite:////store/mlflow.db'); "
            "c.get_registered_model('churn'); e = time.perf_counter(); "
            "print(i - s); print(e - i)"
        )
        imports, opens = [], []
        for _ in range(repeat):
            argv = _common.docker_run(
                image,
                ["-c", code],
                mounts=[Mount("/store", str(scratch), type="bind", read_only=False)],
            )
            lines = subprocess.run(argv, check=True, capture_output=True, text=True).stdout.split()
            imports.append(float(lines[-2]))
            opens.append(float(lines[-1]))
        return {
            "import mlflow.tracking": statistics.median(imports),
            "open store + one registry call": statistics.median(opens),
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


FIT_CODE = """
import time
from pathlib import Path
from mlops_pack.spec import load_spec
from mlops_pack.steps.dataset import read_frame
from mlops_pack.steps.train import build_pipeline
spec = load_spec({spec!r})
frame = read_frame(Path({data!r}), spec)
pipeline = build_pipeline(spec)
s = time.perf_counter()
pipeline.fit(frame, frame[spec.target])
print(time.perf_counter() - s)
"""


def probe_fit(image: str, data: Path, repeat: int) -> dict[str, Any]:
    """The spec's pipeline fit on the same file, alternately on the host and in a container
    with a step container's hardening and default limits (from the library)."""
    from docker.types import Mount

    host_code = FIT_CODE.format(spec=str(_common.SPEC), data=str(data))
    image_code = FIT_CODE.format(spec="/opt/include/models/churn.yaml", data=f"/data/{data.name}")
    docker = _common.docker_run(
        image,
        ["-c", image_code],
        mounts=[
            Mount("/opt/include", str(ROOT / "include"), type="bind", read_only=True),
            Mount("/data", str(data.parent), type="bind", read_only=True),
        ],
    )
    host, contained = [], []
    for _ in range(repeat):
        for argv, into in (([sys.executable, "-c", host_code], host), (docker, contained)):
            proc = subprocess.run(argv, check=True, capture_output=True, text=True)
            into.append(float(proc.stdout.strip().splitlines()[-1]))
    return {
        "rows": data.name,
        "host": host,
        "image": contained,
        "host_median": statistics.median(host),
        "image_median": statistics.median(contained),
    }


# Analysis and printing ------------------------------------------------------------------


# Parts of one step task, in time order; each is the time between two marks.
STEP_PARTS = [
    ("pre", "Airflow task start -> step launch (templating, work dir)"),
    ("to_create", "launch -> container created (Docker client, inspect image, create)"),
    ("create_start", "container created -> started"),
    (
        "overhead",
        "step process before/after its own timing (interpreter start, imports, "
        "MLflow store open, unrecorded step work)",
    ),
    ("own", "step's own timing (validate/train/evaluate 'seconds')"),
    ("exit", "result.json -> container exited (interpreter shutdown)"),
    ("remove", "container exited -> removed (wait returns, log stream joined, remove)"),
    ("post", "result read, XCom, Airflow task end"),
]


def _step_parts(task: dict[str, Any]) -> dict[str, float] | None:
    """Split one step task's wall time at the marks we have (file times, engine events)."""
    start, end = task.get("start"), task.get("end")
    launched, written = task.get("launched"), task.get("result_written")
    if None in (start, end, launched, written):
        return None
    own = task.get("seconds") or 0.0
    parts = dict.fromkeys((k for k, _ in STEP_PARTS), 0.0)
    parts["pre"] = launched - start
    events = task.get("container") or {}
    if all(k in events for k in ("create", "start", "die", "destroy")):
        parts["to_create"] = events["create"] - launched
        parts["create_start"] = events["start"] - events["create"]
        parts["overhead"] = written - events["start"] - own
        parts["exit"] = events["die"] - written
        parts["remove"] = events["destroy"] - events["die"]
        parts["post"] = end - events["destroy"]
    else:  # in-process: no container; the launch-to-result span is the step call
        parts["overhead"] = written - launched - own
        parts["post"] = end - written
    parts["own"] = own
    return parts


def analyse(run: dict[str, Any]) -> dict[str, Any]:
    """Split the DAG wall time into parts that add up to it."""
    tasks = run["tasks"]
    spans = sorted(
        (t["start"], t["end"], k)
        for k, t in tasks.items()
        if t["start"] is not None and t["end"] is not None
    )
    gaps, covered_until = 0.0, None
    for start, end, _ in spans:
        if covered_until is not None and start > covered_until:
            gaps += start - covered_until
        covered_until = end if covered_until is None else max(covered_until, end)
    before = spans[0][0] - run["called"] if spans else run["wall"]
    after = run["returned"] - covered_until if spans else 0.0
    task_wall = {k: end - start for start, end, k in spans}
    parts = {
        "dag.test before the first task (serialize, bundle sync, DagRun)": before,
        "scheduler-loop gaps between tasks": gaps,
        "dag.test after the last task": after,
    }
    for task_id in PY_TASKS:
        parts[f"Python task {task_id}"] = task_wall.get(task_id, 0.0)
    per_step: dict[str, dict[str, float] | None] = {}
    totals = dict.fromkeys((k for k, _ in STEP_PARTS), 0.0)
    no_files = 0.0
    for task_id in STEP_TASKS:
        if task_id not in task_wall:
            continue
        split = _step_parts(tasks[task_id])
        per_step[task_id] = split
        if split is None:  # skipped (no work dir) or never launched
            no_files += task_wall[task_id]
            continue
        for key, seconds in split.items():
            totals[key] += seconds
    for key, label in STEP_PARTS:
        parts[f"steps: {label}"] = totals[key]
    if no_files:
        parts["steps without work-dir files (skipped)"] = no_files
    return {
        "parts": parts,
        "per_step": per_step,
        "task_wall": task_wall,
        "task_wall_sum": sum(task_wall.values()),
        "compute": totals["own"],
        "unexplained": run["wall"] - sum(parts.values()),
        "fit": (tasks.get("train") or {}).get("fit_seconds"),
        "verdict": (tasks.get("gate") or {}).get("verdict"),
    }


def failure(run: dict[str, Any]) -> str | None:
    """Why a DAG run did not succeed (its failed tasks and their errors), or None.

    A failed run stops early, so its wall time covers only part of the DAG: it gets no
    ratio and no breakdown, only this line.
    """
    if run["state"].split(".")[-1] == "success":
        return None
    failed = [
        f"{task_id} {task['state'].split('.')[-1]}"
        + (f" ({task['error'][:200]})" if task.get("error") else "")
        for task_id, task in run["tasks"].items()
        if task["state"].split(".")[-1] in ("failed", "upstream_failed", "up_for_retry")
    ]
    return f"DAG run {run['state'].split('.')[-1]}: " + ("; ".join(failed) or "no task failed")


def successful(entry: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(run, analysis) pairs of the runs that succeeded: the only ones with figures."""
    return [
        (run, info)
        for run, info in zip(entry["runs"], entry["analysis"], strict=True)
        if failure(run) is None
    ]


def print_results(results: list[dict[str, Any]]) -> None:
    print("\n-- DAG wall time vs the steps' own timing (seconds)")
    print(
        f"   {'rows':>9} {'runner':<9} {'run':>3} {'state':<8} {'verdict':<8} {'DAG wall':>8} "
        f"{'sum task':>8} {'own':>7} {'fit':>7} {'wall/own':>8} {'task/own':>8} "
        f"{'wall/fit':>8}"
    )
    for entry in results:
        if "error" in entry:
            print(f"   {entry['rows']:>9,} {entry['runner']:<9} failed: {entry['error'][:200]}")
            continue
        for run, info in zip(entry["runs"], entry["analysis"], strict=True):
            why = failure(run)
            if why is not None:
                print(
                    f"   {entry['rows']:>9,} {entry['runner']:<9} {run['run']:>3} FAILED "
                    f"after {run['wall']:.1f} s, no ratio: {why}"
                )
                continue
            compute = info["compute"] or float("nan")
            fit = info["fit"] or float("nan")
            print(
                f"   {entry['rows']:>9,} {entry['runner']:<9} {run['run']:>3} "
                f"{run['state'].split('.')[-1]:<8} {info['verdict'] or '-':<8} "
                f"{run['wall']:8.1f} {info['task_wall_sum']:8.1f} {compute:7.1f} {fit:7.1f} "
                f"{run['wall'] / compute:8.2f} {info['task_wall_sum'] / compute:8.2f} "
                f"{run['wall'] / fit:8.2f}"
            )
    print(
        "   own = validate + train + evaluate + deploy 'seconds' from their records (gate "
        "and promote record no timing; deploy's includes its smoke test and canary); "
        "fit = train 'fit_seconds' (the model fit alone)"
    )
    for entry in results:
        if "error" in entry:
            continue
        for run, info in successful(entry):
            print(
                f"\n   {entry['rows']:,} rows, {entry['runner']}, run {run['run']} "
                f"({run['batch']}): DAG wall {run['wall']:.1f} s (load average at start "
                f"{run['loadavg']}; machine busy {_busy(run['meter'])})"
            )
            for label, seconds in info["parts"].items():
                if entry["runner"] == "inprocess" and seconds == 0.0:
                    continue
                print(f"      {label:<92} {seconds:7.2f} s {100 * seconds / run['wall']:5.1f}%")
            print(f"      {'(not covered by the parts above)':<92} {info['unexplained']:7.2f} s")
            keys = [k for k, _ in STEP_PARTS]
            print(
                f"      {'task':<18} {'state':<8} {'wall':>7} " + " ".join(f"{k:>8}" for k in keys)
            )
            for task_id, wall in info["task_wall"].items():
                state = run["tasks"][task_id]["state"].split(".")[-1]
                split = info["per_step"].get(task_id)
                cells = " ".join(f"{split[k]:8.2f}" for k in keys) if split else ""
                print(f"      {task_id:<18} {state:<8} {wall:7.2f} {cells}")


def summary_row(info: dict[str, Any]) -> dict[str, float]:
    """The DAG wall time in five groups (they add up to it)."""
    parts = info["parts"]
    steps = [v for v in info["per_step"].values() if v]

    def total(key: str) -> float:
        return sum(v[key] for v in steps)

    airflow = (
        sum(v for k, v in parts.items() if not k.startswith("steps"))
        + total("pre")
        + total("post")
        + parts.get("steps without work-dir files (skipped)", 0.0)
    )
    return {
        "Airflow": airflow,
        "engine": total("to_create") + total("create_start") + total("remove"),
        "step extra": total("overhead"),
        "shutdown": total("exit"),
        "own": total("own"),
    }


def print_summary(results: list[dict[str, Any]]) -> None:
    print("\n-- where the DAG wall time goes (seconds; the five groups add up to the wall)")
    print(
        f"   {'rows':>9} {'runner':<9} {'run':>3} {'DAG wall':>8} {'Airflow':>8} "
        f"{'engine':>7} {'step extra':>10} {'shutdown':>8} {'own':>7} {'(fit)':>7}"
    )
    for entry in results:
        if "error" in entry:
            continue
        for run, info in successful(entry):
            row = summary_row(info)
            print(
                f"   {entry['rows']:>9,} {entry['runner']:<9} {run['run']:>3} "
                f"{run['wall']:8.1f} {row['Airflow']:8.1f} {row['engine']:7.1f} "
                f"{row['step extra']:10.1f} {row['shutdown']:8.1f} {row['own']:7.1f} "
                f"{info['fit'] or float('nan'):7.1f}"
            )
    print(
        "   Airflow = dag.test before/after the tasks, gaps between tasks, the two Python "
        "tasks (run 1's first task also starts dag.test's in-process Execution API), and "
        "each step task's time before the launch and after the result; engine = Docker "
        "create/start/remove around each step container; step extra = the step process "
        "outside its own timing (interpreter, imports, MLflow store open, work after the "
        "timing stops); shutdown = result.json written -> container exited; own = the "
        "steps' own 'seconds'."
    )


def _busy(meter: dict[str, float]) -> str:
    busy = meter["cpu"] + meter["other_cpu"]
    return f"{busy / meter['wall']:.2f} of {os.cpu_count()} cores"


def print_probes(probes: dict[str, Any]) -> None:
    print("\n-- container start/stop (median, seconds)")
    for label, seconds in probes["container"].items():
        print(f"   {label:<72} {seconds:6.3f}")
    imports = probes["imports"]
    print(
        "\n-- imports, each alone in a fresh interpreter (median, seconds); 'exit' = last "
        "statement -> process gone (docker: container exited and removed)"
    )
    print(f"   {'':<40} {'in image':>9} {'on host':>9} {'exit img':>9} {'exit host':>9}")
    for label in imports["image"]:
        print(
            f"   {label:<40} {imports['image'][label]:9.2f} {imports['host'][label]:9.2f} "
            f"{imports['image_exit'][label]:9.2f} {imports['host_exit'][label]:9.2f}"
        )
    if probes.get("store"):
        print("\n-- MLflow SQLite store (copy of a run's store), inside the image (median, s)")
        for label, seconds in probes["store"].items():
            print(f"   {label:<40} {seconds:6.2f}")
    fit = probes.get("fit")
    if fit:
        print(
            f"\n-- the spec's pipeline fit on {fit['rows']}, host and container alternately "
            "(seconds)"
        )
        print(
            f"   host:      {', '.join(f'{x:.1f}' for x in fit['host'])} "
            f"(median {fit['host_median']:.1f})"
        )
        print(
            f"   container: {', '.join(f'{x:.1f}' for x in fit['image'])} "
            f"(median {fit['image_median']:.1f})"
        )


def estimate(probes: dict[str, Any]) -> dict[str, float]:
    """What the probes predict for the step containers of one run (one per step task)."""
    container, imports = probes["container"], probes["imports"]
    engine = container["api: whole sequence"] - container["api: wait (python -c pass runs)"]
    store = (probes.get("store") or {}).get("open store + one registry call", 0.0)
    n = len(STEP_TASKS)
    return {
        f"engine: create + start + remove, x{n}": n * engine,
        f"empty interpreter run in the container (wait), x{n}": n
        * container["api: wait (python -c pass runs)"],
        "step imports in the image (each step's set)": sum(
            imports["image"][f"step {k}"] for k in STEP_TASKS
        ),
        f"MLflow SQLite store open, x{n}": n * store,
        "interpreter shutdown + container exit/remove (each step's set)": sum(
            imports["image_exit"][f"step {k}"] for k in STEP_TASKS
        ),
    }


def measured_docker_overhead(entry: dict[str, Any]) -> list[dict[str, float]]:
    """The same categories, measured in the docker runs (sums over the step tasks)."""
    out = []
    for _, info in successful(entry):
        steps = [v for v in info["per_step"].values() if v]
        out.append(
            {
                "engine: launch -> started + exit -> removed": sum(
                    v["to_create"] + v["create_start"] + v["remove"] for v in steps
                ),
                "in container, outside the step's own timing": sum(v["overhead"] for v in steps),
                "result.json -> container exited": sum(v["exit"] for v in steps),
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rows",
        type=int,
        nargs="+",
        default=[100_000, 1_000_000],
        help="rows per monthly batch (default 100000 1000000)",
    )
    parser.add_argument(
        "--runners", nargs="+", default=["docker", "inprocess"], choices=["docker", "inprocess"]
    )
    parser.add_argument("--repeat", type=int, default=5, help="repeats of each probe")
    parser.add_argument("--no-probes", action="store_true", help="skip the overhead probes")
    parser.add_argument(
        "--fit-rows",
        type=int,
        default=100_000,
        help="rows of the host-vs-container fit probe (0: skip it)",
    )
    parser.add_argument(
        "--report",
        type=Path,
        metavar="JSON",
        help="only print the report of a saved bench_orchestration.json",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--world", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.world, args.result)
        return
    if args.report:
        saved = json.loads(args.report.read_text(encoding="utf-8"))
        report(saved["results"], saved.get("probes") or {})
        return

    _common.header("bench_orchestration: retrain DAG through Airflow vs its steps' compute")
    versions = _common.versions()  # before anything imports Airflow (and its log setup)
    print(f"   {versions}, apache-airflow {importlib.metadata.version('apache-airflow')}")
    image = task_image()
    print(f"   task image {image}; runners {args.runners}; rows {args.rows}")
    scratch = Path(tempfile.mkdtemp(prefix="bench-orch-"))
    scratch.chmod(0o755)
    airflow_home = scratch / "airflow-home"
    airflow_home.mkdir()
    env = airflow_env(airflow_home)
    LOGS.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True, env=env
    )
    print(f"   airflow db migrate: {time.perf_counter() - started:.1f} s (once, not counted)")
    results: list[dict[str, Any]] = []
    store_home: Path | None = None
    try:
        for rows in args.rows:
            files = [_common.churn_file(rows, month=1), _common.churn_file(rows, month=2)]
            for runner in args.runners:
                world = make_world(scratch / f"{runner}-{rows}", files)
                log = LOGS / f"orchestration_{rows}_{runner}.log"
                print(
                    f"   running {runner} at {rows:,} rows (log {log.relative_to(ROOT)}) ...",
                    flush=True,
                )
                entry: dict[str, Any] = {"rows": rows, "runner": runner}
                try:
                    payload = run_child(world, runner, image, env, log)
                    entry.update(payload)
                    entry["analysis"] = [analyse(run) for run in payload["runs"]]
                    walls = ", ".join(
                        f"{r['wall']:.1f} s" if failure(r) is None else f"FAILED ({failure(r)})"
                        for r in payload["runs"]
                    )
                    print(f"      done: DAG walls {walls}", flush=True)
                    if runner == "docker":
                        store_home = scratch / "store-copy"
                        shutil.rmtree(store_home, ignore_errors=True)
                        store_home.mkdir()
                        if (world / "home" / "mlflow.db").exists():
                            shutil.copyfile(world / "home" / "mlflow.db", store_home / "mlflow.db")
                except RuntimeError as exc:
                    entry["error"] = str(exc)
                    print(f"      FAILED: {exc}", flush=True)
                results.append(entry)
                shutil.rmtree(world, ignore_errors=True)
                _common.write_json_result(
                    "bench_orchestration",
                    {
                        "machine": _common.machine(),
                        "image": image,
                        "results": results,
                        "partial": True,
                    },
                )
        probes: dict[str, Any] = {}
        if not args.no_probes:
            print("   probing container start/stop, imports, MLflow store ...", flush=True)
            probes["container"] = probe_container(image, args.repeat)
            probes["imports"] = probe_imports(image, max(3, args.repeat // 2 + 1))
            probes["store"] = probe_store(image, store_home, 3) if store_home else None
            if args.fit_rows:
                print("   probing the fit, host vs container ...", flush=True)
                probes["fit"] = probe_fit(image, _common.churn_file(args.fit_rows, month=1), 3)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    if probes:
        probes["predicted_per_run"] = estimate(probes)
    report(results, probes)
    path = _common.write_json_result(
        "bench_orchestration",
        {
            "machine": _common.machine(),
            "versions": versions,
            "image": image,
            "results": results,
            "probes": probes,
        },
    )
    print(f"\n   figures saved to {path}")
    failed = [e for e in results if "error" in e or any(failure(r) for r in e.get("runs", []))]
    if failed:
        raise SystemExit(f"bench_orchestration: {len(failed)} of {len(results)} cases failed")


def report(results: list[dict[str, Any]], probes: dict[str, Any]) -> None:
    print_results(results)
    print_summary(results)
    if probes:
        print_probes(probes)
        predicted = probes["predicted_per_run"]
        print(f"\n-- what the probes predict per docker run ({len(STEP_TASKS)} step containers)")
        for label, seconds in predicted.items():
            print(f"   {label:<66} {seconds:6.1f} s")
        print(f"   {'total':<66} {sum(predicted.values()):6.1f} s")
        print("   measured in the docker runs (sum over the step tasks):")
        for entry in results:
            if entry["runner"] != "docker" or "error" in entry:
                continue
            runs = [run for run, _ in successful(entry)]
            for run, measured in zip(runs, measured_docker_overhead(entry), strict=True):
                cells = "; ".join(f"{k} {v:.1f} s" for k, v in measured.items())
                print(f"   {entry['rows']:,} rows run {run['run']}: {cells}")


if __name__ == "__main__":
    main()
