"""Every DAG file imports cleanly, is tagged and retried, and parses fast without heavy imports."""

from __future__ import annotations

import subprocess
import sys
import time

from support import ROOT

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
            if task.task_id == "deploy":  # by design: an interrupted canary is not retried
                assert task.retries == 0
            elif task.task_id not in ("run_overrides", "challenger_passed"):
                assert task.retries >= 1, task.task_id


def test_each_dag_file_parses_under_half_a_second(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    DagBag(str(ROOT / "dags"))  # warm imports of Airflow itself
    started = time.perf_counter()
    DagBag(str(ROOT / "dags"))
    assert time.perf_counter() - started < 0.5


def test_a_spec_requiring_approval_gets_an_approval_task(airflow_db, tmp_path):
    import yaml
    from mlops_pack.airflow.dag_factory import build_retrain_dag

    spec = yaml.safe_load((ROOT / "include/models/churn.yaml").read_text())
    spec["gate"]["approval"] = {"required": True, "timeout_hours": 2, "default": "reject"}
    (tmp_path / "models").mkdir()
    path = tmp_path / "models" / "churn.yaml"
    path.write_text(yaml.safe_dump(spec))
    dag = build_retrain_dag(path)
    approve = dag.get_task("approve")
    assert approve.response_timeout.total_seconds() == 7200
    assert approve.defaults == ["Reject"]
    # Served model: approve -> approver -> deploy -> promote (nothing deploys unapproved).
    assert "approve" in dag.get_task("approver").upstream_task_ids
    assert "challenger_passed" in approve.upstream_task_ids
    assert "approver" in dag.get_task("deploy").upstream_task_ids
    assert dag.get_task("promote").upstream_task_ids >= {"deploy"}
    assert dag.get_task("deploy").retries == 0  # a half-run canary is for a person
    # Not served: approve -> approver -> promote, and no deploy task.
    del spec["serving"]
    path.write_text(yaml.safe_dump(spec))
    dag = build_retrain_dag(path)
    assert "deploy" not in dag.task_ids
    assert "approver" in dag.get_task("promote").upstream_task_ids


def test_run_params_bound_what_a_run_may_change(airflow_db):
    from airflow.sdk import ParamsDict
    from mlops_pack.airflow.dag_factory import run_params
    from mlops_pack.spec import load_spec

    params = ParamsDict(run_params(load_spec(ROOT / "include/models/churn.yaml")))
    params.validate()
    for key, bad in (
        ("gate_margin", 5),
        ("gate_mode", "whatever"),
        ("gate_confidence", 0.1),
        ("reason", "x" * 501),
    ):
        candidate = ParamsDict(run_params(load_spec(ROOT / "include/models/churn.yaml")))
        candidate[key] = candidate.get_param(key).__class__(bad, **candidate.get_param(key).schema)
        try:
            candidate.validate()
        except Exception as exc:  # ParamValidationError
            assert key in str(exc) or "Invalid" in str(exc)
        else:
            raise AssertionError(f"{key}={bad!r} was accepted")
