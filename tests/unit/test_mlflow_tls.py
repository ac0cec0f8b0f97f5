"""TLS between the pack and its MLflow server: the CA bundle a worker hands to its step
containers and model servers, and the MLflow image's start script refusing half a TLS
setting. (A retrain and a registry fetch over HTTPS: tests/dags/
test_no_shared_filesystem_docker.py, tests/serving/test_registry_fetch.py.)"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from mlops_pack.errors import BadInputError
from mlops_pack.mlflow_credentials import CA_VARIABLE, ca_bundle
from services import mlflow_passwords, tls_files
from support import ROOT

SERVE = ROOT / "include" / "mlflow" / "serve.py"


def test_the_bundle_is_read_in_the_worker_and_a_bad_one_is_refused_with_the_fix(tmp_path):
    assert ca_bundle({}) is None
    tls = tls_files(tmp_path / "tls")
    assert ca_bundle({CA_VARIABLE: str(tls.ca)}) == tls.ca.read_text()

    missing = tmp_path / "nowhere.pem"
    with pytest.raises(BadInputError, match=rf"{CA_VARIABLE}={missing}: cannot read it") as err:
        ca_bundle({CA_VARIABLE: str(missing)})
    assert "Fix: name the PEM file of the CA" in str(err.value)
    assert err.value.payload == {"rule": "mlflow_ca_bundle", "file": str(missing)}

    der = tmp_path / "ca.der"  # a certificate, but not PEM
    der.write_bytes(b"0\x82\x01\x0b0\x81\xb2\xa0\x03\x02\x01\x02")
    with pytest.raises(BadInputError, match=rf"{der}: holds no PEM certificate"):
        ca_bundle({CA_VARIABLE: str(der)})
    # A combined PEM (certificate and key) named by mistake: only the certificate goes on.
    combined = tmp_path / "combined.pem"
    combined.write_text(tls.cert.read_text() + tls.key.read_text())
    forwarded = ca_bundle({CA_VARIABLE: str(combined)})
    assert "PRIVATE KEY" not in forwarded
    assert forwarded == tls.cert.read_text()
    key_only = tmp_path / "key.pem"
    key_only.write_text(tls.key.read_text())
    with pytest.raises(BadInputError, match="holds no PEM certificate") as err:
        ca_bundle({CA_VARIABLE: str(key_only)})
    assert "openssl x509" in str(err.value)


def _serve(tmp_path, **tls: str) -> subprocess.CompletedProcess:
    """The MLflow image's start script, as its entrypoint runs it; it must refuse before
    it touches the database (the URI here names none that exists)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(mlflow_passwords(), MLFLOW_BACKEND_STORE_URI=f"sqlite:///{tmp_path}/no/db")
    env.update(tls)
    return subprocess.run(
        [sys.executable, str(SERVE), "--serve-artifacts"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_start_script_refuses_half_a_tls_setting(tmp_path):
    tls = tls_files(tmp_path / "tls")
    done = _serve(tmp_path, MLFLOW_TLS_CERT_FILE=str(tls.cert))
    assert done.returncode == 1
    assert "MLFLOW_TLS_CERT_FILE and MLFLOW_TLS_KEY_FILE go together" in done.stderr
    assert "only MLFLOW_TLS_CERT_FILE is set" in done.stderr

    done = _serve(
        tmp_path, MLFLOW_TLS_CERT_FILE=str(tls.cert), MLFLOW_TLS_KEY_FILE=str(tmp_path / "x")
    )
    assert done.returncode == 1
    assert f"MLFLOW_TLS_KEY_FILE={tmp_path / 'x'} is not a readable file" in done.stderr
    assert not (tmp_path / "no").exists()  # refused before the database was opened

    # uvicorn's options given another way would be dropped without a word: refused.
    both = {"MLFLOW_TLS_CERT_FILE": str(tls.cert), "MLFLOW_TLS_KEY_FILE": str(tls.key)}
    done = _serve(tmp_path, MLFLOW_UVICORN_OPTS="--timeout-keep-alive 30", **both)
    assert done.returncode == 1
    assert "uvicorn's options are given too" in done.stderr
    assert not (tmp_path / "no").exists()
