"""Every DAG file imports cleanly, is tagged and retried, and parses fast without heavy imports."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
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
    assert eval(dag_ids) == [
        "mlops_monitor__churn",
        "mlops_retrain__churn",
        "mlops_retrain__diabetes",
        "mlops_rollback",
    ]
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
            elif task.task_id != "challenger_passed":
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
    assert approve.defaults == ["Reject"] and approve.options == ["Approve", "Reject"]
    # Every answer is recorded before anything moves: approve -> record_approval ->
    # approved (skips on Reject) -> deploy -> promote (nothing deploys unapproved).
    assert dag.get_task("record_approval").upstream_task_ids >= {"approve", "gate"}
    assert "record_approval" in dag.get_task("approved").upstream_task_ids
    assert "challenger_passed" in approve.upstream_task_ids
    assert "approved" in dag.get_task("deploy").upstream_task_ids
    assert dag.get_task("promote").upstream_task_ids >= {"deploy"}
    assert dag.get_task("deploy").retries == 0  # a half-run canary is for a person
    # Not served: approve -> record_approval -> approved -> promote, and no deploy task.
    del spec["serving"]
    path.write_text(yaml.safe_dump(spec))
    dag = build_retrain_dag(path)
    assert "deploy" not in dag.task_ids
    assert "approved" in dag.get_task("promote").upstream_task_ids


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


def test_run_params_are_all_optional_in_the_form_and_the_api(airflow_db):
    """The trigger form marks a field required unless its type allows null; REST accepts
    a conf without any of them. Both must agree: every field optional, no "null" label."""
    from airflow.sdk import ParamsDict
    from mlops_pack.airflow.dag_factory import RUN_PARAMS, run_params
    from mlops_pack.spec import load_spec

    params = run_params(load_spec(ROOT / "include/models/churn.yaml"))
    assert tuple(params) == RUN_PARAMS
    for name, param in params.items():
        types = param.schema["type"]
        assert isinstance(types, list) and "null" in types, f"{name} is required in the form"
        assert param.value is None, f"{name}: an empty form field must mean the spec's value"
        for choice in param.schema.get("enum", []):
            label = param.schema["values_display"][json.dumps(choice).strip('"')]
            assert label != "null", f"{name} shows a literal 'null' choice"
    assert params["gate_mode"].schema["values_display"]["null"] == "spec default (superiority)"
    # What the form submits for untouched fields, and an empty REST conf, both validate.
    ParamsDict(params).validate()
    form = ParamsDict(run_params(load_spec(ROOT / "include/models/churn.yaml")))
    for name in RUN_PARAMS:
        form[name] = None
    form.validate()


def test_unknown_conf_keys_fail_the_run_before_any_step(airflow_db):
    from mlops_pack.airflow.dag_factory import build_retrain_dag

    dag = build_retrain_dag(ROOT / "include/models/churn.yaml")
    run = dag.test(run_conf={"reason": "x", "gate_margn": 0.01})
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert str(run.state) == "failed"
    assert states["run_overrides"] == "failed"
    assert states["validate"] == "upstream_failed"


def _write_specs(include: Path, broken: dict) -> None:
    import yaml

    (include / "models").mkdir(parents=True)
    for name in ("churn", "diabetes"):
        shutil.copy(ROOT / "include/models" / f"{name}.yaml", include / "models")
    (include / "models" / "zz_broken.yaml").write_text(yaml.safe_dump(broken))


def test_one_broken_spec_leaves_every_other_dag_and_names_file_and_field(airflow_db, tmp_path):
    import yaml

    broken = yaml.safe_load((ROOT / "include/models/churn.yaml").read_text())
    broken["name"] = "zz_broken"
    broken["gate"]["primary"]["margn"] = 0.01  # the typo from the field report
    _write_specs(tmp_path, broken)
    code = (
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag({str(ROOT / 'dags')!r})\n"
        "print(repr(bag.import_errors)); print(sorted(bag.dag_ids))\n"
        "dag = bag.dags['mlops_retrain__zz_broken']\n"
        "print(dag.description); print(sorted(dag.tags))\n"
        "print(bag.dags['mlops_rollback'].params.get_param('model').schema['enum'])\n"
    )
    env = {**os.environ, "MLOPS_PACK_INCLUDE_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env
    )
    errors, dag_ids, description, tags, models = out.stdout.strip().splitlines()[-5:]
    assert errors == "{}"
    assert eval(dag_ids) == [
        "mlops_monitor__churn",
        "mlops_retrain__churn",
        "mlops_retrain__diabetes",
        "mlops_retrain__zz_broken",
        "mlops_rollback",
    ]
    assert "zz_broken.yaml" in description and "gate.primary.margn" in description
    assert "broken-spec" in eval(tags)
    assert eval(models) == ["churn", "diabetes"]


def test_a_broken_spec_dag_fails_at_once_with_the_error(airflow_db, tmp_path):
    from mlops_pack.airflow.dag_factory import build_all

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "bad.yaml").write_text("name: bad\ntask: [unclosed\n")
    from airflow.sdk.exceptions import AirflowFailException

    dags = build_all(tmp_path)
    assert "bad.yaml" in dags["mlops_retrain__bad"].description
    task = dags["mlops_retrain__bad"].get_task("spec_error")
    assert task.retries == 0
    with pytest.raises(AirflowFailException, match=r"bad\.yaml: line 3"):
        task.python_callable(*task.op_args)
    assert dags["mlops_rollback"].params.get_param("model").value == ""


@pytest.mark.parametrize(
    ("task_dag", "built"),
    [
        ("mlops_retrain__diabetes", ["mlops_retrain__diabetes"]),
        ("mlops_monitor__churn", ["mlops_monitor__churn", "mlops_retrain__churn"]),
        ("mlops_retrain__zz_broken", ["mlops_retrain__zz_broken"]),
        # The rollback DAG lists every model; an id no file matches gets every DAG.
        ("mlops_rollback", "all"),
        ("mlops_retrain__nothing_like_it", "all"),
        ("", "all"),
    ],
)
def test_a_task_start_parses_only_its_models_dags(airflow_db, tmp_path, task_dag, built):
    """A worker parses the DAG file at every task start, under Airflow's parsing context
    (the environment variable the task runner sets, as here); only the task's model is
    built then. The dag-processor sets no context and sees every DAG."""
    import yaml

    broken = yaml.safe_load((ROOT / "include/models/churn.yaml").read_text())
    broken["name"] = "zz_broken"
    broken["gate"]["primary"]["margn"] = 0.01
    _write_specs(tmp_path, broken)
    code = (
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag({str(ROOT / 'dags')!r})\n"
        "print(repr(bag.import_errors)); print(sorted(bag.dag_ids))\n"
    )
    env = {
        **os.environ,
        "MLOPS_PACK_INCLUDE_DIR": str(tmp_path),
        "_AIRFLOW_PARSING_CONTEXT_DAG_ID": task_dag,
    }
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env
    )
    errors, dag_ids = out.stdout.strip().splitlines()[-2:]
    assert errors == "{}"
    every = [
        "mlops_monitor__churn",
        "mlops_retrain__churn",
        "mlops_retrain__diabetes",
        "mlops_retrain__zz_broken",
        "mlops_rollback",
    ]
    assert eval(dag_ids) == (every if built == "all" else built)
