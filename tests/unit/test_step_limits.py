"""MLOPS_PACK_STEP_CPUS: the CPU quota of every step whose operator sets no limits."""

from __future__ import annotations

import pytest


def _pod_cpu(tmp_path, monkeypatch, limits=None, **env) -> str:
    """The CPU limit of the pod a promote step builds (the pod spec needs no cluster)."""
    from mlops_pack.airflow.operators import PromoteModelOperator

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    operator = PromoteModelOperator(
        task_id="promote",
        model="churn",
        decision={"decision_id": "d1"},
        runner="kubernetes",
        limits=limits,
    )
    pod = operator.step_pod(["promote"], tmp_path, None).build_pod_request_obj(dry_run=True)
    base = next(c for c in pod.spec.containers if c.name == "base")
    return base.resources.limits["cpu"]


def test_the_default_quota_is_two_cpus(tmp_path, monkeypatch):
    monkeypatch.delenv("MLOPS_PACK_STEP_CPUS", raising=False)
    assert _pod_cpu(tmp_path, monkeypatch) == "2.0"


def test_the_environment_sets_the_quota_of_steps_without_limits(tmp_path, monkeypatch):
    from mlops_pack.airflow.container import ContainerLimits

    assert _pod_cpu(tmp_path, monkeypatch, MLOPS_PACK_STEP_CPUS="1") == "1.0"
    # An operator's own limits win.
    explicit = ContainerLimits(cpus=0.5)
    assert _pod_cpu(tmp_path, monkeypatch, explicit, MLOPS_PACK_STEP_CPUS="1") == "0.5"


@pytest.mark.parametrize("value", ["two", "0", "-1", "nan"])
def test_a_bad_quota_is_refused_naming_the_variable(monkeypatch, value):
    from mlops_pack.airflow.container import default_limits
    from mlops_pack.airflow.exceptions import MlopsBadInputFailure

    monkeypatch.setenv("MLOPS_PACK_STEP_CPUS", value)
    with pytest.raises(MlopsBadInputFailure, match=r"MLOPS_PACK_STEP_CPUS=.*Fix: set it"):
        default_limits()
