"""Every DAG file imports cleanly, is tagged and retried, and parses fast without heavy imports."""

from __future__ import annotations

import subprocess
import sys
import time

from conftest import ROOT

HEAVY = ("sklearn", "pandas", "great_expectations", "mlflow")


def test_dag_files_parse_fast_without_heavy_imports(airflow_db):
    code = (
        "import sys, time\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        "started = time.perf_counter()\n"
        f"bag = DagBag({str(ROOT / 'dags')!r})\n"
        "elapsed = time.perf_counter() - started\n"
        "print(repr(bag.import_errors)); print(sorted(bag.dag_ids)); print(elapsed)\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    errors, dag_ids, _elapsed, heavy = out.stdout.strip().splitlines()[-4:]
    assert errors == "{}"
    assert eval(dag_ids) == ["mlops_retrain__churn", "mlops_retrain__diabetes", "mlops_rollback"]
    assert heavy == "[]"


def test_every_dag_is_tagged_retried_and_documented(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(ROOT / "dags"))
    for dag in bag.dags.values():
        assert "mlops-pack" in dag.tags
        assert dag.doc_md
        assert dag.max_active_runs == 1
        assert dag.catchup is False
        for task in dag.tasks:
            if task.task_id not in ("run_overrides", "challenger_passed"):
                assert task.retries >= 1, task.task_id


def test_each_dag_file_parses_under_half_a_second(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    DagBag(str(ROOT / "dags"))  # warm imports of Airflow itself
    started = time.perf_counter()
    DagBag(str(ROOT / "dags"))
    assert time.perf_counter() - started < 0.5
