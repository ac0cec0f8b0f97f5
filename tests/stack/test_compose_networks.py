"""The shipped docker-compose.yaml run as it is, on its own networks, every service but
Grafana (no build of it here): Postgres, the lock's Postgres, Redis, airflow-init, the
api-server, scheduler, dag-processor, triggerer, two worker replicas, the Docker socket
proxy, MLflow, both model servers, Prometheus and the Pushgateway, with the file's
service names, networks, volumes
and Prometheus configuration. The images are local builds given through its ``*_IMAGE``
variables: the Airflow image is the shipped include/docker/airflow.Dockerfile built on a
stand-in for the official image (include/docker/local/official-airflow.Dockerfile), the
proxy a stand-in for Tecnativa's honouring its environment (docker-proxy.Dockerfile),
Postgres, Redis and Prometheus Debian's packages. A small override file gives the
Pushgateway its entrypoint (the official image's) and turns the specs' schedules off
(triggered runs only); the churn spec's latency budgets are relaxed in the project
folder's copy of ``include/``.

The engine here runs without iptables (``--iptables=false``), and Docker keeps networks
apart with iptables rules: an ``internal`` network's containers still get a default
route through its bridge (Docker 20.10), and a probe on the steps network did connect to
Postgres's address on the core network. So only what holds without iptables is asserted
here: a service's name resolves on its own networks only. That the steps network
reaches no other network's addresses rests on Docker's iptables rules (its default) and
is documented as unproven here (docs/production.md)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
import uuid

import pytest
from dashboard_support import PROMETHEUS_PASSWORDS, query
from mlops_pack.server_client import ServerClient
from stack_support import (
    as_a_step,
    champion_version,
    docker_compose,
    env_values,
    http_status,
    inspect_container,
    project_copy,
    retrain,
    service_containers,
    service_health,
    service_inspect,
    shipped_file_env,
    stack_folder,
    taken_down,
    wait_until,
)
from support import ROOT, free_port, open_dir

COMPOSE = ROOT / "docker-compose.yaml"

# The stack starts once, inside the first test's budget, and a retrain runs on it.
pytestmark = pytest.mark.timeout(1800)

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
for name in ("postgres", "redis", "docker-proxy", "model-server-churn", "airflow-apiserver",
             "lock-db"):
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


# Test-only changes to the shipped file: the Pushgateway image's entrypoint (the official
# image has one; the local build of Debian's package does not), and triggered runs only
# (an unpaused retrain DAG would also run its latest monthly tick).
OVERRIDE = """\
version: '3.8'
services:
  pushgateway:
    entrypoint: [/usr/bin/prometheus-pushgateway]
  airflow-dag-processor:
    environment:
      MLOPS_PACK_SCHEDULES: "off"
  airflow-worker:
    environment:
      MLOPS_PACK_SCHEDULES: "off"
"""
# Every service of the shipped file but Grafana, which has no build here.
SERVICES = ("postgres", "lock-db", "redis", "airflow-init", "airflow-apiserver",
            "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
            "airflow-worker", "docker-proxy", "mlflow", "model-server-churn",
            "model-server-diabetes", "prometheus", "pushgateway")  # fmt: skip
HEALTHY = ("postgres", "lock-db", "redis", "docker-proxy", "mlflow", "model-server-churn",
           "prometheus", "pushgateway", "airflow-apiserver", "airflow-scheduler")  # fmt: skip


@pytest.fixture(scope="module")
def shipped_stack(task_image):
    folder = stack_folder("compose-networks-")
    project = f"mlops-net-{uuid.uuid4().hex[:8]}"
    ports = {name: free_port() for name in ("airflow", "mlflow", "churn", "diabetes", "prometheus")}
    env = shipped_file_env(task_image, folder, project, ports)
    override = folder / "test-override.yaml"
    override.write_text(OVERRIDE)
    compose = [docker_compose(), "-p", project, "--env-file", str(folder / ".env")]
    compose += ["--project-directory", str(project_copy(folder))]
    compose += ["-f", str(COMPOSE), "-f", str(override)]
    try:
        up = _run([*compose, "up", "-d", "--no-build", *SERVICES], env, timeout=900)
        assert up.returncode == 0, up.stderr[-3000:]
        for service in HEALTHY:
            wait_until(
                lambda service=service: service_health(project, service) == "healthy",
                f"{service} of docker-compose.yaml",
                timeout=400,
            )
        secrets = env_values(folder / ".env")
        PROMETHEUS_PASSWORDS[ports["prometheus"]] = secrets["PROMETHEUS_PASSWORD"]
        yield {
            "project": project,
            "env": secrets,
            "secrets": secrets,
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


def test_mlflow_finds_postgres_by_name_and_answers_on_its_published_port(shipped_stack):
    """The shipped wiring of the two services: MLflow's backend store is
    ``postgres/mlflow`` by service name on the core network (its database and role made
    by include/postgres/init-databases.sh), and its port is published on 127.0.0.1."""
    mlflow = service_inspect(shipped_stack["project"], "mlflow")
    networks = set(mlflow["NetworkSettings"]["Networks"])
    project = shipped_stack["project"]
    assert networks == {f"{project}_core", f"{project}_serving", f"{project}-steps",
                        f"{project}-server-steps"}, networks  # fmt: skip
    postgres = service_inspect(project, "postgres")
    assert set(postgres["NetworkSettings"]["Networks"]) == {f"{project}_core"}
    # The lock's own server is the only database the step networks reach.
    lock = service_inspect(project, "lock-db")
    networks = set(lock["NetworkSettings"]["Networks"])
    assert networks == {f"{project}-steps", f"{project}-server-steps"}, networks
    url = f"http://127.0.0.1:{shipped_stack['ports']['mlflow']}/health"
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert (answer.status, answer.read()) == (200, b"OK")


@pytest.mark.parametrize("network", ["steps", "server-steps"])
def test_a_step_container_reaches_mlflow_and_the_lock_by_name_and_little_else(
    shipped_stack, task_image, network
):
    """A step on either steps network (docker-compose.yaml: internal) gets MLflow by name,
    only with the pack's password. Of the other services only ``lock-db`` resolves on
    the steps network, and ``lock-db`` and the model servers on the server steps' (the
    network of deploy, promote and rollback); never Airflow's and MLflow's Postgres,
    Redis, the Docker proxy or the api-server."""
    password = {"PACK_PASSWORD": shipped_stack["env"]["MLFLOW_PACK_PASSWORD"]}
    printed = as_a_step(task_image, f"{shipped_stack['project']}-{network}", password, PROBE)
    found = json.loads(printed.strip().splitlines()[-1])
    assert found["mlflow_health"] == [200, "OK"], found
    assert (found["with_password"], found["without_password"]) == (200, 401), found
    resolved = {name for name, address in found["resolves"].items() if address}
    expected = {"steps": {"lock-db"}, "server-steps": {"lock-db", "model-server-churn"}}
    assert resolved == expected[network] and len(found["resolves"]) == 6, found


# Run in a step container: what the lock's server lets it do, as JSON on stdout.
LOCK_PROBE = r"""
import json, os, psycopg
found = {}
with psycopg.connect(host="lock-db", user="mlops_lock", dbname="mlops_lock",
                     password=os.environ["LOCK_PASSWORD"], connect_timeout=10) as conn:
    found["advisory_lock"] = conn.execute("select pg_try_advisory_xact_lock(7)").fetchone()[0]
    try:
        conn.execute("create table taken (id int)")
        found["create_table"] = "allowed"
    except psycopg.errors.InsufficientPrivilege:
        found["create_table"] = "denied"
for user, db in (("postgres", "postgres"), ("mlops_lock", "postgres")):
    try:
        psycopg.connect(host="lock-db", user=user, dbname=db, connect_timeout=10,
                        password=os.environ["LOCK_PASSWORD"]).close()
        found[f"{user}@{db}"] = "signed in"
    except psycopg.OperationalError as refused:
        found[f"{user}@{db}"] = str(refused).strip().splitlines()[-1]
print(json.dumps(found))
"""


def test_the_lock_s_server_gives_a_step_an_advisory_lock_and_nothing_more(
    shipped_stack, task_image
):
    """From the steps network the lock role takes an advisory lock in its database, may
    not create a table there nor connect to another database, and the server's
    superuser cannot sign in over the network at all (even with the password the image
    was given)."""
    secret = {"LOCK_PASSWORD": shipped_stack["env"]["LOCK_DB_PASSWORD"]}
    printed = as_a_step(task_image, f"{shipped_stack['project']}-steps", secret, LOCK_PROBE)
    found = json.loads(printed.strip().splitlines()[-1])
    assert found["advisory_lock"] is True and found["create_table"] == "denied", found
    assert "pg_hba.conf rejects connection" in found["postgres@postgres"], found
    assert "does not have CONNECT privilege" in found["mlops_lock@postgres"], found


def test_prometheus_scrapes_the_server_the_gateway_and_itself_by_name(shipped_stack):
    """The shipped include/prometheus/prometheus.yml as it is: the churn server at
    ``model-server-churn:8181`` with its prediction key, the Pushgateway at
    ``pushgateway:9091`` and Prometheus itself with their passwords, over the serving
    network; Prometheus answers its query API on its published port with its password
    only."""
    port = shipped_stack["ports"]["prometheus"]
    wanted = ("model-server-churn", "model-server-diabetes", "pushgateway", "prometheus")

    def targets_up() -> dict[str, float]:
        found = {s["metric"]["job"]: float(s["value"][1]) for s in query(port, "up")}
        return found if all(found.get(job) == 1.0 for job in wanted) else {}

    up = wait_until(targets_up, "every shipped scrape job answering", timeout=120)
    assert up == dict.fromkeys(wanted, 1.0), up
    assert http_status(f"http://127.0.0.1:{port}/api/v1/query?query=up") == 401


def _on_serving_network(shipped_stack, task_image, script: str) -> str:
    """``script``'s stdout, run on the stack's serving network (where Prometheus and the
    workers reach the gateway) with the gateway's password."""
    password = {"GATEWAY_PASSWORD": shipped_stack["env"]["PUSHGATEWAY_PASSWORD"]}
    return as_a_step(task_image, f"{shipped_stack['project']}_serving", password, script)


def test_the_gateway_keeps_a_pushed_window_in_a_new_container(shipped_stack, task_image):
    """The gateway's persistence file lies on its volume, which its user can write: a
    window pushed as the workers push it is still there in a new container."""
    push = (
        "import os; from mlops_pack.metrics_push import push; "
        "push('http://pushgateway:9091', 'churn', b'mlops_monitor_network_probe 7\\n', "
        "credentials=('mlops-pack', os.environ['GATEWAY_PASSWORD']))"
    )
    _on_serving_network(shipped_stack, task_image, push)
    # A new container (its own file system gone), the same volume.
    up = ["up", "-d", "--no-build", "--no-deps", "--force-recreate", "pushgateway"]
    restarted = _run([*shipped_stack["compose"], *up], shipped_stack["compose_env"])
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    project = shipped_stack["project"]
    wait_until(lambda: service_health(project, "pushgateway") == "healthy", "the gateway", 120)
    read = (
        "import base64, os, urllib.request as u; "
        "t = base64.b64encode(('mlops-pack:' + os.environ['GATEWAY_PASSWORD']).encode()); "
        "r = u.Request('http://pushgateway:9091/metrics', "
        "headers={'Authorization': 'Basic ' + t.decode()}); "
        "print(u.urlopen(r, timeout=10).read().decode())"
    )
    kept = [line for line in _on_serving_network(shipped_stack, task_image, read).splitlines()
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


def test_redis_answers_on_the_core_network_only_with_its_password(shipped_stack, task_image):
    """The broker as the shipped file starts it (the password through a file in the
    container, not its command line): on the core network, where Airflow reaches it as
    ``redis``, a client without the password is refused and one with it is answered."""
    password = {"REDIS_PASSWORD": shipped_stack["env"]["REDIS_PASSWORD"]}
    core = f"{shipped_stack['project']}_core"
    without, with_password = as_a_step(task_image, core, password, REDIS_PROBE).splitlines()
    assert without.startswith("'-NOAUTH"), without
    assert with_password == repr("+OK\r\n+PONG\r\n"), with_password
    redis = service_inspect(shipped_stack["project"], "redis")
    assert shipped_stack["env"]["REDIS_PASSWORD"] not in " ".join(redis["Config"]["Cmd"])


# Run in a worker container: how it reaches Docker, as JSON on stdout.
PROXY_PROBE = r"""
import json, os, urllib.error, urllib.request
def status(method, path):
    request = urllib.request.Request("http://docker-proxy:2375" + path, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as refused:
        return refused.code
paths = [("GET", "/containers/json"), ("GET", "/images/json"), ("GET", "/volumes"),
         ("GET", "/networks"), ("GET", "/info"), ("POST", "/build"), ("GET", "/system/df")]
print(json.dumps({
    "socket": os.path.exists("/var/run/docker.sock"),
    "docker_host": os.environ.get("DOCKER_HOST"),
    "status": {f"{method} {path}": status(method, path) for method, path in paths},
}))
"""


def _step_network_joins(project: str, since: float) -> dict[str, set[str]]:
    """The containers that joined this project's step networks since ``since``, with
    every network each of them joined (``docker events``: other tests' containers on the
    same engine are left out)."""
    events = subprocess.run(
        ["docker", "events", "--since", f"{since:.0f}", "--until", f"{time.time():.0f}",
         "--filter", "type=network", "--filter", "event=connect", "--format", "{{json .}}"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.splitlines()  # fmt: skip
    joined: dict[str, set[str]] = {}
    for line in events:
        attributes = json.loads(line)["Actor"]["Attributes"]
        joined.setdefault(attributes.get("container", ""), set()).add(attributes["name"])
    ours = {f"{project}-steps", f"{project}-server-steps"}
    return {container: names for container, names in joined.items() if names & ours}


def test_the_shipped_stack_retrains_promotes_and_serves_through_the_proxy(shipped_stack):
    """The whole path as docker-compose.yaml ships it: the Airflow image built from
    include/docker/airflow.Dockerfile, airflow-init's migration and admin user, the churn
    retrain DAG triggered through the REST API on the published port, its tasks on the
    two worker replicas, which start each step through the socket proxy (no socket in a
    worker) on the steps network (deploy and promote on the server steps'), with the batch
    delivered into the data volume; the promotion moves the champion alias in MLflow, and
    the churn server serves that version, fetched from MLflow itself."""
    from mlops_pack.datagen import churn

    project = shipped_stack["project"]
    workers = service_containers(project, "airflow-worker")
    assert len(workers) == 2, workers
    # The batch, delivered as a user would: into the workers' data volume.
    batch = open_dir("compose-batch-")
    try:
        churn.write(churn.ChurnConfig(rows=4_000, month=1), batch / "churn" / "churn_month_01.csv")
        copied = _run(["docker", "cp", str(batch / "churn"), f"{workers[0]}:/opt/airflow/data/"],
                      shipped_stack["compose_env"])  # fmt: skip
        assert copied.returncode == 0, copied.stderr
    finally:
        shutil.rmtree(batch, ignore_errors=True)

    started = time.time() - 1
    _, listed, states = retrain(shipped_stack, "churn")
    assert states["promote"] == "success" and states["deploy"] == "success", states
    hostnames = {inspect_container(worker)["Config"]["Hostname"] for worker in workers}
    ran_on = {ti.hostname for ti in listed if ti.hostname}
    assert ran_on and ran_on <= hostnames, (ran_on, hostnames)

    # Every step container joined one network: the steps network (MLflow and the lock),
    # or for deploy and promote, which call the server, the server steps'.
    joined = _step_network_joins(project, started)
    steps = [c for c, names in joined.items() if names == {f"{project}-steps"}]
    server_steps = [c for c, names in joined.items() if names == {f"{project}-server-steps"}]
    assert len(steps) >= 3 and len(server_steps) >= 2, joined
    assert len(steps) + len(server_steps) == len(joined), joined  # none joined two

    champion = champion_version(shipped_stack, "churn")
    server = f"http://127.0.0.1:{shipped_stack['ports']['churn']}"
    key = shipped_stack["secrets"]["CHURN_PREDICTION_KEY"]
    status, served, _ = ServerClient(server, key).call("GET", "/version")
    assert status == 200 and served["version"] == champion, served


def test_workers_reach_docker_only_through_the_filtering_proxy(shipped_stack):
    """A worker has no Docker socket; through the proxy it may list, create and run
    containers and inspect images (what a step needs), and is refused volumes, networks,
    the engine's information, builds and the system calls."""
    worker = service_containers(shipped_stack["project"], "airflow-worker")[0]
    probed = subprocess.run(
        ["docker", "exec", worker, "python", "-c", PROXY_PROBE],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert probed.returncode == 0, probed.stderr[-3000:]
    found = json.loads(probed.stdout.strip().splitlines()[-1])
    assert found["socket"] is False and found["docker_host"] == "tcp://docker-proxy:2375", found
    assert found["status"] == {
        "GET /containers/json": 200, "GET /images/json": 200, "GET /volumes": 403,
        "GET /networks": 403, "GET /info": 403, "POST /build": 403, "GET /system/df": 403,
    }, found  # fmt: skip
