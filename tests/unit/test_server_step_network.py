"""Which Docker network a step that calls a model server joins (deploy, promote,
rollback): the servers are on 127.0.0.1 in the embedded default and services of their
own network in docker-compose.yaml, where a host-network step cannot resolve them (the
shipped stack's deploy hung that way until MLOPS_PACK_SERVER_STEP_NETWORK existed;
tests/stack/test_compose_networks.py runs the deploy on the shipped networks)."""

from __future__ import annotations

import pytest


def test_with_an_mlflow_server_the_network_must_be_named(monkeypatch):
    from airflow.exceptions import AirflowFailException
    from mlops_pack.airflow.exceptions import MlopsBadInputFailure
    from mlops_pack.airflow.operators import DeployModelOperator

    monkeypatch.delenv("MLOPS_PACK_SERVER_STEP_NETWORK", raising=False)
    monkeypatch.setenv("MLOPS_PACK_STEP_NETWORK", "mlops-pack-steps")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    operator = DeployModelOperator(
        task_id="deploy", model="churn", smoke_sample_uri="x", challenger_version="1"
    )
    operator._calls_server = True  # what the server's secrets set before the container
    wanted = r"SERVER_STEP_NETWORK is not set\. Fix: set it to a Docker network that reaches"
    with pytest.raises(MlopsBadInputFailure, match=wanted) as no:
        operator._step_network(remote=True)
    assert isinstance(no.value, AirflowFailException)  # bad settings are not retried
    monkeypatch.setenv("MLOPS_PACK_SERVER_STEP_NETWORK", "mlops-pack-server-steps")
    assert operator._step_network(remote=True) == "mlops-pack-server-steps"
    # A step that calls no server keeps the MLflow-only network.
    operator._calls_server = False
    assert operator._step_network(remote=True) == "mlops-pack-steps"


def test_the_embedded_default_keeps_the_host_network(monkeypatch):
    from mlops_pack.airflow.operators import DeployModelOperator

    monkeypatch.delenv("MLOPS_PACK_SERVER_STEP_NETWORK", raising=False)
    operator = DeployModelOperator(
        task_id="deploy", model="churn", smoke_sample_uri="x", challenger_version="1"
    )
    operator._calls_server = True
    assert operator._step_network(remote=False) == "host"
