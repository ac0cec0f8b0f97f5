"""The model server answering HTTPS only (``--tls-cert-file``, ``--tls-key-file``) with a
certificate of a private CA, and the pack's server client verifying it against
``MLOPS_PACK_SERVER_CA``: the server runs for real (``python -m mlops_pack.serving``, as
the compose files start it) on a free port of 127.0.0.1. The compose stacks run it in
its container over HTTPS: tests/stack/test_compose_tls.py, tests/stack/test_local_stack.py.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from mlops_pack.ca_bundles import SERVER_CA_VARIABLE
from mlops_pack.errors import BadInputError
from mlops_pack.server_client import ServerClient
from services import tls_files
from support import CHURN_SPEC, ROOT, free_port

pytestmark = pytest.mark.timeout(180)


def _serve(folder: Path, port: int, *tls: str) -> subprocess.Popen | subprocess.CompletedProcess:
    """The server's command line with ``tls`` options; a refused start is returned
    finished, a started server running."""
    for name in ("models", "state", "predictions"):
        (folder / name).mkdir(exist_ok=True)
    for name in ("admin_token", "prediction_key"):
        (folder / name).write_text(secrets.token_urlsafe(16))
    argv = [sys.executable, "-m", "mlops_pack.serving", "--spec", str(CHURN_SPEC),
            "--models-dir", str(folder / "models"), "--state-dir", str(folder / "state"),
            "--log-dir", str(folder / "predictions"),
            "--admin-token-file", str(folder / "admin_token"),
            "--prediction-key-file", str(folder / "prediction_key"),
            "--port", str(port), *tls]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "plugins")}
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        process.wait(timeout=5)  # a refused start ends at once
    except subprocess.TimeoutExpired:
        return process
    return subprocess.CompletedProcess(argv, process.returncode, process.stdout.read().decode())


@pytest.fixture(scope="module")
def https_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("server-tls")
    tls = tls_files(root / "tls")  # the server's certificate names 127.0.0.1
    (root / "server").mkdir()
    port = free_port()
    server = _serve(root / "server", port, "--tls-cert-file", str(tls.cert),
                    "--tls-key-file", str(tls.key))  # fmt: skip
    assert isinstance(server, subprocess.Popen), server.stdout
    found = {"url": f"https://127.0.0.1:{port}", "port": port, "tls": tls,
             "key": (root / "server" / "prediction_key").read_text()}  # fmt: skip
    try:
        with pytest.MonkeyPatch.context() as env:  # wait for it as a trusting client
            env.setenv(SERVER_CA_VARIABLE, str(tls.ca))
            ServerClient(found["url"], found["key"]).wait_ready(60)
        yield found
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_server_answers_https_to_a_client_that_trusts_its_ca(https_server, monkeypatch):
    monkeypatch.setenv(SERVER_CA_VARIABLE, str(https_server["tls"].ca))
    version = ServerClient(https_server["url"], https_server["key"]).ok("GET", "/version")
    assert version["model"] == "churn", version


def test_a_client_without_the_ca_is_refused_with_the_fix(https_server, monkeypatch, tmp_path):
    """Refused by the certificate: bad input (no retry makes it pass), saying what to
    set; with another CA named, saying that one did not sign it."""
    monkeypatch.delenv(SERVER_CA_VARIABLE, raising=False)
    with pytest.raises(BadInputError) as refused:
        ServerClient(https_server["url"], https_server["key"], retries=0).call("GET", "/version")
    said = str(refused.value)
    assert "CERTIFICATE_VERIFY_FAILED" in said and f"set {SERVER_CA_VARIABLE}" in said, said
    assert https_server["key"] not in said
    other = tls_files(tmp_path / "other")  # a CA that signed another server
    monkeypatch.setenv(SERVER_CA_VARIABLE, str(other.ca))
    with pytest.raises(BadInputError, match="names a CA that did not sign"):
        ServerClient(https_server["url"], https_server["key"], retries=0).call("GET", "/version")
    # Plain HTTP gets no answer from it.
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(f"http://127.0.0.1:{https_server['port']}/version", timeout=10)


def test_with_the_ca_set_plain_http_to_another_host_is_refused_before_sending(monkeypatch, tls):
    """A Connection without "schema": "https" beside MLOPS_PACK_SERVER_CA: the token
    would cross the network in the clear before the server dropped the request."""
    monkeypatch.setenv(SERVER_CA_VARIABLE, str(tls.ca))
    for url in ("http://model-server-churn:8181", "HTTP://serving.example.internal:8181"):
        with pytest.raises(BadInputError, match='Connection "schema": "https"'):
            ServerClient(url, "never-sent")
    # On this host (the embedded default's servers) plain HTTP stays possible.
    assert ServerClient("http://127.0.0.1:8181", "k").url == "http://127.0.0.1:8181"
    assert ServerClient("HTTPS://127.0.0.1:8181", "k").url == "HTTPS://127.0.0.1:8181"


@pytest.fixture
def tls(tmp_path):
    return tls_files(tmp_path / "tls")


def test_a_ca_bundle_that_cannot_be_used_is_refused_naming_the_variable(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere.pem"
    monkeypatch.setenv(SERVER_CA_VARIABLE, str(missing))
    with pytest.raises(BadInputError, match=rf"{SERVER_CA_VARIABLE}={missing}: cannot read"):
        ServerClient("https://127.0.0.1:1", "k")
    # Plain HTTP does not read it: the variable is for https servers.
    assert ServerClient("http://127.0.0.1:1", "k").url == "http://127.0.0.1:1"


@pytest.mark.parametrize(
    ("given", "said"),
    [
        (("--tls-cert-file", "cert.pem"), "--tls-cert-file and --tls-key-file go together"),
        (("--tls-key-file", "key.pem"), "--tls-cert-file and --tls-key-file go together"),
        (("--tls-cert-file", "nowhere.pem", "--tls-key-file", "nowhere-key.pem"),
         "--tls-cert-file nowhere.pem is not a readable file"),
    ],
)  # fmt: skip
def test_the_server_refuses_half_a_tls_setting_before_it_starts(tmp_path, given, said):
    (tmp_path / "server").mkdir()
    refused = _serve(tmp_path / "server", free_port(), *given)
    assert isinstance(refused, subprocess.CompletedProcess), "it started"
    assert refused.returncode != 0
    assert said in refused.stdout and "Fix:" in refused.stdout, refused.stdout
