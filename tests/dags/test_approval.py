"""Human approval before promotion, run through Airflow: nobody answers, the default wins."""

from __future__ import annotations

import shutil

import yaml
from support import ROOT


def test_unanswered_approval_times_out_to_reject_and_nothing_is_promoted(
    store, monkeypatch, airflow_db, tmp_path
):
    from mlops_pack.airflow.dag_factory import build_retrain_dag
    from mlops_pack.registry import Registry

    spec = yaml.safe_load((ROOT / "include/models/churn.yaml").read_text())
    # About two seconds to answer, default Reject; no server, so approval guards promote.
    spec["gate"]["approval"] = {"required": True, "timeout_hours": 0.0005, "default": "reject"}
    del spec["serving"]
    (tmp_path / "models").mkdir()
    shutil.copytree(ROOT / "include" / "expectations", tmp_path / "expectations")
    (tmp_path / "models" / "churn.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.setenv("MLOPS_PACK_RUNNER", "inprocess")
    monkeypatch.setenv("MLOPS_PACK_INCLUDE_DIR", str(tmp_path))

    dag = build_retrain_dag(tmp_path / "models" / "churn.yaml")
    run = dag.test(run_conf={"data_path": "churn/churn_month_01.csv", "reason": "approval"})
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert str(run.state) == "success", states
    assert states["gate"] == "success" and states["approve"] == "success", states
    assert states["approver"] == "skipped" and states["promote"] == "skipped", states
    registry = Registry()
    assert registry.alias("churn", "champion") is None
    assert registry.history("churn", "promotion") == []
