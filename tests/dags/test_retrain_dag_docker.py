"""The churn retrain DAG run through Airflow with every step in a real, hardened container."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml
from support import ROOT, free_port

NOBODY = 65534
run_ids: list[str] = []


def _open_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def _make_world(task_image, edit_spec, batches: dict, extra_files=None):
    """An include dir (the churn spec, changed by ``edit_spec``), data, a store readable and
    writable by the container user, a model server and the environment the DAG runs in."""
    include, data, home = (
        _open_dir("mlops-inc-"),
        _open_dir("mlops-data-"),
        _open_dir("mlops-home-"),
    )
    shutil.copytree(ROOT / "include" / "expectations", include / "expectations")
    spec = yaml.safe_load((ROOT / "include/models/churn.yaml").read_text())
    edit_spec(spec)
    (include / "models").mkdir()
    (include / "models" / "churn.yaml").write_text(yaml.safe_dump(spec))
    from mlops_pack.datagen import churn

    for name, cfg in batches.items():
        churn.write(cfg, data / name)
    if extra_files:
        extra_files(include, data)
    for path in (include, data):
        for item in path.rglob("*"):
            item.chmod(0o755 if item.is_dir() else 0o644)
    os.chown(home, NOBODY, NOBODY)
    env = {
        "MLOPS_PACK_INCLUDE_DIR": str(include),
        "MLOPS_PACK_DATA_DIR": str(data),
        "MLOPS_PACK_HOME": str(home),
        "MLOPS_PACK_TASK_IMAGE": task_image,
        "MLOPS_PACK_RUNNER": "docker",
    }
    import docker
    from mlops_pack.airflow.model_server import start_server

    client = docker.APIClient(base_url="unix://var/run/docker.sock")
    server = {
        "include_dir": include,
        "home": home,
        "image": task_image,
        "port": free_port(),
        "secrets_dir": _open_dir("mlops-secrets-"),
    }
    served = start_server(client, model="churn", **server)
    env.update(served.connection_env())
    return {
        "include": include,
        "data": data,
        "home": home,
        "served": served,
        "client": client,
        "server": server,
        "env": env,
    }


def _enter(world):
    """Use the world's environment (Airflow and the operators read it) until the yield ends."""
    from mlops_pack.airflow.dag_factory import build_retrain_dag

    saved = {k: os.environ.get(k) for k in world["env"]}
    os.environ.update(world["env"])
    world["dag"] = build_retrain_dag(world["include"] / "models" / "churn.yaml")
    return saved


def _leave(world, saved):
    from mlops_pack.airflow.model_server import stop_server

    stop_server(world["client"], world["served"])
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _pinned_clean_holdout(spec):
    # A clean, fixed holdout, so a champion trained on noisy labels is measurably worse.
    spec["holdout"] = {"strategy": "file", "path": "holdouts/churn.csv"}
    spec["gate"]["floors"] = {"roc_auc": 0.6}
    spec["serving"]["canary"]["requests"] = 40
    # The noisy-label champion's scores sit about 0.19 above the clean challenger's on
    # average; the canary rightly calls that a shift (0.05 by default): allow it here.
    spec["serving"]["canary"]["max_mean_shift"] = 0.3


def _holdout_and_bad_batches(include, data):
    from mlops_pack.datagen import churn

    churn.write(churn.ChurnConfig(rows=5_000, month=9), include / "holdouts" / "churn.csv")
    shutil.copy(data / "clean.csv", data / "clean_again.csv")  # an identical challenger
    bad = (data / "clean.csv").read_text().splitlines()
    bad[5] = bad[5].rsplit(",", 1)[0] + ","  # a missing label
    (data / "bad.csv").write_text("\n".join(bad) + "\n")


@pytest.fixture(scope="module")
def world(task_image, airflow_db):
    from mlops_pack.datagen import churn

    batches = {
        "noisy.csv": churn.ChurnConfig(rows=8_000, month=1, label_noise=0.3),
        "clean.csv": churn.ChurnConfig(rows=8_000, month=2),
        "worse.csv": churn.ChurnConfig(rows=8_000, month=3, label_noise=0.45),
    }
    world = _make_world(task_image, _pinned_clean_holdout, batches, _holdout_and_bad_batches)
    saved = _enter(world)
    try:
        yield world
    finally:
        _leave(world, saved)


def _shipped_policy(spec):
    """The shipped spec (out-of-time holdout, the default gate) with a shorter canary and
    no single-row latency budget, which measures the CI machine, not the models."""
    spec["serving"]["canary"]["requests"] = 40
    spec["gate"]["budgets"]["max_latency_ms_p95"] = None
    # After concept drift the churn rate itself moves, so the new model's mean score
    # differs from the old one's on the same rows; the canary's mean-shift check (0.05)
    # would call that a regression (a limit, see docs/serving.md).
    spec["serving"]["canary"]["max_mean_shift"] = 0.3


@pytest.fixture(scope="module")
def drift_world(task_image, airflow_db):
    from mlops_pack.datagen import churn

    batches = {
        "month_01.csv": churn.ChurnConfig(rows=12_000, month=1),
        "month_06_concept.csv": churn.ChurnConfig(rows=12_000, month=6, concept_drift=1.0),
    }
    world = _make_world(task_image, _shipped_policy, batches)
    saved = _enter(world)
    try:
        yield world
    finally:
        _leave(world, saved)


def test_concept_drift_challenger_is_promoted_and_served_through_the_dag(drift_world):
    """Month 1, then month 6 after concept drift 1.0: judged on the newest rows, the
    retrained model wins, passes deploy, and is what the server serves."""
    from mlops_pack.hashing import sha256_file

    dag, home = drift_world["dag"], drift_world["home"]
    run, states = _run(dag, {"data_path": "month_01.csv"})
    assert run.state == "success", states
    assert _served_version(drift_world)["version"] == "1"
    run, states = _run(dag, {"data_path": "month_06_concept.csv", "reason": "drift"})
    assert run.state == "success", states
    decision = _result(home, run, "gate")["result"]
    assert decision["verdict"] == "promote", decision["summary"]
    assert decision["holdout"]["strategy"] == "out_of_time"
    drifted = sha256_file(drift_world["data"] / "month_06_concept.csv")
    assert decision["holdout"]["source_data_sha256"] == drifted
    assert states["deploy"] == states["promote"] == "success"
    assert _registry().alias("churn", "champion").version == "2"
    served = _served_version(drift_world)
    assert served["version"] == "2" and served["candidate"] is None


def _run(dag, conf: dict):
    run = dag.test(run_conf=conf)
    run_ids.append(run.run_id)
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    return run, states


def _registry():
    from mlops_pack.registry import Registry

    return Registry()


def _result(home: Path, run, task_id: str) -> dict:
    folder = home / "work" / run.dag_id
    found = sorted(folder.glob(f"*/{task_id}.*/result.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(found[-1].read_text())


def _served_version(world) -> str:
    from mlops_pack.server_client import ServerClient

    served = world["served"]
    return ServerClient(served.url, served.secret("prediction_key")).ok("GET", "/version")


def test_retrain_dag_in_containers(world, caplog):
    dag, home = world["dag"], world["home"]
    caplog.set_level("INFO")

    run, states = _run(dag, {"data_path": "noisy.csv", "reason": "first champion"})
    assert run.state == "success", states
    assert states["deploy"] == states["promote"] == "success"
    assert _registry().alias("churn", "champion").version == "1"
    deploy = _result(home, run, "deploy")["result"]
    assert {c["name"]: c["passed"] for c in deploy["checks"]} == {
        "ready": True,
        "load": True,
        "offline_match": True,
        "smoke_latency_p95": True,
        "smoke_errors": True,
        "canary": True,
    }  # no stable model yet: no canary
    assert _served_version(world)["version"] == "1"

    run, states = _run(dag, {"data_path": "clean.csv"})
    assert run.state == "success", states
    decision = _result(home, run, "gate")["result"]
    assert decision["verdict"] == "promote", decision["summary"]
    assert states["deploy"] == states["promote"] == "success"
    deploy = _result(home, run, "deploy")["result"]
    checks = {c["name"]: c for c in deploy["checks"]}
    assert all(c["passed"] for c in checks.values()), checks
    assert checks["canary_traffic"]["requests"] >= 40
    assert checks["offline_match"]["max_abs_diff"] <= 1e-6
    promotion = _result(home, run, "promote")["result"]
    assert promotion["served"]["served"]["version"] == "2"
    assert promotion["served"]["before"]["version"] == "1"
    assert _registry().alias("churn", "champion").version == "2"
    assert _registry().alias("churn", "previous").version == "1"
    served = _served_version(world)
    assert served["version"] == "2" and served["candidate"] is None
    assert (
        served["artifact_sha256"] == _registry().version("churn", "2").tags["mlops.artifact_sha256"]
    )

    run, states = _run(dag, {"data_path": "worse.csv"})
    assert run.state == "success", states  # a rejection is a normal, green outcome
    assert states["gate"] == "success"
    assert states["deploy"] == states["promote"] == "skipped"
    assert _served_version(world)["version"] == "2"
    assert _result(home, run, "gate")["result"]["verdict"] == "reject"
    assert _registry().alias("churn", "champion").version == "2"

    versions_before = len(_registry().client.search_model_versions("name='churn'"))
    run, states = _run(dag, {"data_path": "bad.csv"})
    assert run.state == "failed"
    assert states["validate"] == "failed"
    validate = next(ti for ti in run.get_task_instances() if ti.task_id == "validate")
    assert validate.try_number == 1  # bad data is not retried
    assert "label_not_null" in _result(home, run, "validate")["error"]
    assert len(_registry().client.search_model_versions("name='churn'")) == versions_before
    assert _registry().alias("churn", "champion").version == "2"
    # The server dies in the middle of a canary: the DAG fails clearly, nothing moves.
    killed = threading.Event()
    threading.Thread(target=_kill_during_canary, args=(world, killed), daemon=True).start()
    run, states = _run(
        dag,
        {
            "data_path": "clean_again.csv",
            "gate_mode": "non_inferiority",
            "gate_margin": 0.05,
            "reason": "server killed mid-canary",
        },
    )
    assert killed.is_set()
    assert run.state == "failed" and states["deploy"] == "failed", states
    assert states["promote"] == "upstream_failed"
    assert "stopped answering during the deploy" in _result(home, run, "deploy")["error"]
    assert _registry().alias("churn", "champion").version == "2"
    from mlops_pack.airflow.model_server import start_server

    world["served"] = start_server(world["client"], model="churn", **world["server"])
    assert _served_version(world)["version"] == "2"

    # The server's secrets reached the steps as files that are gone after each step, and
    # appear in no task log and no record.
    secrets = [world["served"].secret("admin_token"), world["served"].secret("prediction_key")]
    assert not list((home / "work").rglob("secrets"))
    records = "".join(p.read_text() for p in (home / "work").rglob("*.json"))
    assert caplog.text and "deploy" in caplog.text
    for secret in secrets:
        assert secret not in caplog.text and secret not in records

    # No step container of these runs is left behind (other runs on the engine may exist).
    for run_id in run_ids:
        left = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=io.mlops-pack.run={run_id[:63]}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert left == [], run_id


def _kill_during_canary(world, killed: threading.Event) -> None:
    from mlops_pack.errors import ServiceUnavailableError
    from mlops_pack.server_client import ServerClient

    served = world["served"]
    admin = ServerClient(served.url, served.secret("admin_token"))
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            if admin.ok("GET", "/admin/stats")["slots"]["mode"] == "canary":
                time.sleep(0.5)
                world["client"].kill(served.container)
                killed.set()
                return
        except ServiceUnavailableError:
            return
        time.sleep(0.2)
