"""The shipped docker-compose.yaml on its own networks: Postgres, Redis, the MLflow
server, the churn model server, Prometheus and the Pushgateway started from the shipped
file itself (not the local one), their images built locally (``*_IMAGE``: Debian's
Postgres, Redis and Prometheus packages; an override file gives the Pushgateway its
entrypoint, which the official image has), on the file's networks with its service
names and its Prometheus configuration. A container with the flags the workers give a
step (the task image, non-root, read-only, no capabilities) on the steps network
reaches MLflow by name and nothing else.

The engine here runs without iptables (``--iptables=false``), and Docker keeps networks
apart with iptables rules: an ``internal`` network's containers still get a default
route through its bridge (Docker 20.10), and a probe on the steps network did connect to
Postgres's address on the core network. So only what holds without iptables is asserted
here: a service's name resolves on its own networks only. That the steps network
reaches no other network's addresses rests on Docker's iptables rules (its default) and
is documented as unproven here (docs/production.md)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import urllib.request
import uuid
from pathlib import Path

import pytest
from dashboard_support import PROMETHEUS_PASSWORDS, query
from stack_support import (
    docker_compose,
    env_values,
    http_status,
    service_container,
    taken_down,
    wait_until,
)
from support import ROOT, free_port, run_cli

COMPOSE = ROOT / "docker-compose.yaml"

# Run in the step container: what it can reach, as JSON on stdout.
PROBE = r"""
import base64, json, os, socket, urllib.request
found = {}
with urllib.request.urlopen("http://mlflow:5000/health", timeout=10) as answer:
    found["mlflow_health"] = [answer.status, answer.read().decode()]
def status(user, password):
    request = urllib.request.Request(
        "http://mlflow:5000/api/2.0/mlflow/experiments/search?max_results=1")
    if user:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as refused:
        return refused.code
found["with_password"] = status("mlops-pack", os.environ["PACK_PASSWORD"])
found["without_password"] = status(None, None)
found["resolves"] = {}
for name in ("postgres", "redis", "docker-proxy", "model-server-churn", "airflow-apiserver"):
    try:
        found["resolves"][name] = socket.gethostbyname(name)
    except OSError:
        found["resolves"][name] = None
print(json.dumps(found))
"""


def _run(command: list, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _container(project: str, service: str) -> dict:
    """``docker inspect`` of the service's one running container."""
    shown = subprocess.run(["docker", "inspect", service_container(project, service)],
                           capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(shown.stdout)[0]


def _as_a_step(image: str, network: str, env: dict[str, str], script: str) -> str:
    """``script``'s stdout, run by Python in ``image`` on ``network`` with a step
    container's hardening (user 65534, read-only, no capabilities)."""
    flags = [f"--env={name}={value}" for name, value in env.items()]
    run = subprocess.run(
        ["docker", "run", "--rm", f"--network={network}", "--user=65534:65534", "--read-only",
         "--cap-drop=ALL", "--security-opt=no-new-privileges", *flags,
         "--entrypoint=python", image, "-c", script],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


def _health(project: str, service: str) -> str | None:
    return _container(project, service)["State"].get("Health", {}).get("Status")


@pytest.fixture(scope="module")
def compose_core(task_image):
    subprocess.run([ROOT / "include/docker/build_local_stack_images.sh"], check=True, timeout=1500)
    folder = Path(tempfile.mkdtemp(prefix="compose-networks-"))
    code, _ = run_cli("stack", "init", "--dir", folder, "--include", ROOT / "include")
    assert code == 0
    project = f"mlops-net-{uuid.uuid4().hex[:8]}"
    ports = {name: free_port() for name in ("mlflow", "churn", "prometheus")}
    prometheus = "mlops-pack-local-prometheus:latest"
    env = {
        **os.environ,
        "POSTGRES_IMAGE": "mlops-pack-local-postgres:latest",
        "REDIS_IMAGE": "mlops-pack-local-redis:latest",
        "MLFLOW_IMAGE": "mlops-pack-mlflow:latest",
        "MLOPS_PACK_TASK_IMAGE": task_image,
        "PROMETHEUS_IMAGE": prometheus,
        "PUSHGATEWAY_IMAGE": prometheus,
        "STACK_SECRETS_DIR": str(folder / ".stack" / "secrets"),
        # The steps network's name is the engine's (docker-compose.yaml): this run's own.
        "STEPS_NETWORK": f"{project}-steps",
        **{f"{name.upper()}_PORT": str(port) for name, port in ports.items()},
    }
    override = folder / "pushgateway-entrypoint.yaml"
    override.write_text(
        "version: '3.8'\nservices:\n  pushgateway:\n"
        "    entrypoint: [/usr/bin/prometheus-pushgateway]\n"
    )
    compose = [docker_compose(), "-p", project, "--env-file", str(folder / ".env")]
    compose += ["-f", str(COMPOSE), "-f", str(override)]
    services = ("redis", "mlflow", "model-server-churn", "prometheus", "pushgateway")
    try:
        up = _run([*compose, "up", "-d", "--no-build", *services], env, timeout=600)
        assert up.returncode == 0, up.stderr[-3000:]
        for service in services:
            wait_until(
                lambda service=service: _health(project, service) == "healthy",
                f"{service} of docker-compose.yaml",
                timeout=300,
            )
        secrets = env_values(folder / ".env")
        PROMETHEUS_PASSWORDS[ports["prometheus"]] = secrets["PROMETHEUS_PASSWORD"]
        yield {
            "project": project,
            "env": secrets,
            "ports": ports,
            "compose": compose,
            "compose_env": env,
        }
    finally:
        PROMETHEUS_PASSWORDS.pop(ports["prometheus"], None)
        try:
            taken_down(compose, env, project)
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def test_mlflow_finds_postgres_by_name_and_answers_on_its_published_port(compose_core):
    """The shipped wiring of the two services: MLflow's backend store is
    ``postgres/mlflow`` by service name on the core network (its database and role made
    by include/postgres/init-databases.sh), and its port is published on 127.0.0.1."""
    mlflow = _container(compose_core["project"], "mlflow")
    networks = set(mlflow["NetworkSettings"]["Networks"])
    project = compose_core["project"]
    assert networks == {f"{project}_core", f"{project}_serving", f"{project}-steps"}, networks
    postgres = _container(project, "postgres")
    assert set(postgres["NetworkSettings"]["Networks"]) == {f"{project}_core"}
    url = f"http://127.0.0.1:{compose_core['ports']['mlflow']}/health"
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert (answer.status, answer.read()) == (200, b"OK")


def test_a_step_container_reaches_mlflow_by_name_and_nothing_else(compose_core, task_image):
    """A step on the steps network (docker-compose.yaml: internal, MLflow its only other
    member) gets MLflow by name, only with the pack's password; no other service's
    name resolves there."""
    password = {"PACK_PASSWORD": compose_core["env"]["MLFLOW_PACK_PASSWORD"]}
    printed = _as_a_step(task_image, f"{compose_core['project']}-steps", password, PROBE)
    found = json.loads(printed.strip().splitlines()[-1])
    assert found["mlflow_health"] == [200, "OK"], found
    assert (found["with_password"], found["without_password"]) == (200, 401), found
    assert found["resolves"] == dict.fromkeys(found["resolves"]), found
    assert len(found["resolves"]) == 5, found


def test_prometheus_scrapes_the_server_the_gateway_and_itself_by_name(compose_core):
    """The shipped include/prometheus/prometheus.yml as it is: the churn server at
    ``model-server-churn:8181`` with its prediction key, the Pushgateway at
    ``pushgateway:9091`` and Prometheus itself with their passwords, over the serving
    network; Prometheus answers its query API on its published port with its password
    only. The diabetes server is not started here: its target is the one down."""
    port = compose_core["ports"]["prometheus"]
    wanted = ("model-server-churn", "pushgateway", "prometheus")

    def targets_up() -> dict[str, float]:
        found = {s["metric"]["job"]: float(s["value"][1]) for s in query(port, "up")}
        return found if all(found.get(job) == 1.0 for job in wanted) else {}

    up = wait_until(targets_up, "every shipped scrape job answering", timeout=120)
    assert up == {"model-server-churn": 1.0, "model-server-diabetes": 0.0,
                  "pushgateway": 1.0, "prometheus": 1.0}, up  # fmt: skip
    assert http_status(f"http://127.0.0.1:{port}/api/v1/query?query=up") == 401


def _on_serving_network(compose_core, task_image, script: str) -> str:
    """``script``'s stdout, run on the stack's serving network (where Prometheus and the
    workers reach the gateway) with the gateway's password."""
    password = {"GATEWAY_PASSWORD": compose_core["env"]["PUSHGATEWAY_PASSWORD"]}
    return _as_a_step(task_image, f"{compose_core['project']}_serving", password, script)


def test_the_gateway_keeps_a_pushed_window_in_a_new_container(compose_core, task_image):
    """The gateway's persistence file lies on its volume, which its user can write: a
    window pushed as the workers push it is still there in a new container."""
    push = (
        "import os; from mlops_pack.metrics_push import push; "
        "push('http://pushgateway:9091', 'churn', b'mlops_monitor_network_probe 7\\n', "
        "credentials=('mlops-pack', os.environ['GATEWAY_PASSWORD']))"
    )
    _on_serving_network(compose_core, task_image, push)
    # A new container (its own file system gone), the same volume.
    up = ["up", "-d", "--no-build", "--no-deps", "--force-recreate", "pushgateway"]
    restarted = _run([*compose_core["compose"], *up], compose_core["compose_env"])
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    project = compose_core["project"]
    wait_until(lambda: _health(project, "pushgateway") == "healthy", "the gateway", 120)
    read = (
        "import base64, os, urllib.request as u; "
        "t = base64.b64encode(('mlops-pack:' + os.environ['GATEWAY_PASSWORD']).encode()); "
        "r = u.Request('http://pushgateway:9091/metrics', "
        "headers={'Authorization': 'Basic ' + t.decode()}); "
        "print(u.urlopen(r, timeout=10).read().decode())"
    )
    kept = [line for line in _on_serving_network(compose_core, task_image, read).splitlines()
            if line.startswith("mlops_monitor_network_probe{")]  # fmt: skip
    assert len(kept) == 1 and kept[0].endswith(" 7") and 'model="churn"' in kept[0], kept


REDIS_PROBE = r"""
import os, socket
def ask(commands):
    answer = b""
    with socket.create_connection(("redis", 6379), timeout=10) as connection:
        connection.sendall(commands.encode())
        while answer.count(b"\r\n") < commands.count("\r\n"):
            answer += connection.recv(4096)
    return answer.decode()
print(repr(ask("PING\r\n")))
print(repr(ask(f"AUTH {os.environ['REDIS_PASSWORD']}\r\nPING\r\n")))
"""


def test_redis_answers_on_the_core_network_only_with_its_password(compose_core, task_image):
    """The broker as the shipped file starts it (the password through a file in the
    container, not its command line): on the core network, where Airflow reaches it as
    ``redis``, a client without the password is refused and one with it is answered."""
    password = {"REDIS_PASSWORD": compose_core["env"]["REDIS_PASSWORD"]}
    core = f"{compose_core['project']}_core"
    without, with_password = _as_a_step(task_image, core, password, REDIS_PROBE).splitlines()
    assert without.startswith("'-NOAUTH"), without
    assert with_password == repr("+OK\r\n+PONG\r\n"), with_password
    redis = _container(compose_core["project"], "redis")
    assert compose_core["env"]["REDIS_PASSWORD"] not in " ".join(redis["Config"]["Cmd"])
