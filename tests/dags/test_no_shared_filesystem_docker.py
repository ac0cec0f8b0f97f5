"""Steps that share no file system with the worker: an MLflow tracking server over HTTP
holds the registry and the artifacts, a Postgres holds the promotion lock; the step
containers get no bind mount at all (the engine may be on another host): the spec, the
suites, the run's data file, the work dir, the lock's DSN and the MLflow server's
credentials are copied into the container's own volume, and result.json is copied out of
the stopped container. The MLflow server runs behind its basic authentication, started
as the compose stack starts it.

Here the containers use ``network_mode=host`` to reach the server on 127.0.0.1 (this
engine has no bridge network); in docker-compose they join a network that reaches MLflow.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest
import yaml
from mlops_pack.airflow.container import STACK_LABEL, stack_id
from services import mlflow_passwords, mlflow_server, postgres
from support import ROOT, open_dir

SEEN: list[dict] = []


def _watch_mounts(stack: str, stop: threading.Event) -> None:
    """Record the mounts and environment of every step container of this stack (this
    test's store: other tests on the same engine run churn containers too) while the DAG
    runs."""
    while not stop.is_set():
        out = subprocess.run(
            ["docker", "ps", "-q", "--filter", f"label={STACK_LABEL}={stack}"],
            capture_output=True,
            text=True,
            check=False,
        )
        for cid in out.stdout.split():
            found = subprocess.run(
                ["docker", "inspect", "--format", "{{json .}}", cid],
                capture_output=True,
                text=True,
                check=False,
            )
            if found.returncode == 0:
                SEEN.append(json.loads(found.stdout))
        time.sleep(0.3)


@pytest.fixture
def remote_world(task_image, airflow_db, monkeypatch, tmp_path):
    from mlops_pack.datagen import churn

    include, data, home = open_dir("mlops-inc-"), open_dir("mlops-data-"), open_dir("mlops-home-")
    shutil.copytree(ROOT / "include" / "expectations", include / "expectations")
    spec = yaml.safe_load((ROOT / "include/models/churn.yaml").read_text())
    spec.pop("serving", None)  # the served path is covered by the compose stack test
    spec["gate"]["budgets"]["max_latency_ms_p95"] = None
    (include / "models").mkdir()
    (include / "models" / "churn.yaml").write_text(yaml.safe_dump(spec))
    churn.write(churn.ChurnConfig(rows=4_000, month=1), data / "m1.csv")
    for path in (include, data):
        for item in path.rglob("*"):
            item.chmod(0o755 if item.is_dir() else 0o644)
    passwords = mlflow_passwords()
    with postgres() as dsn, mlflow_server(tmp_path / "mlflow", passwords) as tracking:
        for name, value in {
            "MLOPS_PACK_INCLUDE_DIR": include,
            "MLOPS_PACK_DATA_DIR": data,
            "MLOPS_PACK_HOME": home,
            "MLOPS_PACK_TASK_IMAGE": task_image,
            "MLOPS_PACK_RUNNER": "docker",
            "MLFLOW_TRACKING_URI": tracking,
            "MLOPS_PACK_LOCK_DSN": dsn,
            "MLOPS_PACK_STEP_NETWORK": "host",
            "MLFLOW_TRACKING_USERNAME": "mlops-pack",
            "MLFLOW_TRACKING_PASSWORD": passwords["MLFLOW_PACK_PASSWORD"],
        }.items():
            monkeypatch.setenv(name, str(value))
        from mlops_pack.airflow.dag_factory import build_retrain_dag

        dag = build_retrain_dag(include / "models" / "churn.yaml")
        yield {
            "dag": dag, "home": home, "dsn": dsn, "data": data, "tracking": tracking,
            "password": passwords["MLFLOW_PACK_PASSWORD"],
        }  # fmt: skip
    for path in (include, data, home):
        shutil.rmtree(path, ignore_errors=True)


def test_retrain_dag_steps_share_no_file_system_with_the_worker(remote_world):
    from mlops_pack.registry import Registry

    stop = threading.Event()
    stack = stack_id(remote_world["home"])
    watcher = threading.Thread(target=_watch_mounts, args=(stack, stop), daemon=True)
    watcher.start()
    try:
        run = remote_world["dag"].test(run_conf={"data_path": "m1.csv", "reason": "remote"})
    finally:
        stop.set()
        watcher.join()
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "success", states
    assert states["promote"] == "success"
    registry = Registry()
    assert registry.alias("churn", "champion").version == "1"
    assert [e["to_version"] for e in registry.history("churn", "promotion")] == ["1"]
    # The result came back through the copy: the worker's work dir holds result.json.
    home = remote_world["home"]
    results = sorted(home.glob("work/*/*/promote.*/result.json"))
    assert results and json.loads(results[-1].read_text())["result"]["champion"] == "1"
    # No step container had anything bind-mounted: /work was the container's own volume,
    # and the lock's DSN (with its password) was a file there, not in the environment.
    assert SEEN, "no step container was seen running"
    tasks = set()
    for container in SEEN:
        mounts = container["Mounts"]
        assert [m["Type"] for m in mounts] == ["volume"], mounts
        assert mounts[0]["Destination"] == "/work"
        env = dict(e.split("=", 1) for e in container["Config"]["Env"])
        assert remote_world["dsn"] not in json.dumps(container["Config"]), container["Name"]
        assert remote_world["password"] not in json.dumps(container["Config"])
        assert not {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"} & set(env)
        assert env["MLOPS_PACK_LOCK_DSN_FILE"] == "/work/secrets/lock_dsn"
        assert env["MLOPS_PACK_MLFLOW_CREDENTIALS_FILE"] == "/work/secrets/registry_credentials"
        assert env["MLOPS_PACK_DATA_DIR"] == "/work/data"
        tasks.update(t for t in ("validate", "train", "promote") if f"-{t}-" in container["Name"])
    # The steps that read the data file (copied in) and the one that takes the lock.
    assert tasks == {"validate", "train", "promote"}, tasks
    # The steps signed in: the server refuses whoever does not.
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(
            f"{remote_world['tracking']}/api/2.0/mlflow/registered-models/get?name=churn"
        )
    assert refused.value.code == 401
    # The store's folder was never used as an MLflow store or a lock folder.
    assert not (home / "mlflow.db").exists() and not (home / "locks").exists()
    assert os.listdir(home) == ["work"]


def test_an_absolute_data_path_is_refused_before_any_container(remote_world, capfd):
    """The step gets a copy of the run's file at its path relative to the data folder; an
    absolute path (accepted on one host) has no place in the copy, so the worker refuses
    it with the fix, and the bad input is not retried."""
    absolute = remote_world["data"] / "m1.csv"
    run = remote_world["dag"].test(run_conf={"data_path": str(absolute), "reason": "remote"})
    tis = {ti.task_id: ti for ti in run.get_task_instances()}
    assert run.state == "failed"
    assert tis["validate"].state == "failed" and tis["validate"].try_number == 1
    assert tis["train"].state == "upstream_failed"
    out, err = capfd.readouterr()  # dag.test() prints the task logs
    assert f"data_path {absolute} is absolute" in out + err
    assert f"Fix: give the path relative to {remote_world['data']}" in out + err
