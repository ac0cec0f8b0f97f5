"""A store the container user cannot write fails at once, exit 2, never retried.

Before, SQLite in MLflow failed only after minutes of retries with "unable to open
database file". The test process runs as root, so the stores here are root-owned: step
containers then run as nobody (65534), who cannot write them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from support import ROOT, open_dir

NOBODY = 65534


@pytest.fixture
def unwritable(tmp_path_factory):
    """Include dir and data readable by anyone; a root-owned 0755 store nobody can't write."""
    from mlops_pack.datagen import churn

    include, data, store = open_dir("mlops-inc-"), open_dir("mlops-data-"), open_dir("mlops-ro-")
    shutil.copytree(ROOT / "include" / "models", include / "models")
    shutil.copytree(ROOT / "include" / "expectations", include / "expectations")
    churn.write(churn.ChurnConfig(rows=2_000, month=1), data / "churn" / "churn_month_01.csv")
    for path in (include, data):
        for item in path.rglob("*"):
            item.chmod(0o755 if item.is_dir() else 0o644)
    assert store.stat().st_uid == 0 and store.stat().st_mode & 0o777 == 0o755
    yield {"include": include, "data": data, "store": store}
    for path in (include, data, store):
        shutil.rmtree(path, ignore_errors=True)


def _expect_clear_message(message: str, store: Path) -> None:
    assert f"MLOPS_PACK_HOME {store}: not writable by uid {NOBODY}" in message, message
    assert f"chown -R {NOBODY}:{NOBODY} {store}" in message
    assert "MLOPS_PACK_CONTAINER_USER" in message


def test_step_container_refuses_an_unwritable_store(task_image, unwritable):
    store = unwritable["store"]
    work = open_dir("mlops-work-")
    os.chown(work, NOBODY, NOBODY)
    started = time.monotonic()
    done = subprocess.run(
        [
            "docker", "run", "--rm", "--network", "none", "--read-only",
            "--tmpfs", "/tmp:rw,noexec,nosuid",
            "--user", f"{NOBODY}:{NOBODY}",
            "-v", f"{unwritable['include']}:/opt/include:ro",
            "-v", f"{unwritable['data']}:/data:ro",
            "-v", f"{store}:{store}",
            "-v", f"{work}:/work",
            "-e", f"MLOPS_PACK_HOME={store}", "-e", "MLOPS_PACK_DATA_DIR=/data",
            task_image,
            "validate", "--spec", "/opt/include/models/churn.yaml", "--out", "/work",
        ],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    seconds = time.monotonic() - started
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    result = json.loads((work / "result.json").read_text())
    assert result["status"] == "bad_input"
    _expect_clear_message(result["error"], store)
    assert result["result"] == {
        "rule": "store_writable", "directory": str(store), "uid": NOBODY, "gid": NOBODY,
    }  # fmt: skip
    assert seconds < 60, seconds  # at once, not after minutes of MLflow retries
    assert not (store / "mlflow.db").exists()
    shutil.rmtree(work)


def test_dag_task_fails_at_once_without_retry_or_container(airflow_db, unwritable, capfd):
    import docker

    env = {
        "MLOPS_PACK_INCLUDE_DIR": str(unwritable["include"]),
        "MLOPS_PACK_DATA_DIR": str(unwritable["data"]),
        "MLOPS_PACK_HOME": str(unwritable["store"]),
        "MLOPS_PACK_RUNNER": "docker",
        "MLOPS_PACK_TASK_IMAGE": "mlops-pack-task:never-started",
    }
    saved = {k: os.environ.get(k) for k in [*env, "MLOPS_PACK_CONTAINER_USER"]}
    os.environ.update(env)
    os.environ.pop("MLOPS_PACK_CONTAINER_USER", None)
    client = docker.APIClient(base_url="unix://var/run/docker.sock")
    before = {c["Id"] for c in client.containers(all=True)}
    try:
        from mlops_pack.airflow.dag_factory import build_retrain_dag

        dag = build_retrain_dag(unwritable["include"] / "models" / "churn.yaml")
        run = dag.test()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    tis = {ti.task_id: ti for ti in run.get_task_instances()}
    assert run.state == "failed"
    assert tis["validate"].state == "failed"
    assert tis["validate"].try_number == 1  # not retried
    assert tis["train"].state == "upstream_failed"
    out, err = capfd.readouterr()  # dag.test() prints the task logs
    _expect_clear_message(out + err, unwritable["store"])
    assert tis["validate"].duration < 30, tis["validate"].duration
    after = {c["Id"] for c in client.containers(all=True)}
    assert not {
        c
        for c in after - before
        if client.inspect_container(c)["Config"]["Image"] == env["MLOPS_PACK_TASK_IMAGE"]
    }
