"""The stack brought up for real from docker-compose.local.yaml, once for every test here:
images built locally, host networking, free ports; then everything stopped and removed.

What runs is the shipped material: include/postgres/init-databases.sh in Postgres, Redis
with its password, the MLflow image on its Postgres backend with proxied artifacts behind
its basic authentication, the churn model server with the compose file's hardening,
both answering HTTPS only (docker-compose.local-tls.yaml, with the certificates
``mlops-pack stack tls`` wrote; every client verifies them), Prometheus on
include/prometheus/prometheus.tls.yml (targets moved to 127.0.0.1), secrets from
``mlops-pack stack init``, and Airflow 3 on Celery (airflow-init, api-server, scheduler,
dag-processor, triggerer, two workers) running the pack's DAGs against all of it.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import airflow_client.client as ac
import pytest
import yaml
from dashboard_support import (
    assert_every_panel_has_data,
    assert_queries_have_data,
    basic_auth,
    panel_queries,
    query,
    wait_for_scrapes,
)
from mlops_pack.server_client import ServerClient
from stack_support import (
    airflow_api,
    champion_version,
    container_command,
    failed_logs,
    http_status,
    inspect_container,
    mlflow_client,
    retrain,
    service_container,
    state_checks,
    task_log,
    trigger,
    unpaused,
    wait_until,
)
from stack_support import (
    local_stack as started_stack,
)
from support import churn_spec_copy, open_dir, run_to_end, xcom_value

# The stack starts once, inside the first test's budget; the DAG run takes minutes on a
# loaded two-core machine.
pytestmark = pytest.mark.timeout(1800)


def churn_batches(folder: Path) -> Path:
    """Month 1 of churn in a folder the workers' uid can read."""
    from mlops_pack.datagen import churn

    churn.write(churn.ChurnConfig(rows=4_000, month=1), folder / "churn" / "churn_month_01.csv")
    for item in folder.rglob("*"):
        item.chmod(0o755 if item.is_dir() else 0o644)
    return folder


def relaxed(raw: dict) -> None:
    """The churn spec without its latency budgets: they are not what this tests, and on a
    loaded two-core machine single-row answers of a one-CPU server exceed 250 ms."""
    raw["serving"]["latency_budget_ms_p95"] = 10_000


def unserved(raw: dict) -> None:
    raw["name"] = "churn_unserved"
    del raw["serving"], raw["monitoring"]


@pytest.fixture(autouse=True)
def _trusts_the_stack(local_stack, monkeypatch):
    """This process's clients of the model server (the pack's server client, the
    simulator) verify it against the stack's CA, as the workers do."""
    monkeypatch.setenv("MLOPS_PACK_SERVER_CA", str(local_stack["ca"]))


@pytest.fixture(scope="module")
def local_stack(task_image):
    include = churn_spec_copy(open_dir("local-stack-include-"), relaxed).parents[1]
    unserved_spec = churn_spec_copy(open_dir("local-stack-unserved-"), unserved)
    shutil.copy(unserved_spec, include / "models" / "churn_unserved.yaml")
    for item in include.rglob("*"):
        item.chmod(0o755 if item.is_dir() else 0o644)
    data = churn_batches(open_dir("local-stack-data-"))
    try:
        with started_stack(task_image, include, data, tls=True) as stack:
            yield {**stack, "include": include}
    finally:
        for folder in (include.parent, unserved_spec.parents[2], data):
            shutil.rmtree(folder, ignore_errors=True)


def airflow_config(container: str, section: str, key: str) -> str:
    """The value of an Airflow option as the process in ``container`` sees it."""
    return subprocess.run(
        ["docker", "exec", container, "airflow", "config", "get-value", section, key],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def test_a_spec_added_shows_at_once_after_reserialize(local_stack):
    """The compose files parse the specs every 120 s (docs/production.md, "How often the
    specs are parsed"); the documented way to pick a change up at once works."""
    models = local_stack["include"] / "models"
    added = models / "churn_added.yaml"
    raw = yaml.safe_load((models / "churn_unserved.yaml").read_text())
    added.write_text(yaml.safe_dump({**raw, "name": "churn_added"}, sort_keys=False))
    added.chmod(0o644)
    dag_processor = service_container(local_stack["project"], "airflow-dag-processor")
    assert airflow_config(dag_processor, "dag_processor", "min_file_process_interval") == "120"
    reserialized = subprocess.run(
        ["docker", "exec", dag_processor, "airflow", "dags", "reserialize"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert reserialized.returncode == 0, reserialized.stderr[-3000:]
    dag = ac.DAGApi(airflow_api(local_stack)).get_dag("mlops_retrain__churn_added")
    assert dag.dag_id == "mlops_retrain__churn_added"
    assert "churn_added" in [tag.name for tag in dag.tags]


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


def test_mlflow_keeps_runs_in_postgres_and_artifacts_behind_its_url(
    local_stack, tmp_path, monkeypatch
):
    import psycopg

    client = mlflow_client(local_stack, monkeypatch)
    # HTTPS only (docker-compose.local-tls.yaml): a client without the stack's CA is
    # refused, and plain HTTP gets no answer.
    url, ca = local_stack["mlflow_url"], local_stack["ca"]
    assert url.startswith("https://")
    search = f"{url}/api/2.0/mlflow/experiments/search?max_results=5"
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(search, timeout=10)
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(search.replace("https://", "http://"), timeout=10)
    # MLflow answers only its users: no password, or a wrong one, is refused.
    assert http_status(search, ca=ca) == 401
    wrong = urllib.request.Request(search, headers=basic_auth("not-it"))  # user mlops-pack
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(wrong, timeout=10, context=ssl.create_default_context(cafile=ca))
    assert refused.value.code == 401
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
    """The churn server answers HTTPS only, with a certificate of its own (not MLflow's)
    that the stack's CA signed; it is hardened, and Prometheus scrapes it over HTTPS."""
    ports, secrets = local_stack["ports"], local_stack["secrets"]
    server, ca = local_stack["churn_url"], local_stack["ca"]
    key = secrets["CHURN_PREDICTION_KEY"]
    wait_until(lambda: http_status(f"{server}/version", key, ca) == 200, "model server")
    assert http_status(f"{server}/version", ca=ca) == 401
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(f"{server}/version", timeout=10)
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(f"http://127.0.0.1:{ports['churn']}/version", timeout=10)
    context = ssl.create_default_context(cafile=ca)
    with (
        socket.create_connection(("127.0.0.1", ports["churn"]), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        names = [value for _, value in tls.getpeercert()["subjectAltName"]]
    assert names[0] == "model-server-churn" and "mlflow" not in names, names
    container = service_container(local_stack["project"], "model-server-churn")
    inspect = json.loads(
        subprocess.run(
            ["docker", "inspect", container], capture_output=True, text=True, check=True
        ).stdout
    )[0]
    host = inspect["HostConfig"]
    assert host["ReadonlyRootfs"] and host["CapDrop"] == ["ALL"]
    assert inspect["Config"]["User"] == "65534:65534"
    assert "no-new-privileges:true" in host["SecurityOpt"]

    prometheus = ports["prometheus"]
    wait_until(lambda: query(prometheus, 'up{job="model-server-churn"} == 1'), "the churn scrape")
    refused = 'mlops_pack_refused_requests_total{model="churn",status="401"}'
    # The unauthenticated /version above is counted; the scrape after it shows it.
    assert wait_until(lambda: query(prometheus, refused), "the refused-requests counter", 60)
    # Prometheus answers only with its password (stack init), its own scrape included.
    for path in ("/api/v1/query?query=up", "/-/ready", "/graph"):
        assert http_status(f"http://127.0.0.1:{prometheus}{path}") == 401, path
    assert query(prometheus, 'up{job="prometheus"} == 1')


def worker_log_tail(stack: dict, service: str) -> str:
    """The end of a worker's own log: why it took no task, when it took none."""
    logs = subprocess.run(
        ["docker", "logs", "--tail", "60", service_container(stack["project"], service)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return (logs.stdout + logs.stderr)[-4000:]


def test_celery_workers_run_the_retrain_dag_and_promote(local_stack, monkeypatch):
    """A retrain DAG (churn, not served), triggered through the REST API, runs on both
    Celery workers, consecutive tasks on different ones, and promotes its first champion
    over the MLflow server (HTTPS only) under the Postgres lock, signed in as the pack's
    MLflow user.
    The read-only user (the model servers', the Models page's) cannot move the alias; the
    Models page, in the api-server, reads the promotion from MLflow with it."""
    from mlflow.exceptions import MlflowException

    _, listed, states = retrain(local_stack, "churn_unserved")
    assert states["promote"] == "success", states
    ran = sorted((ti for ti in listed if ti.hostname), key=lambda ti: ti.start_date)
    hosts = [ti.hostname for ti in ran]
    workers = {"airflow-worker-1", "airflow-worker-2"}
    idle = {name: worker_log_tail(local_stack, name) for name in workers - set(hosts)}
    assert set(hosts) == workers, (hosts, idle)
    assert any(a != b for a, b in itertools.pairwise(hosts)), hosts
    # Each worker runs through the pack's entry point, whose supervisor fix fits the
    # image's Task SDK (a finished task frees its slot at once).
    fits = "from mlops_pack.airflow import supervisor_exit as s; assert s.install()"
    for worker in ("airflow-worker-1", "airflow-worker-2"):
        container = service_container(local_stack["project"], worker)
        # Over HTTPS only: the tasks and their step containers verified the server.
        env = dict(e.split("=", 1) for e in inspect_container(container)["Config"]["Env"])
        assert env["MLFLOW_TRACKING_URI"] == local_stack["mlflow_url"], env["MLFLOW_TRACKING_URI"]
        command = container_command(container)
        assert command == ["python", "-m", "mlops_pack.airflow.launch", "celery", "worker"]
        subprocess.run(["docker", "exec", container, "python", "-c", fits], check=True)
    assert champion_version(local_stack, "churn_unserved") == "1"
    reader = mlflow_client(local_stack, monkeypatch, "mlops-reader")
    with pytest.raises(MlflowException) as denied:
        reader.set_registered_model_alias("churn_unserved", "champion", "1")
    assert denied.value.error_code == "PERMISSION_DENIED", denied.value
    api = airflow_api(local_stack)
    page = f"{api.configuration.host}/mlops-pack/api/models/churn_unserved"
    token = api.configuration.access_token

    seen: list = []

    def models_page() -> dict | None:
        request = urllib.request.Request(page, headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                row = json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            seen.append(f"{exc.code} {exc.read()[:500]!r}")
            return None
        seen.append(row)
        return row if row.get("champion") else None

    try:
        row = wait_until(models_page, "the Models page's champion", 120)
    except AssertionError:
        raise AssertionError(f"the Models page answered {seen[-3:]}") from None
    assert row["champion"] == "1", row


# What the launcher does for `scheduler`, with Airflow's command line replaced by a report.
_LAUNCHED_SCHEDULER = """
import sys
import airflow.__main__
from celery.backends.database.session import SessionManager
from mlops_pack.airflow import launch

airflow.__main__.main = lambda: print("kept" if SessionManager().forked else "as-celery")
sys.argv = ["launch", "scheduler"]
launch.main()
"""

# A process forked from a kept scheduler (the executor's pool for sending tasks) gets its
# own connection, and the parent's stays the same and good: prints both backends' pids.
_FORKED_FROM_KEPT = """
import os, sys
from mlops_pack.airflow import celery_results
assert celery_results.install()
from airflow.configuration import conf
from airflow.providers.celery.executors.celery_executor_utils import create_celery_app
from sqlalchemy import text

backend = create_celery_app(conf).backend

def backend_pid():
    session = backend.ResultSession()
    try:
        return session.execute(text("select pg_backend_pid()")).scalar()
    finally:
        session.close()

before = backend_pid()
child = os.fork()
if child == 0:
    print("child", backend_pid(), flush=True)
    os._exit(0)
os.waitpid(child, 0)
print("parent", before, backend_pid())
"""


def test_the_schedulers_celery_state_check_keeps_one_connection(local_stack):
    container = service_container(local_stack["project"], "airflow-scheduler")
    command = container_command(container)
    assert command == ["python", "-m", "mlops_pack.airflow.launch", "scheduler"]
    launched = subprocess.run(
        ["docker", "exec", container, "python", "-c", _LAUNCHED_SCHEDULER],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert launched.stdout.strip().splitlines()[-1] == "kept", launched.stderr[-2000:]
    forked = subprocess.run(
        ["docker", "exec", container, "python", "-c", _FORKED_FROM_KEPT],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    pids = {line.split()[0]: line.split()[1:] for line in forked.stdout.splitlines()}
    assert pids["parent"][0] == pids["parent"][1], forked.stdout
    assert pids["child"][0] != pids["parent"][0], forked.stdout
    # The executor's own check against the stack's Postgres: as Celery does it, every
    # check is a new session; kept, the checks share one.
    as_celery = state_checks(local_stack, 40, kept=False)
    kept = state_checks(local_stack, 40, kept=True)
    assert as_celery["tasks"] == kept["tasks"] == 8
    assert as_celery["sessions_opened"] >= 40, as_celery
    assert kept["sessions_opened"] <= 5, kept


def test_the_served_model_follows_the_alias_and_every_panel_has_data(local_stack):
    """The served churn DAG deploys and promotes on the Celery workers; the served version
    is the champion alias; Prometheus has the server's counters and every panel of the
    churn dashboard has data."""
    import pandas as pd

    ports, secrets = local_stack["ports"], local_stack["secrets"]
    _, _, states = retrain(local_stack, "churn")
    assert states["promote"] == "success" and states["deploy"] == "success", states
    champion = champion_version(local_stack, "churn")
    server = local_stack["churn_url"]
    key = secrets["CHURN_PREDICTION_KEY"]
    status, served, _ = ServerClient(server, key).call("GET", "/version")
    assert status == 200 and served["version"] == champion, served

    frame = pd.read_csv(Path(local_stack["data"]) / "churn" / "churn_month_01.csv", nrows=60)
    rows = json.loads(frame.drop(columns=["churned", "customer_id"]).to_json(orient="records"))
    prometheus = ports["prometheus"]
    queries = assert_every_panel_has_data(prometheus, "churn", server, key, rows)
    counted = query(prometheus, 'mlops_pack_requests_total{model="churn",status="ok"}')
    assert sum(float(s["value"][1]) for s in counted) >= 22, counted
    info = next(q for q in queries if "mlops_pack_model_info" in q)
    assert {s["metric"]["version"] for s in query(prometheus, info)} == {champion}


def test_the_monitor_on_a_worker_reads_the_servers_logs_and_the_label_feed(local_stack):
    """The monitor DAG, triggered through the REST API, runs on a Celery worker whose step
    container shares no file system with it: the window's days of the churn server's
    prediction logs (downloaded from the server: no volume of the server is mounted on
    the workers, as on another host) and of the label feed are copied in, and the
    monitor counts the simulated traffic and its labels. The worker pushes the window's
    metrics, and the dashboard's drift row has data."""
    from datetime import UTC, date, datetime

    from mlops_pack.cli import main
    from support import ROOT

    ports, secrets = local_stack["ports"], local_stack["secrets"]
    key_file = local_stack["labels"].parent / f"{local_stack['project']}-prediction-key"
    key_file.write_text(secrets["CHURN_PREDICTION_KEY"], encoding="utf-8")
    key_file.chmod(0o600)
    try:
        code = main([str(a) for a in (
            "simulate", "--spec", ROOT / "include/models/churn.yaml",
            "--server-url", local_stack["churn_url"],
            "--prediction-key-file", key_file,
            "--labels-dir", local_stack["labels"] / "churn",
            "--days", "1", "--rows-per-day", "600", "--batch-rows", "100",
            "--start-date", date.today().isoformat(), "--label-delay-days", "0", "--seed", "11",
        )])  # fmt: skip
    finally:
        key_file.unlink()
    assert code == 0
    for item in local_stack["labels"].rglob("*"):  # the workers' uid reads the feed
        item.chmod(0o755 if item.is_dir() else 0o644)
    api = airflow_api(local_stack)
    dag_id = "mlops_monitor__churn"
    unpaused(api, dag_id)
    run_id = trigger(api, dag_id, {}, at=datetime.now(UTC))  # the window ends now
    state = run_to_end(api, dag_id, run_id, timeout=900)
    listed = ac.TaskInstanceApi(api).get_task_instances(dag_id, run_id).task_instances
    monitor = next(ti for ti in listed if ti.task_id == "monitor")
    assert str(monitor.state.value) == "success", (state, failed_logs(api, dag_id, run_id, listed))
    assert monitor.hostname in {"airflow-worker-1", "airflow-worker-2"}, monitor.hostname
    # The logs came over HTTP from the server, to a worker that mounts none of its volumes.
    log = task_log(api, dag_id, run_id, monitor)
    first = _log_download(log)
    assert first["fetched"] > 0 and first["cached"] == 0, log[-3000:]
    inspect = ["docker", "inspect", "--format", "{{json .Mounts}}",
               service_container(local_stack["project"], monitor.hostname)]  # fmt: skip
    mounts = json.loads(subprocess.run(inspect, capture_output=True, text=True, check=True).stdout)
    assert mounts and not [m for m in mounts if "predictions" in m.get("Name", "")], mounts
    record = xcom_value(api, dag_id, "monitor", run_id)
    window = record["window"]
    # The 600 simulated rows (and the requests of the test before) were served in the
    # window; every simulated row's label arrived through the feed.
    assert window["rows"] >= 600, window
    assert window["labelled_rows"] >= 600, window
    # The worker pushed the window's metrics; every query of the dashboard's drift and
    # live metrics row has data from the stack's Prometheus (scraping the Pushgateway).
    assert record["metrics_pushed"] is True, record
    wait_for_scrapes(ports["prometheus"], 2, "pushgateway")
    monitor_queries = panel_queries("churn", "monitor")
    assert len(monitor_queries) >= 8
    assert_queries_have_data(ports["prometheus"], "churn", monitor_queries, "mlops_monitor_")
    rows = query(ports["prometheus"], 'mlops_monitor_window_rows{model="churn"}')
    assert [float(s["value"][1]) for s in rows] == [float(window["rows"])], rows
    # Prometheus scraped the gateway with its password (a refused scrape is up == 0).
    up = query(ports["prometheus"], 'up{job="pushgateway"}')
    assert [float(s["value"][1]) for s in up] == [1.0], up

    # Again with no traffic since: a worker that ran the window before holds its logs
    # and downloads nothing; one that did not downloads them all. Celery picks the
    # worker, so run until one of them runs it a second time (at most two more runs).
    seen = {monitor.hostname}
    for attempt in range(2):
        again_id = trigger(api, dag_id, {}, at=datetime.now(UTC))
        state = run_to_end(api, dag_id, again_id, timeout=900)
        listed = ac.TaskInstanceApi(api).get_task_instances(dag_id, again_id).task_instances
        again = next(ti for ti in listed if ti.task_id == "monitor")
        assert str(again.state.value) == "success", (
            state,
            failed_logs(api, dag_id, again_id, listed),
        )
        got = _log_download(task_log(api, dag_id, again_id, again))
        rows = xcom_value(api, dag_id, "monitor", again_id)["window"]["rows"]
        assert rows == window["rows"], (attempt, rows)
        if again.hostname in seen:
            assert (got["fetched"], got["cached"]) == (0, first["fetched"]), got
            break
        assert (got["fetched"], got["cached"]) == (first["fetched"], 0), got
        seen.add(again.hostname)
    else:
        pytest.fail(f"two workers cannot run three monitor runs each on another: {seen}")


def _log_download(log: str) -> dict[str, int]:
    """What the monitor's task log says it downloaded and took from the worker's cache."""
    found = re.search(
        r"downloaded (\d+) bytes of prediction logs \((\d+) days; (\d+) bytes already in "
        r"this worker's cache\)",
        log,
    )
    assert found, log[-3000:]
    return {"fetched": int(found.group(1)), "days": int(found.group(2)),
            "cached": int(found.group(3))}  # fmt: skip


def test_the_pushgateway_takes_pushes_only_with_its_password(local_stack):
    """The gateway's web configuration (bcrypt hash from stack init) guards every path:
    a push without the password, or with another, is refused and changes nothing."""
    from mlops_pack.errors import ServiceUnavailableError
    from mlops_pack.metrics_push import push

    gateway = f"http://127.0.0.1:{local_stack['ports']['pushgateway']}"
    body = b"mlops_monitor_forged 1\n"
    for credentials in (None, ("mlops-pack", "not-the-password")):
        with pytest.raises(ServiceUnavailableError, match="HTTP 401: it refused") as refused:
            push(gateway, "forged", body, credentials=credentials)
        assert "not-the-password" not in str(refused.value)
    assert http_status(f"{gateway}/metrics") == 401  # reading needs it too
    password = local_stack["secrets"]["PUSHGATEWAY_PASSWORD"]
    push(gateway, "probe", b"mlops_monitor_probe 1\n", credentials=("mlops-pack", password))
    request = urllib.request.Request(f"{gateway}/metrics", headers=basic_auth(password))
    with urllib.request.urlopen(request, timeout=5) as response:
        text = response.read().decode()
    assert "mlops_monitor_probe{" in text and "forged" not in text
