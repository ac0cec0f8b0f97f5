"""The pod the Kubernetes runner builds (no cluster here: the pod spec is the subject),
and the pod's entry point run for real on a step."""

from __future__ import annotations

import json

import pytest


class _Built(Exception):
    """Raised where the pod would run: there is no cluster; the pod spec is the subject."""


def _pod(tmp_path, monkeypatch, **env):
    """The pod request a promote task builds, through the operator's own execute."""
    from types import SimpleNamespace

    from mlops_pack.airflow import kubernetes
    from mlops_pack.airflow.container import ContainerLimits
    from mlops_pack.airflow.operators import PromoteModelOperator

    for name, value in {
        "MLFLOW_TRACKING_URI": "http://mlflow:5000",
        "MLOPS_PACK_LOCK_DSN": "postgresql://u:topsecret@pg/locks",
        "MLOPS_PACK_K8S_SECRET": "mlops-pack-step-secrets",
        "MLOPS_PACK_WORK_ROOT": str(tmp_path / "work"),
        **env,
    }.items():
        monkeypatch.setenv(name, value)

    def built(pod_operator, context):
        raise _Built(pod_operator)

    monkeypatch.setattr(kubernetes, "run_step_pod", built)
    operator = PromoteModelOperator(
        task_id="promote",
        model="churn",
        decision={"decision_id": "d1"},
        runner="kubernetes",
        image="registry.example/mlops-pack-task:1",
        limits=ContainerLimits(memory="2g", cpus=1.0, tmpfs_size="256m"),
        container_timeout=600,
    )
    ti = SimpleNamespace(dag_id="mlops_retrain__churn", task_id="promote", try_number=1)
    with pytest.raises(_Built) as pod:
        operator.execute({"ti": ti, "run_id": "manual__1"})
    return pod.value.args[0].build_pod_request_obj(dry_run=True)


def test_the_step_pod_is_hardened_and_returns_its_result_through_xcom(tmp_path, monkeypatch):
    pod = _pod(tmp_path, monkeypatch)
    spec = pod.spec
    base = next(c for c in spec.containers if c.name == "base")
    assert base.image == "registry.example/mlops-pack-task:1"
    assert base.command == ["python", "-m", "mlops_pack.pod_entry"]
    assert base.args == [
        "promote",
        "--spec",
        "/opt/include/models/churn.yaml",
        "--out",
        "/work/run",
        "--run-id",
        "manual__1",
        "--decision",
        "/work/run/decision.json",
    ]
    # Pod and container hardening, as the Docker runner's.
    assert spec.security_context.run_as_non_root is True
    assert spec.security_context.run_as_user == 65534
    assert spec.security_context.seccomp_profile.type == "RuntimeDefault"
    sc = base.security_context
    assert sc.read_only_root_filesystem is True
    assert sc.allow_privilege_escalation is False
    assert sc.privileged is False
    assert sc.capabilities.drop == ["ALL"]
    assert spec.automount_service_account_token is False
    assert not spec.host_network
    assert base.resources.limits == {"cpu": "1.0", "memory": "2Gi"}
    assert base.resources.requests == base.resources.limits
    assert spec.active_deadline_seconds == 600
    # Only in-pod volumes: an in-memory /tmp and the work dir; no host path.
    volumes = {v.name: v for v in spec.volumes}
    assert all(v.host_path is None for v in spec.volumes)
    assert volumes["tmp"].empty_dir.medium == "Memory"
    assert volumes["tmp"].empty_dir.size_limit == "256Mi"
    mounts = {m.mount_path for m in base.volume_mounts}
    assert {"/tmp", "/work", "/airflow/xcom"} <= mounts
    # The result comes back through the provider's XCom sidecar.
    assert any(c.name == "airflow-xcom-sidecar" for c in spec.containers)
    # Inputs travel in the spec; the lock's DSN only through the Secret.
    env = {e.name: e.value for e in base.env}
    assert json.loads(env["MLOPS_PACK_POD_INPUTS"]) == {"decision.json": '{"decision_id": "d1"}'}
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert "MLOPS_PACK_LOCK_DSN" not in env
    # Native thread pools sized to the CPU limit, not the node's cores.
    pools = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    assert {env[name] for name in pools} == {"1"}
    assert "topsecret" not in json.dumps(pod.to_dict(), default=str)
    assert [s.secret_ref.name for s in base.env_from] == ["mlops-pack-step-secrets"]


def test_a_private_ca_travels_with_the_inputs_and_a_bad_one_is_refused(tmp_path, monkeypatch):
    """An https MLflow server with a certificate of a private CA: the worker's bundle
    (MLflow's MLFLOW_TRACKING_SERVER_CERT_PATH, a path on the worker) is written into
    the pod's work dir with the inputs and the variable names it there."""
    from mlops_pack.airflow.exceptions import MlopsBadInputFailure
    from services import tls_files

    ca = tls_files(tmp_path / "tls").ca
    https = {"MLFLOW_TRACKING_URI": "https://mlflow.example:5000"}
    pod = _pod(tmp_path, monkeypatch, MLFLOW_TRACKING_SERVER_CERT_PATH=str(ca), **https)
    base = next(c for c in pod.spec.containers if c.name == "base")
    env = {e.name: e.value for e in base.env}
    assert env["MLFLOW_TRACKING_SERVER_CERT_PATH"] == "/work/run/registry_ca.pem"
    inputs = json.loads(env["MLOPS_PACK_POD_INPUTS"])
    assert inputs["registry_ca.pem"] == ca.read_text()
    assert inputs["decision.json"] == '{"decision_id": "d1"}'
    with pytest.raises(MlopsBadInputFailure, match=r"MLFLOW_TRACKING_SERVER_CERT_PATH=.*: cannot"):
        _pod(tmp_path, monkeypatch, MLFLOW_TRACKING_SERVER_CERT_PATH=str(tmp_path / "no.pem"))


def test_a_pod_needs_an_mlflow_server(tmp_path, monkeypatch):
    from mlops_pack.airflow.exceptions import MlopsBadInputFailure

    with pytest.raises(MlopsBadInputFailure, match="MLFLOW_TRACKING_URI must be an MLflow server"):
        _pod(tmp_path, monkeypatch, MLFLOW_TRACKING_URI="sqlite:///x.db")


def test_pod_entry_writes_inputs_and_hands_the_result_to_the_sidecar(tmp_path, monkeypatch, store):
    from mlops_pack.pod_entry import run
    from support import CHURN_SPEC

    monkeypatch.setenv("MLOPS_PACK_POD_INPUTS", json.dumps({"overrides.json": '{"bogus": 1}'}))
    work, xcom = tmp_path / "work", tmp_path / "xcom" / "return.json"
    argv = ["validate", "--spec", str(CHURN_SPEC), "--out", str(work)]
    code = run([*argv, "--overrides", str(work / "overrides.json")], work, xcom)
    # A bad override is the step's outcome, carried in the result: the pod still exits 0.
    assert code == 0
    result = json.loads(xcom.read_text())
    assert result == json.loads((work / "result.json").read_text())
    assert result["status"] == "bad_input" and "bogus" in result["error"]
    monkeypatch.setenv("MLOPS_PACK_POD_INPUTS", json.dumps({"../escape": "x"}))
    assert run(argv, work, tmp_path / "x2.json") == 2
