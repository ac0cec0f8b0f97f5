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

import contextlib
import http.client
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
from services import mlflow_passwords, mlflow_server, postgres, tls_files
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


def _watched_run(world: dict, reason: str):
    """The retrain DAG on m1.csv, its step containers recorded in SEEN (emptied first)."""
    SEEN.clear()
    stop = threading.Event()
    watcher = threading.Thread(
        target=_watch_mounts, args=(stack_id(world["home"]), stop), daemon=True
    )
    watcher.start()
    try:
        return world["dag"].test(run_conf={"data_path": "m1.csv", "reason": reason})
    finally:
        stop.set()
        watcher.join()


@pytest.fixture
def remote_world(task_image, airflow_db, monkeypatch, tmp_path):
    with _remote_world(task_image, monkeypatch, tmp_path) as world:
        yield world


@pytest.fixture
def tls_world(task_image, airflow_db, monkeypatch, tmp_path):
    """The same, the MLflow server answering HTTPS only, its certificate signed by a CA
    of the site's own that the worker trusts through MLFLOW_TRACKING_SERVER_CERT_PATH."""
    tls = tls_files(tmp_path / "tls")
    with _remote_world(task_image, monkeypatch, tmp_path, tls) as world:
        monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(tls.ca))
        yield {**world, "tls": tls}


@contextlib.contextmanager
def _remote_world(task_image, monkeypatch, tmp_path, tls=None):
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
    with postgres() as dsn, mlflow_server(tmp_path / "mlflow", passwords, tls) as tracking:
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
        try:
            yield {
                "dag": dag, "home": home, "dsn": dsn, "data": data, "tracking": tracking,
                "password": passwords["MLFLOW_PACK_PASSWORD"],
            }  # fmt: skip
        finally:
            for path in (include, data, home):
                shutil.rmtree(path, ignore_errors=True)


def test_retrain_dag_steps_share_no_file_system_with_the_worker(remote_world):
    from mlops_pack.registry import Registry

    run = _watched_run(remote_world, "remote")
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


def test_retrain_dag_over_https_with_a_private_ca(tls_world):
    """Between hosts the MLflow server answers HTTPS only (include/mlflow/serve.py's TLS
    variables), with a certificate of the site's own CA. The worker trusts it through
    MLFLOW_TRACKING_SERVER_CERT_PATH, a path on the worker's host: each step container
    gets a copy of the bundle among its secrets and the variable names the copy."""
    from mlops_pack.registry import Registry

    run = _watched_run(tls_world, "tls")
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "success", states
    assert tls_world["tracking"].startswith("https://")
    assert Registry().alias("churn", "champion").version == "1"
    assert SEEN, "no step container was seen running"
    # The steps reached the server (they registered the version) verifying its
    # certificate: against their copy of the bundle, never with verification off.
    for container in SEEN:
        env = dict(e.split("=", 1) for e in container["Config"]["Env"])
        assert env["MLFLOW_TRACKING_SERVER_CERT_PATH"] == "/work/secrets/registry_ca.pem"
        assert env["MLFLOW_TRACKING_URI"] == tls_world["tracking"]
        assert "MLFLOW_TRACKING_INSECURE_TLS" not in env
        assert [m["Type"] for m in container["Mounts"]] == ["volume"]
    # Nothing on that port speaks plain HTTP, and a client without the CA is refused.
    plain = tls_world["tracking"].replace("https://", "http://") + "/health"
    with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
        urllib.request.urlopen(plain, timeout=5)
    with pytest.raises(urllib.error.URLError) as unverified:
        urllib.request.urlopen(f"{tls_world['tracking']}/health", timeout=5)
    assert "CERTIFICATE_VERIFY_FAILED" in str(unverified.value)


def test_an_unreadable_ca_bundle_fails_the_task_with_the_fix(tls_world, monkeypatch, capfd):
    """MLFLOW_TRACKING_SERVER_CERT_PATH naming no file is the worker's bad setting: the
    task fails on its first try with the variable, the path and the fix, before any step
    container starts (in one it would be a TLS error on its first request)."""
    missing = tls_world["tls"].ca.parent / "no-such-ca.pem"
    monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(missing))
    run = _watched_run(tls_world, "tls")
    tis = {ti.task_id: ti for ti in run.get_task_instances()}
    assert run.state == "failed"
    assert tis["validate"].state == "failed" and tis["validate"].try_number == 1
    assert not SEEN, [c["Name"] for c in SEEN]
    out, err = capfd.readouterr()
    assert f"MLFLOW_TRACKING_SERVER_CERT_PATH={missing}: cannot read it" in out + err
    assert "Fix: name the PEM file of the CA" in out + err
