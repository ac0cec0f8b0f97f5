"""`make up`'s Airflow driven through its REST API with the official Python client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import airflow_client.client as ac
import pytest
from support import ROOT, free_port

PORT = free_port()
SERVER_PORT = free_port()  # never collide with a user's `make up` or another test run
BASE = f"http://127.0.0.1:{PORT}"
DAG_ID = "mlops_retrain__churn"


@pytest.fixture(scope="module")
def stack():
    state = Path(tempfile.mkdtemp(prefix="mlops-stack-"))
    state.chmod(0o755)
    env = {
        **os.environ,
        "MLOPS_PACK_STACK_DIR": str(state),
        "MLOPS_PACK_AIRFLOW_PORT": str(PORT),
        "MLOPS_PACK_SERVER_PORT_BASE": str(SERVER_PORT),  # churn; diabetes on the next port
    }
    for key in (
        "AIRFLOW_HOME",
        "AIRFLOW__CORE__DAGS_FOLDER",
        "MLOPS_PACK_HOME",
        "MLOPS_PACK_DATA_DIR",
        "MLOPS_PACK_INCLUDE_DIR",
        "MLOPS_PACK_TASK_IMAGE",
        "MLOPS_PACK_RUNNER",
    ):
        env.pop(key, None)
    command = [sys.executable, "-m", "mlops_pack.airflow.local_stack"]
    try:
        up = subprocess.run(
            [*command, "up"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert up.returncode == 0, up.stdout + up.stderr + _tail(state / "airflow.log")
        assert "admin password:" in up.stdout
        yield {"state": state, "passwords": json.loads((state / "passwords.json").read_text())}
    finally:
        subprocess.run([*command, "down"], env=env, cwd=ROOT, capture_output=True, check=False)


def _tail(path: Path) -> str:
    return path.read_text()[-3000:] if path.exists() else ""


def _token(user: str, password: str) -> str:
    request = urllib.request.Request(
        f"{BASE}/auth/token",
        method="POST",
        data=json.dumps({"username": user, "password": password}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["access_token"]


def _client(token: str | None) -> ac.ApiClient:
    return ac.ApiClient(ac.Configuration(host=BASE, access_token=token))


def _wait_for_dag(api: ac.ApiClient) -> None:
    for _ in range(90):
        try:
            ac.DAGApi(api).get_dag(DAG_ID)
            return
        except ac.ApiException:
            time.sleep(2)
    raise AssertionError(f"{DAG_ID} never appeared")


def _run_to_end(api: ac.ApiClient, run_id: str, timeout: float = 900) -> str:
    runs = ac.DagRunApi(api)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = str(runs.get_dag_run(DAG_ID, run_id).state.value)
        if state in ("success", "failed"):
            return state
        time.sleep(3)
    raise AssertionError(f"run {run_id} did not finish in {timeout}s")


def test_rest_api_auth_trigger_poll_and_decision(stack):
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{BASE}/api/v2/dags", timeout=10)
    assert info.value.code == 401

    admin = _client(_token("admin", stack["passwords"]["admin"]))
    viewer = _client(_token("viewer", stack["passwords"]["viewer"]))
    _wait_for_dag(admin)
    ac.DAGApi(admin).patch_dag(DAG_ID, ac.DAGPatchBody(is_paused=False))
    # A viewer can read but not trigger.
    ac.DAGApi(viewer).get_dag(DAG_ID)
    with pytest.raises(ac.ApiException) as denied:
        ac.DagRunApi(viewer).trigger_dag_run(DAG_ID, ac.TriggerDAGRunPostBody(logical_date=None))
    assert denied.value.status == 403
    # conf outside the Params schema is refused at the door.
    with pytest.raises(ac.ApiException) as bad:
        ac.DagRunApi(admin).trigger_dag_run(
            DAG_ID, ac.TriggerDAGRunPostBody(logical_date=None, conf={"gate_margin": 5})
        )
    assert bad.value.status == 400

    # Two runs triggered at once for one model (unpausing may also have queued the latest
    # scheduled run): every run ends green, at most one promotes, and the alias history is
    # one consistent chain. The manual runs train on the same batch, so after one of them
    # (or the scheduled run) promotes, the other's identical model ties and is rejected.
    conf = {"data_path": "churn/churn_month_01.csv", "reason": "REST test"}
    runs = [
        ac.DagRunApi(admin)
        .trigger_dag_run(DAG_ID, ac.TriggerDAGRunPostBody(logical_date=None, conf=conf))
        .dag_run_id
        for _ in range(2)
    ]
    states = [_run_to_end(admin, run_id) for run_id in runs]
    assert states == ["success", "success"]
    for run in ac.DagRunApi(admin).get_dag_runs(DAG_ID).dag_runs:
        assert _run_to_end(admin, run.dag_run_id) == "success"
    decisions = [
        ac.XComApi(admin)
        .get_xcom_entry(DAG_ID, "gate", run_id, "return_value")
        .actual_instance.value
        for run_id in runs
    ]
    verdicts = [json.loads(d)["verdict"] if isinstance(d, str) else d["verdict"] for d in decisions]
    assert verdicts.count("promote") <= 1 and "reject" in verdicts

    os.environ["MLOPS_PACK_HOME"] = str(stack["state"] / "store")
    try:
        from mlops_pack.registry import Registry

        promotions = Registry().history("churn", "promotion")
    finally:
        os.environ.pop("MLOPS_PACK_HOME")
    assert [(e.get("from_version"), e["to_version"]) for e in promotions] == [(None, "1")]

    # make up's model server serves what was promoted; a prediction as in the README.
    key = (stack["state"] / "secrets" / "churn" / "prediction_key").read_text()
    row = {
        "tenure_months": 12,
        "monthly_charges": 70.5,
        "total_charges": 800,
        "support_calls": 2,
        "age": 40,
        "contract": "month_to_month",
        "plan": "basic",
        "payment_method": "card",
        "paperless_billing": "yes",
        "region": "north",
    }
    request = urllib.request.Request(
        f"http://127.0.0.1:{SERVER_PORT}/predict",
        method="POST",
        data=json.dumps({"rows": [row]}).encode(),
        headers={"Authorization": f"Bearer {key}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = json.loads(response.read())
    assert answer["version"] == "1" and answer["slot"] == "stable" and answer["labels"][0] in (0, 1)
