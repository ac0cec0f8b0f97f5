"""The monitor DAG run by Airflow (the monitor step in the task container), its report
stored on the window's history event, and the task's extra link to it, followed through
Airflow's own api-server app (the pack's plugin mounted, Airflow's authentication)."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta

import yaml
from support import CHURN_SPEC, ROOT, run_cli

DAG_ID = "mlops_monitor__churn"


def _include(tmp_path):
    include = tmp_path / "include"
    shutil.copytree(ROOT / "include" / "expectations", include / "expectations")
    (include / "models").mkdir()
    shutil.copy(CHURN_SPEC, include / "models" / "churn.yaml")
    assert "monitoring" in yaml.safe_load(CHURN_SPEC.read_text())
    return include


def _write_traffic(store, end: datetime) -> None:
    """Month 3's rows logged as the model server logs them, in the hour before ``end``."""
    from mlops_pack.datagen import churn
    from mlops_pack.spec import load_spec

    frame = churn.frame(churn.ChurnConfig(rows=800, month=3, seed=3))
    names = [c.name for c in load_spec(CHURN_SPEC).features()]
    # The server files a record under its own day: in the hour before a midnight ``end``
    # that is the day before ``end``'s (the test failed when run just after midnight).
    first_ts = end - timedelta(minutes=50)
    day = store / "serving" / "churn" / "predictions" / f"date={first_ts.date().isoformat()}"
    day.mkdir(parents=True)
    with (day / "part-0.jsonl").open("w", encoding="utf-8") as handle:
        for first in range(0, len(frame), 100):
            rows = frame.iloc[first : first + 100]
            inputs = rows[names].astype(object).where(rows[names].notna(), None)
            record = {
                "ts": (first_ts + timedelta(minutes=first // 100)).isoformat(),
                "request_id": f"r{first}",
                "version": "1",
                "slot": "stable",
                "predictions": [0.3] * len(rows),
                "flags": [],
                "inputs": {n: inputs[n].tolist() for n in names},
            }
            handle.write(json.dumps(record) + "\n")


def test_monitor_task_links_to_its_report_on_the_models_page(
    airflow_db, store, task_image, tmp_path, monkeypatch
):
    from airflow.api_fastapi.app import create_app
    from fastapi.testclient import TestClient
    from mlops_pack.airflow.dag_factory import build_all
    from support import register_dag

    monkeypatch.delenv("MLOPS_PACK_SCHEDULES", raising=False)
    code, _ = run_cli(
        "retrain", "--spec", CHURN_SPEC, "--data", "churn/churn_month_01.csv",
        "--out", tmp_path / "retrain",
    )  # fmt: skip
    assert code == 0
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    _write_traffic(store, end)
    # A deployment's store belongs to the user its step containers run as.
    subprocess.run(["chown", "-R", "65534:65534", str(store)], check=True)
    monkeypatch.setenv("MLOPS_PACK_INCLUDE_DIR", str(_include(tmp_path)))
    monkeypatch.setenv("MLOPS_PACK_RUNNER", "docker")
    monkeypatch.setenv("MLOPS_PACK_TASK_IMAGE", task_image)
    dag = build_all()[DAG_ID]
    register_dag(dag)
    run = dag.test(logical_date=end)  # a manual run: its interval ends at its date
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert states["monitor"] == "success", states
    record = next(ti for ti in run.get_task_instances() if ti.task_id == "monitor").xcom_pull(
        task_ids="monitor"
    )
    assert record["window"]["end"] == end.isoformat() and record["window"]["rows"] == 800
    event_id = record["event_id"]

    # Airflow's api-server app, with its own users: the plugin app is mounted in it.
    passwords = tmp_path / "passwords.json"
    passwords.write_text(json.dumps({"admin": "s3cret-admin"}))
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(passwords))
    with TestClient(create_app("core")) as client:
        token = client.post(
            "/auth/token", json={"username": "admin", "password": "s3cret-admin"}
        ).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        links = client.get(
            f"/api/v2/dags/{DAG_ID}/dagRuns/{run.run_id}/taskInstances/monitor/links",
            headers=auth,
        )
        assert links.status_code == 200, links.text
        href = links.json()["extra_links"]["Monitor report"]
        assert href == f"/mlops-pack/models/churn/events/{event_id}"
        assert client.get(href).status_code == 401  # no token, no report
        report = client.get(href, headers=auth)
        assert report.status_code == 200, report.text
        assert "default-src 'none'" in report.headers["content-security-policy"]
        text = report.text
        assert "<h1>churn: champion v1" in text and end.isoformat() in text
        assert "800 rows in 8 requests" in text
        # The window shows on the model's page, linked to the same report.
        page = client.get("/mlops-pack/models/churn", headers=auth)
        assert page.status_code == 200
        assert f'href="{href}"' in page.text, page.text
