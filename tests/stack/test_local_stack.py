"""The stack's infrastructure brought up for real from docker-compose.local.yaml: images
built locally, host networking, free ports; then everything stopped and removed.

What runs is the shipped material: include/postgres/init-databases.sh in Postgres, Redis
with its password, the MLflow image on its Postgres backend with proxied artifacts, the
churn model server with the compose file's hardening, Prometheus
on include/prometheus/prometheus.yml (targets moved to 127.0.0.1), secrets from
``mlops-pack stack init``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml
from stack_support import docker_compose, env_values
from support import ROOT, free_port, run_cli

LOCAL = ROOT / "docker-compose.local.yaml"


def wait_until(check, what: str, timeout: float = 240.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except (OSError, urllib.error.URLError):
            pass
        assert time.monotonic() < deadline, f"{what} did not come up"
        time.sleep(1)


def http_status(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def local_prometheus_config(folder: Path, ports: dict[str, int]) -> Path:
    config = yaml.safe_load((ROOT / "include/prometheus/prometheus.yml").read_text())
    targets = {
        "model-server-churn:8181": f"127.0.0.1:{ports['churn']}",
        "model-server-diabetes:8182": f"127.0.0.1:{free_port()}",  # not started here
        "localhost:9090": f"127.0.0.1:{ports['prometheus']}",
    }
    config["global"]["scrape_interval"] = "1s"
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            static["targets"] = [targets[t] for t in static["targets"]]
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o644)
    return path


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory):
    subprocess.run([ROOT / "include/docker/build_local_stack_images.sh"], check=True, timeout=1500)
    folder = tmp_path_factory.mktemp("local-stack")
    code, _ = run_cli("stack", "init", "--dir", folder, "--include", ROOT / "include")
    assert code == 0
    names = ("postgres", "redis", "mlflow", "churn", "prometheus")
    ports = {name: free_port() for name in names}
    env = {
        **os.environ,
        "STACK_SECRETS_DIR": str(folder / ".stack" / "secrets"),
        "LOCAL_PROMETHEUS_CONFIG": str(local_prometheus_config(folder, ports)),
        **{f"LOCAL_{name.upper()}_PORT": str(port) for name, port in ports.items()},
    }
    project = f"mlops-local-{uuid.uuid4().hex[:8]}"
    env_file = str(folder / ".env")
    compose = [docker_compose(), "-p", project, "--env-file", env_file, "-f", str(LOCAL)]
    try:
        subprocess.run([*compose, "up", "-d"], cwd=ROOT, env=env, check=True, timeout=600)
        yield {"ports": ports, "secrets": env_values(folder / ".env"), "project": project}
    finally:
        logs = subprocess.run(
            [*compose, "logs", "--no-color", "--tail", "30"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        print(logs.stdout[-6000:])
        subprocess.run(
            [*compose, "down", "-v", "--remove-orphans"], cwd=ROOT, env=env, check=True, timeout=300
        )
        left = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert left.stdout.strip() == "", "containers left behind"


def test_postgres_gives_each_consumer_its_own_database(local_stack):
    import psycopg

    port, secrets = local_stack["ports"]["postgres"], local_stack["secrets"]

    def connect(role: str, db: str):
        password = {
            "airflow": secrets["AIRFLOW_DB_PASSWORD"],
            "mlflow": secrets["MLFLOW_DB_PASSWORD"],
            "mlops_lock": secrets["LOCK_DB_PASSWORD"],
        }[role]
        return psycopg.connect(
            host="127.0.0.1", port=port, user=role, password=password, dbname=db, connect_timeout=5
        )

    def ready() -> bool:
        try:
            connect("airflow", "airflow").close()
        except psycopg.OperationalError:  # not listening yet, or still initialising
            return False
        return True

    wait_until(ready, "postgres")
    for role in ("airflow", "mlflow", "mlops_lock"):
        with connect(role, role) as conn:
            assert conn.execute("select current_user::text").fetchone() == (role,)
    with pytest.raises(psycopg.OperationalError, match="permission denied"):
        connect("mlflow", "airflow")
    with pytest.raises(psycopg.OperationalError, match="permission denied"):
        connect("mlops_lock", "mlflow")
    # The lock role can take a transaction-scoped advisory lock: all the lock needs.
    with connect("mlops_lock", "mlops_lock") as conn:
        assert conn.execute("select pg_try_advisory_xact_lock(42)").fetchone() == (True,)


def test_redis_requires_its_password(local_stack):
    port, password = local_stack["ports"]["redis"], local_stack["secrets"]["REDIS_PASSWORD"]

    def ask(*commands: str) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall("".join(f"{c}\r\n" for c in commands).encode())
            time.sleep(0.3)
            return conn.recv(4096)

    wait_until(lambda: ask("PING"), "redis")
    assert b"NOAUTH" in ask("PING")
    assert ask(f"AUTH {password}", "PING") == b"+OK\r\n+PONG\r\n"


def test_mlflow_keeps_runs_in_postgres_and_artifacts_behind_its_url(local_stack, tmp_path):
    import psycopg
    from mlflow import MlflowClient

    url = f"http://127.0.0.1:{local_stack['ports']['mlflow']}"
    wait_until(lambda: http_status(f"{url}/health") == 200, "mlflow", timeout=400)
    client = MlflowClient(tracking_uri=url, registry_uri=url)
    experiment = client.create_experiment(f"stack-{uuid.uuid4().hex[:6]}")
    run = client.create_run(experiment)
    client.log_metric(run.info.run_id, "roc_auc", 0.81)
    artifact = tmp_path / "note.json"
    artifact.write_text(json.dumps({"hello": "stack"}))
    client.log_artifact(run.info.run_id, str(artifact))
    # Proxied: the client was told a server URI, not a path on some host.
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    back = Path(client.download_artifacts(run.info.run_id, "note.json", str(tmp_path / "dl")))
    assert json.loads(back.read_text()) == {"hello": "stack"}
    with psycopg.connect(
        host="127.0.0.1",
        port=local_stack["ports"]["postgres"],
        user="mlflow",
        password=local_stack["secrets"]["MLFLOW_DB_PASSWORD"],
        dbname="mlflow",
    ) as conn:
        row = conn.execute(
            "select value from metrics where run_uuid = %s and key = 'roc_auc'", (run.info.run_id,)
        ).fetchone()
    assert row == (0.81,)


def test_model_server_runs_hardened_and_prometheus_scrapes_it(local_stack):
    ports, secrets = local_stack["ports"], local_stack["secrets"]
    server = f"http://127.0.0.1:{ports['churn']}"
    key = secrets["CHURN_PREDICTION_KEY"]
    wait_until(lambda: http_status(f"{server}/version", key) == 200, "model server")
    assert http_status(f"{server}/version") == 401
    container = subprocess.run(
        [
            "docker",
            "ps",
            "-q",
            "--filter",
            f"label=com.docker.compose.project={local_stack['project']}",
            "--filter",
            "label=com.docker.compose.service=model-server-churn",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert len(container) == 1
    inspect = json.loads(
        subprocess.run(
            ["docker", "inspect", container[0]], capture_output=True, text=True, check=True
        ).stdout
    )[0]
    host = inspect["HostConfig"]
    assert host["ReadonlyRootfs"] and host["CapDrop"] == ["ALL"]
    assert inspect["Config"]["User"] == "65534:65534"
    assert "no-new-privileges:true" in host["SecurityOpt"]

    prometheus = f"http://127.0.0.1:{ports['prometheus']}"

    def query(expr: str) -> list:
        url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)["data"]["result"]

    wait_until(lambda: query('up{job="model-server-churn"} == 1'), "the churn scrape")
    refused = 'mlops_pack_refused_requests_total{model="churn",status="401"}'
    # The unauthenticated /version above is counted; the scrape after it shows it.
    assert wait_until(lambda: query(refused), "the refused-requests counter", timeout=60)
