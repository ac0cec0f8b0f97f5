"""Errors are classified where they happen: 4xx is bad input, no answer or 5xx is retried.

A tiny real HTTP server stands in for a model server that answers 503 (as one restarting
does) or 4xx; the registry is a real MLflow store, or a tracking URI nobody listens on.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from mlops_pack.errors import (
    EXIT_BAD_INPUT,
    EXIT_INTERNAL,
    EXIT_OK,
    BadInputError,
    ServerRefusedError,
    ServiceUnavailableError,
)
from mlops_pack.server_client import ServerClient
from support import CHURN_SPEC, free_port, run_cli


def test_a_503_is_retried_then_reported_as_unavailable_not_bad_input(answering):
    server = answering(503)
    client = ServerClient(server.url, "secret", retries=2, backoff=0.01)
    with pytest.raises(ServiceUnavailableError, match="HTTP 503") as caught:
        client.ok("GET", "/admin/stats")
    assert not isinstance(caught.value, BadInputError)
    assert caught.value.exit_code == EXIT_INTERNAL
    assert len(server.requests) == 3  # the first try and two retries
    server.requests.clear()
    with pytest.raises(ServiceUnavailableError):
        client.ok("POST", "/admin/candidate", {"version": "2"})
    assert len(server.requests) == 1  # a POST the server may have acted on is not repeated


def test_a_4xx_is_bad_input_and_not_retried(answering):
    server = answering(422)
    client = ServerClient(server.url, "secret", retries=2, backoff=0.01)
    with pytest.raises(ServerRefusedError, match="HTTP 422") as caught:
        client.ok("PUT", "/admin/traffic", {"mode": "canary"})
    assert caught.value.exit_code == EXIT_BAD_INPUT and caught.value.http_status == 422
    assert len(server.requests) == 1
    assert "secret" not in str(caught.value)


def test_no_server_at_all_is_unavailable():
    client = ServerClient(f"http://127.0.0.1:{free_port()}", "secret", retries=1, backoff=0.01)
    with pytest.raises(ServiceUnavailableError, match="did not answer"):
        client.ok("GET", "/admin/stats")


@pytest.fixture(scope="module")
def champion(tmp_path_factory, data_dir) -> Iterator[dict]:
    """A real store with churn v1 as champion (one in-process retrain)."""
    monkeypatch = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("errors-home")
    monkeypatch.setenv("MLOPS_PACK_HOME", str(home))
    monkeypatch.setenv("MLOPS_PACK_DATA_DIR", str(data_dir))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    work = tmp_path_factory.mktemp("errors-work")
    code, result = run_cli("retrain", "--spec", CHURN_SPEC, "--out", work / "retrain")
    assert code == EXIT_OK, result
    (work / "admin_token").write_text("secret")
    yield {"work": work, "monkeypatch": monkeypatch}
    monkeypatch.undo()


def _rollback(champion, out: str, *extra: str) -> tuple[int, dict]:
    return run_cli(
        "rollback", "--spec", CHURN_SPEC, "--reason", "test", "--to-version", "1",
        *extra, "--out", champion["work"] / out,
    )  # fmt: skip


def test_cli_exit_codes_follow_the_server_answer(champion, answering):
    admin = ["--admin-token-file", str(champion["work"] / "admin_token")]
    code, result = _rollback(champion, "503", "--server-url", answering(503).url, *admin)
    assert (code, result["status"]) == (EXIT_INTERNAL, "error"), result
    assert "HTTP 503" in result["error"]
    code, result = _rollback(champion, "404", "--server-url", answering(404).url, *admin)
    assert (code, result["status"]) == (EXIT_BAD_INPUT, "bad_input"), result
    assert "HTTP 404" in result["error"]


def test_a_missing_version_is_bad_input_and_an_mlflow_outage_is_retried(champion):
    code, result = run_cli(
        "rollback", "--spec", CHURN_SPEC, "--reason", "test", "--to-version", "99",
        "--out", champion["work"] / "missing",
    )  # fmt: skip
    assert (code, result["status"]) == (EXIT_BAD_INPUT, "bad_input"), result
    assert "version 99 does not exist" in result["error"]

    monkeypatch = champion["monkeypatch"]
    with monkeypatch.context() as outage:
        outage.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
        # A lock folder named explicitly counts as shared, so the outage is what fails.
        outage.setenv("MLOPS_PACK_LOCK_DIR", str(champion["work"] / "locks"))
        outage.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        outage.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
        code, result = _rollback(champion, "outage")
    assert (code, result["status"]) == (EXIT_INTERNAL, "error"), result
    assert "MLflow failed" in result["error"] and "does not exist" not in result["error"]
