"""Helpers for the compose stack tests and the scale-out benchmark (import as
``stack_support``): docker-compose.local.yaml brought up on free ports and always taken
down, and the Airflow REST client for it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import yaml
from dashboard_support import PROMETHEUS_PASSWORDS
from support import ROOT, airflow_token, free_port, open_dir, run_cli

LOCAL = ROOT / "docker-compose.local.yaml"
LOCAL_TLS = ROOT / "docker-compose.local-tls.yaml"
PORTS = ("postgres", "redis", "mlflow", "churn", "prometheus", "pushgateway", "airflow")
PORTS += ("triggerer_log", "worker_1_log", "worker_2_log")


def docker_compose() -> str:
    found = shutil.which("docker-compose")
    assert found, "docker-compose is missing: `make test-tools` (apt-get install docker-compose)"
    return found


def env_values(path: Path) -> dict[str, str]:
    """The KEY=value lines of a .env written by ``mlops-pack stack init``."""
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def wait_until(check, what: str, timeout: float = 240.0, passing: tuple = ()):
    """``check()``'s first truthy result; connection errors (and ``passing``) mean not yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except (OSError, urllib.error.URLError, *passing):
            pass
        assert time.monotonic() < deadline, f"{what} did not come up in {timeout:.0f}s"
        time.sleep(1)


def http_status(url: str, token: str | None = None, ca: Path | None = None) -> int:
    """The HTTP status of a GET (``token``: a bearer token; ``ca``: the CA bundle an
    https server is verified against)."""
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    context = ssl.create_default_context(cafile=str(ca)) if ca else None
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def local_prometheus_config(folder: Path, ports: dict[str, int], tls: bool = False) -> Path:
    """The shipped Prometheus configuration (``tls``: its HTTPS twin) with the targets
    moved to the local stack's ports on 127.0.0.1."""
    shipped = "prometheus.tls.yml" if tls else "prometheus.yml"
    config = yaml.safe_load((ROOT / "include/prometheus" / shipped).read_text())
    targets = {
        "model-server-churn:8181": f"127.0.0.1:{ports['churn']}",
        "model-server-diabetes:8182": f"127.0.0.1:{free_port()}",  # not started here
        "localhost:9090": f"127.0.0.1:{ports['prometheus']}",
        "pushgateway:9091": f"127.0.0.1:{ports['pushgateway']}",
    }
    config["global"]["scrape_interval"] = "1s"
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            static["targets"] = [targets[t] for t in static["targets"]]
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o644)
    return path


def service_containers(project: str, service: str, stopped: bool = False) -> list[str]:
    """The ids of the compose service's containers in ``project`` (running, or also
    stopped with ``stopped``): one, or each replica's."""
    return subprocess.run(
        ["docker", "ps", "-q", "--no-trunc", *(["-a"] if stopped else []),
         "--filter", f"label=com.docker.compose.project={project}",
         "--filter", f"label=com.docker.compose.service={service}"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip


def service_container(project: str, service: str, stopped: bool = False) -> str:
    """The id of the compose service's one container in ``project``."""
    found = service_containers(project, service, stopped)
    assert len(found) == 1, (service, found)
    return found[0]


def container_command(container_id: str) -> list[str]:
    """The command the container was started with: its entrypoint's path and arguments."""
    started = subprocess.run(
        ["docker", "inspect", "--format", "{{json .Path}} {{json .Args}}", container_id],
        capture_output=True, text=True, check=True,
    ).stdout.split(" ", 1)  # fmt: skip
    return [json.loads(started[0]), *json.loads(started[1])]


def worker_containers(project: str) -> list[str]:
    """The ids of ``project``'s running Celery workers, whatever their services are named
    (``airflow-worker`` replicas in docker-compose.yaml, ``airflow-worker-N`` here)."""
    listed = subprocess.run(
        ["docker", "ps", "--no-trunc", "--filter", f"label=com.docker.compose.project={project}",
         "--format", '{{.ID}} {{.Label "com.docker.compose.service"}}'],
        capture_output=True, text=True, check=True,
    ).stdout.split("\n")  # fmt: skip
    pairs = [line.split(" ", 1) for line in listed if line.strip()]
    return [cid for cid, service in pairs if service.startswith("airflow-worker")]


# Asked inside a worker: does the Celery worker of this host answer over the broker?
CELERY_PING = (
    "celery --app airflow.providers.celery.executors.celery_executor.app"
    ' inspect ping --timeout 10 -d "celery@$HOSTNAME"'
)


def celery_ready(container_id: str, since: str | None = None, timeout: float = 300) -> None:
    """Wait until Celery logs in the container (after ``since``, an RFC 3339 time) that it
    takes tasks, then until it answers a ping over the broker (what the shipped health
    check asks). A worker that stops meanwhile fails at once with its log's tail: waiting
    longer cannot help. Until a worker takes tasks the other takes every one, and a test of
    where tasks ran would see one worker only."""
    deadline = time.monotonic() + timeout
    worker = container_id[:12]
    while True:
        logs = subprocess.run(
            ["docker", "logs", *(["--since", since] if since else []), container_id],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        text = logs.stdout + logs.stderr
        if re.search(r"celery@\S+ ready\.", text):
            pinged = subprocess.run(
                ["docker", "exec", container_id, "sh", "-c", CELERY_PING],
                capture_output=True, text=True, check=False, timeout=120,
            )  # fmt: skip
            if pinged.returncode == 0:
                return
            text += pinged.stdout + pinged.stderr
        running = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.Running}}", container_id],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        assert running == "true", f"worker {worker} exited while starting:\n{text[-2000:]}"
        assert time.monotonic() < deadline, (
            f"worker {worker} not taking tasks after {timeout:.0f}s:\n{text[-2000:]}"
        )
        time.sleep(1)


# Run in the scheduler's container: the Celery executor's own state check (its
# BulkStateFetcher on an app built from the container's configuration) ``count`` times
# for eight task ids, as Celery does it or with the pack's kept connection; prints the
# process's CPU and wall time for the checks.
_STATE_CHECKS = """
import json, sys, time
kept, count = sys.argv[1] == "kept", int(sys.argv[2])
if kept:
    from mlops_pack.airflow import celery_results
    assert celery_results.install()
from airflow.configuration import conf
from airflow.providers.celery.executors import celery_executor_utils as utils
from celery.result import AsyncResult
app = utils.create_celery_app(conf)
fetcher = utils.BulkStateFetcher(1, celery_app=app)
tasks = [AsyncResult(f"state-check-{i}", app=app) for i in range(8)]
fetcher.get_many(tasks)  # the backend's set-up stays out of the figures
cpu, wall = time.process_time(), time.perf_counter()
for _ in range(count):
    states = fetcher.get_many(tasks)
cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
print(json.dumps({"cpu_s": cpu, "wall_s": wall, "tasks": len(states)}))
"""


def airflow_db_sessions(stack: dict) -> int:
    """Sessions Postgres has opened on Airflow's database so far (this read's own
    included): ``pg_stat_database.sessions``, flushed by each backend as it ends."""
    import psycopg

    with psycopg.connect(
        host="127.0.0.1", port=stack["ports"]["postgres"], user="airflow", dbname="airflow",
        password=stack["secrets"]["AIRFLOW_DB_PASSWORD"], connect_timeout=10, autocommit=True,
    ) as conn:  # fmt: skip
        query = "select sessions from pg_stat_database where datname = current_database()"
        return conn.execute(query).fetchone()[0]


def state_checks(stack: dict, count: int, kept: bool) -> dict:
    """The scheduler's Celery state check run ``count`` times in its container (see
    _STATE_CHECKS): the checks' CPU and wall time, and the Postgres sessions opened on
    Airflow's database meanwhile (by anything: the stack's other users add a few)."""
    container = service_container(stack["project"], "airflow-scheduler")
    before = airflow_db_sessions(stack)
    mode = "kept" if kept else "as-celery"
    done = subprocess.run(
        ["docker", "exec", container, "python", "-c", _STATE_CHECKS, mode, str(count)],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    time.sleep(2)  # a backend's counters reach the statistics within a second of its end
    found = json.loads(done.stdout.strip().splitlines()[-1])
    return {**found, "sessions_opened": airflow_db_sessions(stack) - before - 1}


def compose_resources(kind: str, project: str) -> list[str]:
    """Containers, volumes or networks docker-compose labelled for ``project``."""
    listing = {
        "container": ["docker", "ps", "-aq"],
        "volume": ["docker", "volume", "ls", "-q"],
        "network": ["docker", "network", "ls", "-q"],
    }[kind]
    found = subprocess.run(
        [*listing, "--filter", f"label=com.docker.compose.project={project}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return found.stdout.split()


@contextlib.contextmanager
def local_stack(
    task_image: str,
    include: Path,
    data: Path,
    services: tuple[str, ...] = (),
    *,
    tls: bool = False,
    **extra_env: str,
) -> Iterator[dict]:
    """docker-compose.local.yaml with its Airflow profile, up on free ports (``services``
    only, when named, with what they depend on); yields ports, the ``.env`` values, the
    project name, the data folder, the label feed's folder, the MLflow server's and the
    churn server's URLs and the stack's CA bundle (None over plain HTTP). Always taken
    down with its volumes, and nothing of the project may be left behind.

    ``tls``: with docker-compose.local-tls.yaml, after ``mlops-pack stack tls`` as a user
    runs it: MLflow and the churn server answer HTTPS only, and every client verifies
    them against the stack's CA.

    ``include`` and ``data`` must be readable by the workers' uid; the workers see them at
    their own paths (/opt/airflow/...), and step containers get copies."""
    subprocess.run([ROOT / "include/docker/build_local_stack_images.sh"], check=True, timeout=1500)
    folder = Path(tempfile.mkdtemp(prefix="local-stack-"))
    code, _ = run_cli("stack", "init", "--dir", folder, "--include", include)
    assert code == 0
    if tls:
        code, _ = run_cli("stack", "tls", "--dir", folder, "--include", include)
        assert code == 0
    ports = {name: free_port() for name in PORTS}
    # The label feed the workers read (the test writes labels into <labels>/<model>).
    labels = open_dir("local-stack-labels-")
    env = {
        **os.environ,
        "STACK_SECRETS_DIR": str(folder / ".stack" / "secrets"),
        "LOCAL_PROMETHEUS_CONFIG": str(local_prometheus_config(folder, ports, tls)),
        "LOCAL_INCLUDE_DIR": str(include),
        "LOCAL_DATA_DIR": str(data),
        "LOCAL_LABELS_DIR": str(labels),
        "LOCAL_DOCKER_GID": str(os.stat("/var/run/docker.sock").st_gid),
        "MLOPS_PACK_TASK_IMAGE": task_image,
        **{f"LOCAL_{name.upper()}_PORT": str(port) for name, port in ports.items()},
        **extra_env,
    }
    scheme = "https" if tls else "http"
    project = f"mlops-local-{uuid.uuid4().hex[:8]}"
    compose = [docker_compose(), "-p", project, "--env-file", str(folder / ".env")]
    compose += ["-f", str(LOCAL), *(["-f", str(LOCAL_TLS)] if tls else []), "--profile", "airflow"]
    try:
        subprocess.run(
            [*compose, "up", "-d", *services], cwd=ROOT, env=env, check=True, timeout=900
        )
        secrets = env_values(folder / ".env")
        PROMETHEUS_PASSWORDS[ports["prometheus"]] = secrets["PROMETHEUS_PASSWORD"]
        yield {
            "ports": ports,
            "secrets": secrets,
            "project": project,
            "data": data,
            "labels": labels,
            "mlflow_url": f"{scheme}://127.0.0.1:{ports['mlflow']}",
            "churn_url": f"{scheme}://127.0.0.1:{ports['churn']}",
            # The stack's CA (stack tls): MLflow's and the churn server's certificates.
            "ca": folder / ".stack" / "tls" / "ca.pem" if tls else None,
        }
    finally:
        shutil.rmtree(labels, ignore_errors=True)
        PROMETHEUS_PASSWORDS.pop(ports["prometheus"], None)
        try:
            taken_down(compose, env, project)
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def taken_down(compose: list[str], env: dict[str, str], project: str) -> None:
    """Print the services' last log lines, then ``down`` with the volumes; nothing of
    ``project`` may be left."""
    logs = subprocess.run(
        [*compose, "logs", "--no-color", "--tail", "30"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    print(logs.stdout[-12000:])
    subprocess.run(
        [*compose, "down", "-v", "--remove-orphans"], cwd=ROOT, env=env, check=True, timeout=300
    )
    for kind in ("container", "volume", "network"):
        assert compose_resources(kind, project) == [], f"{kind}s left behind"


def airflow_api(stack: dict):
    """The official client, logged in as the admin ``stack init`` wrote the password of."""
    import airflow_client.client as ac

    base = f"http://127.0.0.1:{stack['ports']['airflow']}"
    wait_until(lambda: http_status(f"{base}/api/v2/monitor/health") == 200, "the api-server", 400)
    token = airflow_token(base, "admin", stack["secrets"]["AIRFLOW_ADMIN_PASSWORD"])
    return ac.ApiClient(ac.Configuration(host=base, access_token=token))


def unpaused(api, dag_id: str) -> None:
    """Wait for ``dag_id`` to be parsed, then unpause it (DAGs start paused, as in the
    production configuration: unpausing is the user's act)."""
    import airflow_client.client as ac

    dags = ac.DAGApi(api)
    wait_until(lambda: dags.get_dag(dag_id), f"{dag_id} in the api-server", 400, (ac.ApiException,))
    dags.patch_dag(dag_id, ac.DAGPatchBody(is_paused=False))


def trigger(api, dag_id: str, conf: dict, at: datetime | None = None) -> str:
    """Trigger a run through the REST API; ``at`` is its logical date (a monitor's window
    ends there), none by default."""
    import airflow_client.client as ac

    body = ac.TriggerDAGRunPostBody(logical_date=at, conf=conf)
    return ac.DagRunApi(api).trigger_dag_run(dag_id, body).dag_run_id


def mlflow_client(stack: dict, monkeypatch, user: str = "mlops-pack"):
    """An MLflow client on the stack's published MLflow port, signed in as one of its
    MLflow users (the workers' or the read-only one) with the password stack init wrote;
    over HTTPS it verifies the server against the stack's CA."""
    from mlflow import MlflowClient
    from services import mlflow_signin

    for name, value in mlflow_signin(user, stack["secrets"]).items():
        monkeypatch.setenv(name, value)
    # The one-machine stack says its URL and CA; the shipped file's serves plain HTTP.
    url = stack.get("mlflow_url") or f"http://127.0.0.1:{stack['ports']['mlflow']}"
    ca = stack.get("ca")
    if ca is not None:
        monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(ca))
    wait_until(lambda: http_status(f"{url}/health", ca=ca) == 200, "mlflow", timeout=400)
    return MlflowClient(tracking_uri=url, registry_uri=url)


def champion_version(stack: dict, model: str) -> str:
    import pytest

    with pytest.MonkeyPatch.context() as env:  # reading is all the read-only user may do
        client = mlflow_client(stack, env, "mlops-reader")
        return client.get_model_version_by_alias(model, "champion").version


def task_log(api, dag_id: str, run_id: str, ti) -> str:
    """A task instance's log, read through the REST API."""
    import airflow_client.client as ac

    log = ac.TaskInstanceApi(api).get_log(
        dag_id, run_id, ti.task_id, ti.try_number, full_content=True
    )
    return "\n".join(str(getattr(line, "event", line)) for line in log.content.actual_instance)


def failed_logs(api, dag_id: str, run_id: str, listed) -> str:
    """The end of each failed task's log, read through the REST API."""
    out = []
    for ti in listed:
        if ti.state and str(ti.state.value) == "failed":
            out.append(f"{ti.task_id}: {task_log(api, dag_id, run_id, ti)[-3000:]}")
    return "\n".join(out)


def retrain(stack: dict, model: str) -> tuple[str, list, dict[str, str]]:
    """Trigger ``model``'s retrain DAG on month 1 of churn through the REST API and wait
    for its end: the run's state, its task instances and their states."""
    import airflow_client.client as ac
    from support import run_to_end

    api = airflow_api(stack)
    for worker in worker_containers(stack["project"]):
        celery_ready(worker)
    dag_id = f"mlops_retrain__{model}"
    unpaused(api, dag_id)
    conf = {"data_path": "churn/churn_month_01.csv", "reason": "celery stack test"}
    run_id = trigger(api, dag_id, conf)
    state = run_to_end(api, dag_id, run_id, timeout=1500)
    listed = ac.TaskInstanceApi(api).get_task_instances(dag_id, run_id).task_instances
    states = {ti.task_id: str(ti.state.value) if ti.state else "none" for ti in listed}
    assert state == "success", (states, failed_logs(api, dag_id, run_id, listed))
    return state, listed, states


def inspect_container(container: str) -> dict:
    shown = subprocess.run(["docker", "inspect", container],
                           capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(shown.stdout)[0]


def service_inspect(project: str, service: str) -> dict:
    """``docker inspect`` of the service's one running container."""
    return inspect_container(service_container(project, service))


def as_a_step(image: str, network: str, env: dict[str, str], script: str) -> str:
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


def service_health(project: str, service: str) -> str | None:
    return service_inspect(project, service)["State"].get("Health", {}).get("Status")


def project_copy(folder: Path) -> Path:
    """What the shipped file mounts from its folder (``./dags``, ``./include``), with the
    churn spec's latency budgets relaxed (a loaded two-core machine exceeds them; they are
    not what this tests), readable by the services' users."""
    project = folder / "project"
    shutil.copytree(ROOT / "dags", project / "dags")
    shutil.copytree(ROOT / "include", project / "include",
                    ignore=shutil.ignore_patterns("docker", "__pycache__"))  # fmt: skip
    churn = project / "include" / "models" / "churn.yaml"
    raw = yaml.safe_load(churn.read_text())
    raw["gate"]["budgets"]["max_latency_ms_p95"] = None
    raw["serving"]["latency_budget_ms_p95"] = 10_000
    churn.write_text(yaml.safe_dump(raw, sort_keys=False))
    for item in [project, *project.rglob("*")]:
        item.chmod(item.stat().st_mode | (0o755 if item.is_dir() else 0o644))
    return project


def shipped_file_env(task_image: str, folder: Path, project: str, ports: dict[str, int]) -> dict:
    """The environment that runs docker-compose.yaml from this machine's local builds
    (its ``*_IMAGE`` variables), with the secrets ``stack init`` wrote into ``folder``,
    step networks of ``project``'s own and each service's ``<NAME>_PORT``."""
    prometheus = "mlops-pack-local-prometheus:latest"
    return {
        **os.environ,
        # The shipped include/docker/airflow.Dockerfile, built on a stand-in for the
        # official image (include/docker/build_local_stack_images.sh).
        "AIRFLOW_IMAGE": "mlops-pack-airflow:local-base",
        "DOCKER_PROXY_IMAGE": "mlops-pack-local-docker-proxy:latest",
        "POSTGRES_IMAGE": "mlops-pack-local-postgres:latest",
        "REDIS_IMAGE": "mlops-pack-local-redis:latest",
        "MLFLOW_IMAGE": "mlops-pack-mlflow:latest",
        "MLOPS_PACK_TASK_IMAGE": task_image,
        "PROMETHEUS_IMAGE": prometheus,
        "PUSHGATEWAY_IMAGE": prometheus,
        "STACK_SECRETS_DIR": str(folder / ".stack" / "secrets"),
        # The steps network's name is the engine's (docker-compose.yaml): this run's own.
        "STEPS_NETWORK": f"{project}-steps",
        "SERVER_STEPS_NETWORK": f"{project}-server-steps",
        **{f"{name.upper()}_PORT": str(port) for name, port in ports.items()},
    }


def stack_folder(prefix: str) -> Path:
    """The local builds of the shipped file's images made (or found current), and a
    fresh folder with the secrets ``mlops-pack stack init`` writes."""
    subprocess.run([ROOT / "include/docker/build_local_stack_images.sh"], check=True, timeout=1500)
    folder = open_dir(prefix)
    code, _ = run_cli("stack", "init", "--dir", folder, "--include", ROOT / "include")
    assert code == 0
    return folder
