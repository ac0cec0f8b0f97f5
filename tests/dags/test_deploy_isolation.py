"""The deploy task's server secrets reach its own container only, and a deploy container
killed mid-canary (SIGKILL: the step cannot clean up) still leaves the server safe.

While the deploy task's canary runs through Airflow (Docker runner), a second container
with exactly the mounts a concurrent step gets (the store read-write, at its host path,
as the same user, plus its own work dir) searches everything it can see for the secrets.
Then the deploy container is killed; the operator must turn traffic off and drop the
candidate from the worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from support import open_dir, register_dag

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serving"))
from serving_support import churn_served, write_spec

DAG_ID = f"deploy_isolation_{uuid.uuid4().hex[:8]}"  # names this test's step container
# What a curious step could run: read every file under the mounts a step has.
SNOOP = """
import json, os, sys
secrets = [s.encode() for s in sys.argv[2:]]
hits, seen = [], []
for top in (sys.argv[1], "/work", "/tmp", "/run"):
    for folder, _, files in os.walk(top):
        for name in files:
            path = os.path.join(folder, name)
            try:
                with open(path, "rb") as handle:
                    data = handle.read()
            except OSError:
                continue
            seen.append(path)
            hits += [path for s in secrets if s in data]
print(json.dumps({"hits": hits, "seen": seen}))
"""


@pytest.fixture(scope="module")
def served(task_image, data_dir, airflow_db):
    with churn_served(task_image, data_dir) as state:
        yield state


def _wait_for_canary(admin, timeout: float = 600) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body, _ = admin.call("GET", "/admin/stats")
        if status == 200 and body["slots"]["mode"] == "canary":
            return True
        time.sleep(0.5)
    return False


def _snoop_then_kill(served, secrets: list[str], found: dict) -> None:
    """During the canary: a concurrent step-like container searches; then kill deploy."""
    from mlops_pack.airflow.container import container_user
    from mlops_pack.server_client import ServerClient

    server = served["server"]
    if not _wait_for_canary(ServerClient(server.url, server.secret("admin_token"))):
        return
    home = served["home"]
    uid, gid = container_user(home)
    work = open_dir("iso-snoop-")
    os.chown(work, uid, gid)
    deploying = subprocess.run(
        ["docker", "ps", "-q", "--filter", f"name={DAG_ID}-deploy"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    snoop = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp",
         "--user", f"{uid}:{gid}", "--cap-drop", "ALL",
         "-v", f"{home}:{home}", "-v", f"{work}:/work",
         "--entrypoint", "python", served["image"], "-c", SNOOP, str(home), *secrets],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    found.update(json.loads(snoop.stdout), deploying=deploying)
    # The deploy step gets no chance to clean up: SIGKILL, as the OOM killer would.
    subprocess.run(["docker", "kill", *deploying], capture_output=True, check=False)


def test_secrets_reach_only_the_deploy_container_and_a_killed_deploy_leaves_the_server_safe(
    served, monkeypatch, caplog, capfd
):
    from airflow.sdk import DAG
    from mlops_pack.airflow.operators import DeployModelOperator
    from mlops_pack.server_client import ServerClient

    server = served["server"]
    include = open_dir("iso-inc-")
    write_spec(
        include,
        latency_budget_ms_p95=60000,  # the smoke test must pass on a busy machine
        canary={"enabled": True, "mode": "canary", "share": 0.5, "requests": 100000,
                "max_seconds": 600, "synthetic_traffic": True},
    )  # fmt: skip
    for key, value in {
        **server.connection_env(),
        "MLOPS_PACK_INCLUDE_DIR": str(include),
        "MLOPS_PACK_TASK_IMAGE": served["image"],
        "MLOPS_PACK_RUNNER": "docker",
    }.items():
        monkeypatch.setenv(key, value)
    secrets = [server.secret("admin_token"), server.secret("prediction_key")]
    # The fixture trained in-process as root; give the store to the container user, as a
    # deployment's store belongs to the user its steps run as.
    subprocess.run(["chown", "-R", "65534:65534", str(served["home"])], check=True)
    private_before = set(Path("/dev/shm").glob("mlops-pack-secrets-*"))
    with DAG(DAG_ID, schedule=None, catchup=False) as dag:
        DeployModelOperator(
            task_id="deploy",
            model="churn",
            challenger_version="2",
            smoke_sample_uri=served["smoke_sample_uri"],
            server_conn_id="mlops_pack_server_churn",
        )
    register_dag(dag)
    found: dict = {}
    snooper = threading.Thread(target=_snoop_then_kill, args=(served, secrets, found))
    caplog.set_level("INFO")
    snooper.start()
    run = dag.test()
    snooper.join(120)

    # A concurrent step container saw the store, and no secret in it or anywhere else.
    assert found.get("deploying"), "the canary never ran, or the deploy container was not found"
    assert any(path.endswith("mlflow.db") for path in found["seen"]), found["seen"][:20]
    assert found["hits"] == []
    # The killed deploy failed, and the operator put the server back: no candidate traffic.
    assert run.state == "failed"
    admin = ServerClient(server.url, server.secret("admin_token"))
    slots = admin.ok("GET", "/admin/stats")["slots"]
    assert slots["candidate"] is None and slots["mode"] == "off", slots
    assert slots["stable"]["version"] == "1"
    # Secrets in no task log, no XCom, no record; the private directory is gone.
    logs = caplog.text + "".join(capfd.readouterr())  # task logs go to the captured stdout
    assert "canary traffic off, candidate dropped" in logs
    records = "".join(p.read_text() for p in served["home"].rglob("*.json"))
    xcom = _xcom_text(dag.dag_id)
    for secret in secrets:
        assert secret not in logs and secret not in records and secret not in xcom
    assert set(Path("/dev/shm").glob("mlops-pack-secrets-*")) == private_before


def _xcom_text(dag_id: str) -> str:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(XComModel).filter(XComModel.dag_id == dag_id).all()
        return json.dumps([str(row.value) for row in rows])
