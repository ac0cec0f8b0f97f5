"""A custom metric from an in-house module, used by the gate of a DAG run in containers.

The extension lives outside the include dir and the image: only ``MLOPS_PACK_EXTENSIONS``
and ``MLOPS_PACK_EXTENSIONS_DIR`` tell Airflow and the step containers where it is.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
import yaml
from support import ROOT, open_dir

NOBODY = 65534


@pytest.fixture
def extension_world(task_image, airflow_db, monkeypatch):
    from mlops_pack.datagen import churn

    include, data, home, extensions = (
        open_dir(f"mlops-ext-{name}-") for name in ("inc", "data", "home", "mods")
    )
    shutil.copy(ROOT / "include" / "extensions" / "churn_extras.py", extensions)
    shutil.copytree(ROOT / "include" / "expectations", include / "expectations")
    spec = yaml.safe_load((ROOT / "include" / "models" / "churn.yaml").read_text())
    spec.pop("serving")  # the server is not what this test is about
    spec["metrics"].append("top_decile_lift")
    # A floor is checked on the first run too: the gate must compute the custom metric.
    spec["gate"]["floors"]["top_decile_lift"] = 1.2
    (include / "models").mkdir()
    (include / "models" / "churn.yaml").write_text(yaml.safe_dump(spec))
    churn.write(churn.ChurnConfig(rows=6_000, month=1), data / "batch.csv")
    for path in (include, data, extensions):
        for item in path.rglob("*"):
            item.chmod(0o755 if item.is_dir() else 0o644)
    if os.geteuid() == 0:
        os.chown(home, NOBODY, NOBODY)
    for name, value in {
        "MLOPS_PACK_INCLUDE_DIR": include,
        "MLOPS_PACK_DATA_DIR": data,
        "MLOPS_PACK_HOME": home,
        "MLOPS_PACK_TASK_IMAGE": task_image,
        "MLOPS_PACK_RUNNER": "docker",
        "MLOPS_PACK_EXTENSIONS": "churn_extras",
        "MLOPS_PACK_EXTENSIONS_DIR": extensions,
    }.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield include / "models" / "churn.yaml", home
    for path in (include, data, home, extensions):
        shutil.rmtree(path, ignore_errors=True)


def test_custom_metric_gates_a_dag_run_in_containers(extension_world):
    from mlops_pack.airflow.dag_factory import build_all

    spec_path, home = extension_world
    # As the DAG file does: extensions first (from MLOPS_PACK_EXTENSIONS_DIR), then specs.
    dag = build_all(spec_path.parents[1])["mlops_retrain__churn"]
    run = dag.test(run_conf={"data_path": "batch.csv", "reason": "custom metric"})
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "success", states
    assert states["promote"] == "success", states

    def result(task_id: str) -> dict:
        found = list((home / "work" / run.dag_id).glob(f"*/{task_id}.*/result.json"))
        return json.loads(found[-1].read_text())["result"]

    evaluation = result("evaluate")
    assert 1.5 < evaluation["challenger"]["metrics"]["top_decile_lift"] < 5.0
    floor = next(c for c in result("gate")["checks"] if c["name"] == "floor top_decile_lift")
    assert floor["verdict"] == "pass" and floor["value"] > 1.2, floor
