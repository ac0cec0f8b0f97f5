"""How a model server that fetches from the registry gets its credentials: from a file
in its secrets folder, never from its command line."""

from __future__ import annotations

import pytest
from mlops_pack.airflow.model_server import REGISTRY_CREDENTIALS, _registry_args
from mlops_pack.errors import BadInputError
from mlops_pack.mlflow_credentials import read as registry_credentials


def test_the_credentials_file_gives_only_mlflow_client_credentials(tmp_path):
    path = tmp_path / REGISTRY_CREDENTIALS
    path.write_text(
        "# read-only user\nMLFLOW_TRACKING_USERNAME=reader\n\nMLFLOW_TRACKING_PASSWORD=s=3\n"
    )
    assert registry_credentials(path) == {
        "MLFLOW_TRACKING_USERNAME": "reader",
        "MLFLOW_TRACKING_PASSWORD": "s=3",
    }
    path.write_text("MLFLOW_TRACKING_TOKEN=t\nLD_PRELOAD=/tmp/x.so\n")
    with pytest.raises(BadInputError, match=rf"{REGISTRY_CREDENTIALS}:2: expected KEY=value"):
        registry_credentials(path)


def test_the_server_command_line_names_the_file_and_never_a_secret(tmp_path):
    assert _registry_args(None, tmp_path, "/run/s") == []
    assert _registry_args("http://mlflow:5000", tmp_path, "/run/s") == [
        "--registry-url",
        "http://mlflow:5000",
    ]
    (tmp_path / REGISTRY_CREDENTIALS).write_text("MLFLOW_TRACKING_TOKEN=t\n")
    args = _registry_args("http://mlflow:5000", tmp_path, "/run/s")
    assert args[-2:] == ["--registry-credentials-file", f"/run/s/{REGISTRY_CREDENTIALS}"]
    with pytest.raises(ValueError, match="carries credentials"):
        _registry_args("http://reader:pw@mlflow:5000", tmp_path, "/run/s")
