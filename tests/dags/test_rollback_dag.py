"""The rollback DAG through Airflow, plus an in-house subclassed operator adding a step."""

from __future__ import annotations

import os
import sys

import pytest
from support import CHURN_SPEC, ROOT, free_port, promote_month_two, run_cli


@pytest.fixture
def inprocess(store, monkeypatch, airflow_db):
    monkeypatch.setenv("MLOPS_PACK_RUNNER", "inprocess")
    monkeypatch.setenv("MLOPS_PACK_INCLUDE_DIR", str(ROOT / "include"))
    monkeypatch.syspath_prepend(str(ROOT / "include" / "extensions"))


def test_rollback_dag_moves_champion_back_and_a_subclass_reports_history(
    inprocess, store, monkeypatch, tmp_path
):
    from mlops_pack.registry import Registry

    assert run_cli("retrain", "--spec", CHURN_SPEC, "--out", tmp_path / "r1")[0] == 0
    assert promote_month_two(tmp_path / "r2") == 0
    assert Registry().alias("churn", "champion").version == "2"
    # The served model must roll back with the alias: a server (a local process, as
    # without Docker) serving the champion v2, reachable through its Connection.
    from mlops_pack.airflow import model_server
    from mlops_pack.server_client import ServerClient

    served, handle = model_server.launch(
        "churn",
        runner="inprocess",
        include_dir=ROOT / "include",
        home=store,
        secrets_dir=tmp_path / "secrets",
        log_file=tmp_path / "server.log",
        port=free_port(),
    )
    try:
        assert model_server.serve_champion(served) == "2"
        for key, value in served.connection_env().items():
            monkeypatch.setenv(key, value)
        _rollback_through_airflow(tmp_path)
        public = ServerClient(served.url, served.secret("prediction_key"))
        assert public.ok("GET", "/version")["version"] == "1"
    finally:
        model_server.stop(handle)
    event = Registry().history("churn", "rollback")[-1]
    assert event["served_version"] == "1"


def _rollback_through_airflow(tmp_path):
    from airflow.sdk import DAG
    from mlops_pack.airflow.dag_factory import build_rollback_dag
    from mlops_pack.registry import Registry

    dag: DAG = build_rollback_dag(["churn", "diabetes"])
    from operators import HistoryReportOperator  # include/extensions/operators.py

    with dag:
        report = HistoryReportOperator(task_id="history_report", model="churn", last=5)
    dag.get_task("rollback") >> report
    run = dag.test(run_conf={"model": "churn", "reason": "latency regression in prod"})
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert str(run.state) == "success", states
    registry = Registry()
    assert registry.alias("churn", "champion").version == "1"
    assert registry.alias("churn", "previous").version == "2"
    event = registry.history("churn", "rollback")[-1]
    assert event["reason"] == "latency regression in prod"
    assert event["dag_run_id"] == run.run_id
    ti = next(t for t in run.get_task_instances() if t.task_id == "history_report")
    assert ti.state == "success"
    assert "operators" in sys.modules and os.environ["MLOPS_PACK_RUNNER"] == "inprocess"
