"""The registry behind MLflow's basic authentication, as the compose stack runs it (the
MLflow image's start script, include/mlflow/serve.py, with its two users): what a step
sees when it signs in as the pack's user, as the read-only user, wrongly or not at all.

MLflow refuses a read of a model that does not exist (403, so that its answers never tell
which names exist) instead of reporting it missing; the pack must still read "no
champion yet" for a new model, and must not retry a refusal as if MLflow were down.
"""

from __future__ import annotations

import pytest
from mlops_pack import mlflow_credentials
from mlops_pack.errors import BadInputError
from mlops_pack.registry import CHAMPION, Registry
from mlops_pack.settings import Settings
from services import mlflow_passwords, mlflow_server, mlflow_signin


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    passwords = mlflow_passwords()
    with mlflow_server(tmp_path_factory.mktemp("auth") / "mlflow", passwords) as tracking:
        yield {"tracking": tracking, "passwords": passwords}


def signed_out(monkeypatch) -> None:
    """No MLflow credentials in this process's environment, and whatever a step puts
    there (the credentials file is read into os.environ) removed after the test."""
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(name, "recorded so that teardown restores the original")
        monkeypatch.delenv(name)


def registry(server, monkeypatch, tmp_path, user: str | None, password: str | None = None):
    """A Registry as a step builds it, signed in as ``user`` (None: no credentials)."""
    signed_out(monkeypatch)
    if user:
        signin = mlflow_signin(user, server["passwords"])
        if password:
            signin["MLFLOW_TRACKING_PASSWORD"] = password
        for name, value in signin.items():
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    env = {"MLFLOW_TRACKING_URI": server["tracking"], "MLOPS_PACK_HOME": str(tmp_path)}
    return Registry(Settings.from_env(env))


def test_a_model_that_does_not_exist_yet_reads_as_missing(server, monkeypatch, tmp_path):
    pack = registry(server, monkeypatch, tmp_path, "mlops-pack")
    assert pack.alias("never_registered", CHAMPION) is None
    assert pack.model_tags("never_registered") == {}
    with pytest.raises(BadInputError, match="version 3 does not exist"):
        pack.version("never_registered", "3")


def test_the_reader_reads_what_the_pack_wrote_and_cannot_move_an_alias(
    server, monkeypatch, tmp_path
):
    from mlflow.exceptions import MlflowException

    pack = registry(server, monkeypatch, tmp_path, "mlops-pack")
    pack.ensure_model("auth_churn")
    pack.set_model_tag("auth_churn", "mlops.note", "set by the pack")
    reader = registry(server, monkeypatch, tmp_path, "mlops-reader")
    assert reader.model_tags("auth_churn")["mlops.note"] == "set by the pack"
    assert reader.alias("auth_churn", CHAMPION) is None
    with pytest.raises(MlflowException) as denied:
        reader.versions.set_model_tag("auth_churn", "mlops.note", "changed by a server")
    assert denied.value.error_code == "PERMISSION_DENIED"


@pytest.mark.parametrize("password", [None, "a-wrong-password-of-some-length"])
def test_a_step_without_the_right_password_fails_once_and_says_how_to_fix_it(
    server, monkeypatch, tmp_path, password
):
    """Refused is not down: the error is bad input (not retried), names MLflow's code
    and the variables to set, and never the password."""
    user = "mlops-pack" if password else None
    step = registry(server, monkeypatch, tmp_path, user, password)
    with pytest.raises(BadInputError) as refused:
        step.alias("auth_churn", CHAMPION)
    message = str(refused.value)
    assert "UNAUTHENTICATED" in message
    assert "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in message
    assert refused.value.payload["rule"] == "mlflow_access"
    assert server["passwords"]["MLFLOW_PACK_PASSWORD"] not in message


def test_a_step_signs_in_from_the_credentials_file_it_is_given(
    server, monkeypatch, tmp_path, capsys
):
    """How a step container gets the credentials: a file among its secrets, named by
    MLOPS_PACK_MLFLOW_CREDENTIALS_FILE, read into its own environment at start. Without
    it the same command is refused, once, with the fix."""
    from support import ROOT, run_cli

    spec = ROOT / "include" / "models" / "churn.yaml"
    signed_out(monkeypatch)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server["tracking"])
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLOPS_PACK_HOME", str(tmp_path / "home"))
    code, result = run_cli("history", "--spec", spec, "--out", tmp_path / "without")
    assert code == 2, result
    assert "UNAUTHENTICATED" in result["error"]

    secret = tmp_path / "registry_credentials"
    secret.write_text(mlflow_credentials.render(mlflow_signin("mlops-reader", server["passwords"])))
    monkeypatch.setenv(mlflow_credentials.FILE_VARIABLE, str(secret))
    code, result = run_cli("history", "--spec", spec, "--out", tmp_path / "with")
    assert code == 0, result
    assert result["result"] == {"model": "churn", "events": []}
    assert "MLFLOW_TRACKING_PASSWORD" not in capsys.readouterr().out


def test_a_credentials_file_that_cannot_be_read_is_named(monkeypatch, tmp_path):
    missing = tmp_path / "nowhere" / "registry_credentials"
    monkeypatch.setenv(mlflow_credentials.FILE_VARIABLE, str(missing))
    with pytest.raises(BadInputError, match=f"MLOPS_PACK_MLFLOW_CREDENTIALS_FILE={missing}"):
        mlflow_credentials.load_named_file()


def test_the_mlflow_image_refuses_to_start_without_its_passwords():
    """The start script names what is missing and how to get it, before MLflow starts."""
    import subprocess
    import sys

    from support import ROOT

    env = {"PATH": "/usr/bin:/bin", "MLFLOW_BACKEND_STORE_URI": "sqlite:///unused.db"}
    started = subprocess.run(
        [sys.executable, str(ROOT / "include" / "mlflow" / "serve.py"), "--serve-artifacts"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert started.returncode == 1
    assert "MLFLOW_AUTH_ADMIN_PASSWORD, MLFLOW_FLASK_SERVER_SECRET_KEY" in started.stderr
    assert "MLFLOW_BACKEND_STORE_URI" not in started.stderr.split("not set")[0]
    assert "run `mlops-pack stack init`" in started.stderr
