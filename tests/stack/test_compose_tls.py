"""docker-compose.tls.yaml run over the shipped docker-compose.yaml: the MLflow server on
its own networks answering HTTPS only, with the certificate ``mlops-pack stack tls``
wrote, and the clients that run in containers of the stack verifying it by its service
name: a container on the steps network, and the churn model server fetching a version
from ``https://mlflow:5000``. The version is registered from this host through the
published port (the certificate names 127.0.0.1 too). The churn server itself answers
HTTPS only, with its own certificate: the pack's client here verifies it with the CA
and is refused without.

Only the services this needs run (Postgres, MLflow, the churn server), from the local
builds the shipped-file test uses. The workers and the api-server get the same URL and
CA from the override (tests/stack/test_compose_file.py checks the merged file); a
retrain whose step containers verify the server this way runs in
tests/dags/test_no_shared_filesystem_docker.py."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
import uuid

import pytest
from mlops_pack.errors import BadInputError
from mlops_pack.server_client import ServerClient
from services import mlflow_signin
from stack_support import (
    as_a_step,
    docker_compose,
    env_values,
    project_copy,
    service_container,
    service_health,
    shipped_file_env,
    stack_folder,
    taken_down,
    wait_until,
)
from support import ROOT, free_port, open_dir, run_cli

COMPOSE = ROOT / "docker-compose.yaml"
TLS_OVERRIDE = ROOT / "docker-compose.tls.yaml"
OTHER_NAME = "mlflow.example.internal"  # the name clients on other hosts would use
pytestmark = pytest.mark.timeout(1200)

# Run in a container on the steps network: what it finds at https://mlflow:5000.
PROBE = r"""
import json, os, ssl, urllib.request
found = {}
def health(context):
    try:
        with urllib.request.urlopen("https://mlflow:5000/health", timeout=10,
                                    context=context) as answer:
            return [answer.status, answer.read().decode()]
    except urllib.error.URLError as refused:
        return str(refused.reason)
found["with_ca"] = health(ssl.create_default_context(cadata=os.environ["CA"]))
found["without_ca"] = health(ssl.create_default_context())
try:
    urllib.request.urlopen("http://mlflow:5000/health", timeout=10)
    found["plain"] = "answered"
except Exception as refused:
    found["plain"] = type(refused).__name__
print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def tls_stack(task_image):
    folder = stack_folder("compose-tls-")
    code, _ = run_cli("stack", "tls", "--dir", folder, "--include", ROOT / "include",
                      "--name", OTHER_NAME)  # fmt: skip
    assert code == 0
    project = f"mlops-tls-{uuid.uuid4().hex[:8]}"
    ports = {name: free_port() for name in ("mlflow", "churn")}
    env = shipped_file_env(task_image, folder, project, ports)  # STACK_TLS_DIR: from .env
    compose = [docker_compose(), "-p", project, "--env-file", str(folder / ".env")]
    compose += ["--project-directory", str(project_copy(folder))]
    compose += ["-f", str(COMPOSE), "-f", str(TLS_OVERRIDE)]
    try:
        up = subprocess.run(
            [*compose, "up", "-d", "--no-build", "model-server-churn"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        assert up.returncode == 0, up.stderr[-3000:]
        for service in ("mlflow", "model-server-churn"):
            wait_until(
                lambda service=service: service_health(project, service) == "healthy",
                f"{service} with docker-compose.tls.yaml",
                timeout=400,
            )
        yield {
            "project": project,
            "ports": ports,
            "secrets": env_values(folder / ".env"),
            "tls": folder / ".stack" / "tls",
            "server_secrets": folder / ".stack" / "secrets" / "churn",
            "include": folder / "project" / "include",
        }
    finally:
        taken_down(compose, env, project)


def test_mlflow_answers_https_only_with_the_stack_s_certificate(tls_stack):
    """Its health check passed over HTTPS (the stack waited for it). On the published
    port a client with the stack's CA is answered, one without it is refused by its own
    check, and plain HTTP gets no answer."""
    base = f"127.0.0.1:{tls_stack['ports']['mlflow']}"
    trusting = ssl.create_default_context(cafile=str(tls_stack["tls"] / "ca.pem"))
    with urllib.request.urlopen(f"https://{base}/health", timeout=10, context=trusting) as ok:
        assert (ok.status, ok.read()) == (200, b"OK")
    with pytest.raises(urllib.error.URLError) as unverified:
        urllib.request.urlopen(f"https://{base}/health", timeout=10)
    assert "CERTIFICATE_VERIFY_FAILED" in str(unverified.value)
    with pytest.raises(OSError):  # the TLS server drops a plain request
        urllib.request.urlopen(f"http://{base}/health", timeout=10)


def _status_as(stack: dict, name: str, host_header: str | None = None) -> int:
    """The status of a signed-in search on the published port, reached as a client on
    another host reaches it: TLS verified for ``name``, ``Host: <host_header or name>:port``."""
    port = stack["ports"]["mlflow"]
    context = ssl.create_default_context(cafile=str(stack["tls"] / "ca.pem"))
    password = stack["secrets"]["MLFLOW_PACK_PASSWORD"]
    auth = base64.b64encode(f"mlops-pack:{password}".encode()).decode()
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with context.wrap_socket(raw, server_hostname=name) as tls:
        conn = http.client.HTTPConnection(name, port, timeout=10)
        conn.sock = tls
        conn.request(
            "GET",
            "/api/2.0/mlflow/experiments/search?max_results=1",
            headers={"Authorization": f"Basic {auth}", "Host": f"{host_header or name}:{port}"},
        )
        return conn.getresponse().status


def test_mlflow_answers_the_name_stack_tls_was_given_and_no_other(tls_stack):
    """`stack tls --name` is all a client on another host needs: the certificate names
    it, and the server answers that Host header with any port (stack tls wrote the name
    into .env's MLFLOW_ALLOWED_NAMES); a name nobody listed is refused (MLflow's
    DNS-rebinding guard, 403)."""
    assert _status_as(tls_stack, OTHER_NAME) == 200
    assert _status_as(tls_stack, OTHER_NAME, host_header="mlflow.evil.example") == 403


def test_a_step_container_verifies_mlflow_by_its_service_name(tls_stack, task_image):
    ca = (tls_stack["tls"] / "ca.pem").read_text()
    printed = as_a_step(task_image, f"{tls_stack['project']}-steps", {"CA": ca}, PROBE)
    found = json.loads(printed.strip().splitlines()[-1])
    assert found["with_ca"] == [200, "OK"], found
    assert "CERTIFICATE_VERIFY_FAILED" in found["without_ca"], found
    assert found["plain"] != "answered", found


def test_the_model_server_fetches_a_version_over_https(tls_stack, data_dir, monkeypatch):
    """A churn version registered through the published port over HTTPS; the server,
    told to serve it, fetches it from https://mlflow:5000 verifying the certificate with
    the CA the override mounts, checks its sha256 and serves it."""
    from mlops_pack.registry import Registry
    from mlops_pack.steps.served import ServedSwitch

    tracking = f"https://127.0.0.1:{tls_stack['ports']['mlflow']}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(tls_stack["tls"] / "ca.pem"))
    passwords = {"MLFLOW_PACK_PASSWORD": tls_stack["secrets"]["MLFLOW_PACK_PASSWORD"]}
    for name, value in mlflow_signin("mlops-pack", passwords).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MLOPS_PACK_HOME", str(open_dir("compose-tls-trainer-")))
    monkeypatch.setenv("MLOPS_PACK_DATA_DIR", str(data_dir))
    spec = tls_stack["include"] / "models" / "churn.yaml"
    out = open_dir("compose-tls-out-")
    for step in ("validate", "train"):
        code, result = run_cli(step, "--spec", spec, "--data", "churn/churn_month_01.csv",
                               "--out", out / step)  # fmt: skip
        assert code == 0, result
    secrets = tls_stack["server_secrets"]
    # The server answers HTTPS only too; this process verifies it as the workers do.
    monkeypatch.setenv("MLOPS_PACK_SERVER_CA", str(tls_stack["tls"] / "ca.pem"))
    url = f"https://127.0.0.1:{tls_stack['ports']['churn']}"
    admin = ServerClient(url, (secrets / "admin_token").read_text().strip())
    public = ServerClient(url, (secrets / "prediction_key").read_text().strip())
    registry = Registry()
    served = ServedSwitch(admin, registry, "churn").serve(registry.version("churn", "1"))
    assert served["served"]["version"] == "1"
    assert public.ok("GET", "/version")["version"] == "1"
    assert admin.ok("GET", "/admin/stats")["model_source"] == "registry"
    # Without the CA the pack's client refuses the server, and says what to set.
    monkeypatch.delenv("MLOPS_PACK_SERVER_CA")
    with pytest.raises(BadInputError, match="Fix: when a private CA signed"):
        ServerClient(url, "not-sent", retries=0).call("GET", "/version")
    server = service_container(tls_stack["project"], "model-server-churn")
    shown = subprocess.run(["docker", "inspect", "--format", "{{json .Config.Env}}", server],
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert "MLFLOW_TRACKING_SERVER_CERT_PATH=/run/stack-tls/ca.pem" in json.loads(shown.stdout)
