"""A retrain Asset event starts the retrain DAG under a real scheduler (`make up`'s stack).

`dag.test()` never starts Asset-scheduled DAGs, so this runs Airflow's scheduler. The
event is posted through the REST API as the monitor DAG's `emit_retrain` would emit it
(same Asset, same `extra`); the run's first task takes the incident's reason from it.
The spec has no `serving` section (no model server to start) and points at a data file
that does not exist, so the run stops at `validate` instead of training for minutes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import airflow_client.client as ac
import yaml
from airflow_stack import make_up, token
from airflow_stack import wait as _wait
from support import ROOT, free_port, open_dir, xcom_value

PORT = free_port()
BASE = f"http://127.0.0.1:{PORT}"
DAG_ID = "mlops_retrain__churn"
URI = "mlops-pack://churn/retrain"
REASON = "monitor incident 20260501T060000: decay: roc_auc 0.52 [0.49, 0.55] < 0.77"


def _include_dir() -> Path:
    include = open_dir("mlops-asset-include-")
    shutil.copytree(ROOT / "include" / "expectations", include / "expectations")
    (include / "models").mkdir()
    churn = yaml.safe_load((ROOT / "include/models/churn.yaml").read_text())
    del churn["serving"]
    churn["data"]["path"] = "churn/not_there.csv"
    churn["monitoring"] = {"retrain": {"cooldown_hours": 1}}
    (include / "models" / "churn.yaml").write_text(yaml.safe_dump(churn))
    for item in [include, *include.rglob("*")]:
        item.chmod(0o755 if item.is_dir() else 0o644)
    return include


def test_a_retrain_asset_event_starts_the_retrain_dag_with_its_reason():
    with make_up(_include_dir(), PORT, "mlops-asset-stack-") as (state, _up):
        password = json.loads((state / "passwords.json").read_text())["admin"]
        api = ac.ApiClient(ac.Configuration(host=BASE, access_token=token(BASE, "admin", password)))
        _wait("the retrain DAG", lambda: ac.DAGApi(api).get_dag(DAG_ID))
        # Schedules are off in make up's stack, yet the retrain Asset stays a trigger.
        assets = _wait(
            "the retrain Asset", lambda: ac.AssetApi(api).get_assets(uri_pattern=URI).assets
        )
        assert [a.uri for a in assets] == [URI]
        extra = {"model": "churn", "reason": "decay", "run_reason": REASON}
        ac.AssetApi(api).create_asset_event(
            ac.CreateAssetEventsBody(asset_id=assets[0].id, extra=extra)
        )

        runs = _wait(
            "an Asset-triggered retrain run",
            lambda: ac.DagRunApi(api).get_dag_runs(DAG_ID).dag_runs,
            timeout=180,
        )
        assert [str(r.run_type.value) for r in runs] == ["asset_triggered"]
        run_id = runs[0].dag_run_id

        def overrides_done():
            ti = ac.TaskInstanceApi(api).get_task_instance(DAG_ID, run_id, "run_overrides")
            return ti.state is not None and str(ti.state.value) in ("success", "failed")

        _wait("run_overrides", overrides_done, timeout=240)
        overrides = xcom_value(api, DAG_ID, "run_overrides", run_id)
        assert overrides["reason"] == REASON
