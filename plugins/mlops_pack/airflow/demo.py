"""``python -m mlops_pack.airflow.demo``: the churn retrain DAG twice, through Airflow.

Sets up an Airflow home with SQLite and a local MLflow store under ``.mlops/demo``,
generates two monthly batches, runs the retrain DAG on each (the first promotes, the
second compares on the same holdout) and prints one line per task and the decision
tables; Airflow's and the steps' full logs go to ``.mlops/demo/demo.log``. Every step
runs in the task container when a Docker engine answers; otherwise in-process, and it
says so.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from mlops_pack.airflow.local_docker import build_task_image, docker_ready, give_store_to_containers

ROOT = Path.cwd()
DEMO = ROOT / ".mlops" / "demo"
LOG = DEMO / "demo.log"


@contextlib.contextmanager
def output_to(log_file: Path) -> Iterator[None]:
    """Send everything written to stdout and stderr, by this process and its children
    (Airflow's task logs, the step containers' output), to ``log_file``.

    At the file-descriptor level, because Airflow's log handlers and subprocesses hold
    the descriptors, not ``sys.stdout``.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with log_file.open("ab") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def task_lines(run) -> list[str]:
    """One line per task of a finished DAG run: task id, state, duration; in run order."""
    instances = sorted(
        run.get_task_instances(), key=lambda ti: (ti.start_date is None, ti.start_date, ti.task_id)
    )
    lines = []
    for ti in instances:
        state = str(ti.state.value if hasattr(ti.state, "value") else ti.state)
        took = f"{ti.duration:7.1f} s" if ti.duration is not None else "      - "
        lines.append(f"  {ti.task_id:<20} {state:<16} {took}")
    return lines


def _prepare(rows: int) -> dict[str, str]:
    if DEMO.exists():
        shutil.rmtree(DEMO)
    home, data, airflow_home = DEMO / "store", DEMO / "data", DEMO / "airflow"
    for path in (home, data, airflow_home):
        path.mkdir(parents=True)
    runner = "docker" if docker_ready() else "inprocess"
    env = {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "MLOPS_PACK_HOME": str(home),
        "MLOPS_PACK_DATA_DIR": str(data),
        "MLOPS_PACK_INCLUDE_DIR": str(ROOT / "include"),
        "MLOPS_PACK_RUNNER": runner,
    }
    if runner == "docker":
        env["MLOPS_PACK_TASK_IMAGE"] = build_task_image(ROOT)
        give_store_to_containers(home, DEMO, data)
    else:
        print("No Docker engine answers: running every step in-process instead.")
    return env


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="python -m mlops_pack.airflow.demo",
        description="Run the churn retrain DAG twice through Airflow (months 1 and 2) on a "
        "throwaway store under .mlops/demo, deploying through a model server; print one "
        "line per task and the decision tables; write the full logs to .mlops/demo/demo.log.",
        epilog="Environment: DEMO_ROWS (rows per batch, default 20000), "
        "MLOPS_PACK_SERVER_PORT_BASE (the model server's port; default the spec's).",
    ).parse_args(argv)
    rows = int(os.environ.get("DEMO_ROWS", "20000"))
    env = _prepare(rows)
    os.environ.update(env)
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True
    )
    from mlops_pack.datagen import churn

    for month in (1, 2):
        path = churn.write(
            churn.ChurnConfig(rows=rows, month=month),
            Path(env["MLOPS_PACK_DATA_DIR"]) / f"churn_month_{month:02d}.csv",
        )
        path.chmod(0o644)
    from mlops_pack.airflow import model_server

    served, handle = model_server.launch(
        "churn",
        runner=env["MLOPS_PACK_RUNNER"],
        include_dir=ROOT / "include",
        home=Path(env["MLOPS_PACK_HOME"]),
        secrets_dir=DEMO / "secrets" / "churn",
        log_file=DEMO / "server-churn.log",
        image=env.get("MLOPS_PACK_TASK_IMAGE"),
        # the spec's serving.port unless set, as with `make up`
        port=int(os.environ.get("MLOPS_PACK_SERVER_PORT_BASE", "0")) or None,
    )
    os.environ.update(served.connection_env())
    try:
        return _run_dag_twice(env, served)
    finally:
        model_server.stop(handle)


def _run_dag_twice(env: dict[str, str], served) -> int:
    from mlops_pack.airflow.dag_factory import build_retrain_dag
    from mlops_pack.gate import decision_table
    from mlops_pack.records import DecisionRecord
    from mlops_pack.server_client import ServerClient

    dag = build_retrain_dag(ROOT / "include" / "models" / "churn.yaml")
    print(f"Full Airflow and step logs: {LOG}")
    for month in (1, 2):
        print(f"\n== run {month}: month {month} ({env['MLOPS_PACK_RUNNER']} runner)")
        with output_to(LOG):
            run = dag.test(
                run_conf={
                    "data_path": f"churn_month_{month:02d}.csv",
                    "reason": f"demo, month {month}",
                }
            )
        print("\n".join(task_lines(run)))
        print(f"DAG run {run.run_id}: {run.state}")
        work = Path(env["MLOPS_PACK_HOME"]) / "work" / dag.dag_id
        gates = sorted(work.glob("*/gate.*/decision.json"), key=lambda p: p.stat().st_mtime)
        if str(run.state) != "success" or not gates:
            print(f"the run did not succeed; see {LOG}")
            return 1
        decision = json.loads(gates[-1].read_text())
        print(decision_table(DecisionRecord.model_validate(decision)))
    version = ServerClient(served.url, served.secret("prediction_key")).ok("GET", "/version")
    print(
        f"\nModel server {served.url} served churn v{version['version']} (stopped now; "
        "`make up` starts it again with the champion)"
    )
    store = env["MLOPS_PACK_HOME"]
    print(f"\nMLflow UI:  .venv/bin/mlflow ui --backend-store-uri sqlite:///{store}/mlflow.db")
    print("Airflow UI: make up  (then http://127.0.0.1:8080)")
    print(f"Results:    {store}/work/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
