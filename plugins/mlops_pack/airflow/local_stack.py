"""``make up`` / ``make down``: Airflow with the pack loaded, on 127.0.0.1:8080.

``up`` starts a model server for every spec with a ``serving`` section (a hardened
container, or a local process without Docker; it serves the current champion, if any),
then ``airflow standalone`` (api-server with the UI and REST API v2, scheduler,
dag-processor, triggerer; SimpleAuthManager) in its own process group, with generated
passwords for an ``admin`` and a read-only ``viewer`` user, and prints the admin's. The
servers' admin tokens reach Airflow only as Connections (``AIRFLOW_CONN_...`` in the
environment of the Airflow processes). ``down`` stops exactly what ``up`` started, found
through its PID and servers files.

The pack's DAGs start unpaused and the retrain DAGs run only when triggered (UI or
REST): a local stack that trained on its own on start-up, or sat on a queued run until
someone found the pause toggle, surprised everyone who tried it. ``MLOPS_PACK_SCHEDULES=on``
keeps the specs' cron and Asset schedules (Airflow then also runs the latest cron tick
at once, as it does with ``catchup=False``). A DAG paused by hand stays paused.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from mlops_pack.airflow.local_docker import build_task_image, docker_ready, give_store_to_containers

ROOT = Path.cwd()
STATE = Path(os.environ.get("MLOPS_PACK_STACK_DIR") or ROOT / ".mlops" / "stack").absolute()
PID_FILE = STATE / "airflow.pid"
SERVERS_FILE = STATE / "servers.json"
PORT = int(os.environ.get("MLOPS_PACK_AIRFLOW_PORT", "8080"))
# Model servers listen on their spec's serving.port, or on consecutive ports from here.
SERVER_PORT_BASE = int(os.environ.get("MLOPS_PACK_SERVER_PORT_BASE", "0"))


def stack_env() -> dict[str, str]:
    airflow_home = STATE / "airflow"
    store = STATE / "store"
    data = Path(os.environ.get("MLOPS_PACK_DATA_DIR") or STATE / "data")
    secrets_file = STATE / "secrets.json"
    if not secrets_file.exists():
        STATE.mkdir(parents=True, exist_ok=True)
        secrets_file.write_text(json.dumps({"jwt": secrets.token_urlsafe(48)}))
        secrets_file.chmod(0o600)
    jwt = json.loads(secrets_file.read_text())["jwt"]
    runner = "docker" if docker_ready() else "inprocess"
    return {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "MLOPS_PACK_SCHEDULES": os.environ.get("MLOPS_PACK_SCHEDULES", "off"),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(STATE / "passwords.json"),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(PORT),
        # Task processes report to the api-server's execution API: same host and port.
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{PORT}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": jwt,
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "10",
        # A finished task frees its slot within 1 s instead of up to 5: standalone starts
        # its components itself, without the workers' supervisor fix (docs/production.md).
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
        "MLOPS_PACK_HOME": str(store),
        "MLOPS_PACK_DATA_DIR": str(data),
        "MLOPS_PACK_INCLUDE_DIR": str(_include_dir()),
        "MLOPS_PACK_RUNNER": runner,
    }


def _include_dir() -> Path:
    return Path(os.environ.get("MLOPS_PACK_INCLUDE_DIR") or ROOT / "include").absolute()


def _passwords() -> dict[str, str]:
    path = STATE / "passwords.json"
    if not path.exists():
        STATE.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({u: secrets.token_urlsafe(18) for u in ("admin", "viewer")}))
        path.chmod(0o600)
    return json.loads(path.read_text())


def _healthy() -> bool:
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{PORT}/api/v2/monitor/health", timeout=2
        ) as r:
            body = json.loads(r.read())
    except OSError:
        return False
    return body.get("scheduler", {}).get("status") == "healthy"


def up() -> int:
    if PID_FILE.exists() and _alive(int(PID_FILE.read_text())):
        print(f"already running (pid {PID_FILE.read_text().strip()}); `make down` stops it")
        return 0
    env = {**os.environ, **stack_env()}
    # standalone starts its components as `airflow ...` subprocesses found on PATH.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    passwords = _passwords()
    store = Path(env["MLOPS_PACK_HOME"])
    store.mkdir(parents=True, exist_ok=True)
    if env["MLOPS_PACK_RUNNER"] == "docker":
        env["MLOPS_PACK_TASK_IMAGE"] = build_task_image(ROOT)
        give_store_to_containers(store)
    _sample_data(Path(env["MLOPS_PACK_DATA_DIR"]))
    servers = start_model_servers(env)
    for served in servers:
        env.update(served.connection_env())
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, capture_output=True
    )
    log = (STATE / "airflow.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "airflow", "standalone"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    PID_FILE.write_text(str(process.pid))
    budget = float(os.environ.get("MLOPS_PACK_STARTUP_SECONDS", "300"))
    deadline = time.monotonic() + budget
    while time.monotonic() < deadline:
        if process.poll() is not None:
            print(f"airflow exited with {process.returncode}; see {STATE / 'airflow.log'}")
            stop_model_servers()
            return 1
        if _healthy():
            print(f"Airflow is up: http://127.0.0.1:{PORT}  (REST API: /api/v2)")
            print(f"  admin password:  {passwords['admin']}")
            print(f"  viewer password: in {STATE / 'passwords.json'}")
            runner = env["MLOPS_PACK_RUNNER"]
            print(f"  steps run with the {runner} runner; logs in {STATE / 'airflow.log'}")
            if env["MLOPS_PACK_SCHEDULES"] == "off":
                print(
                    "  DAGs are unpaused and run when triggered (UI or REST); the specs' "
                    "schedules are off (MLOPS_PACK_SCHEDULES=on make up keeps them)"
                )
            else:
                print("  DAGs are unpaused and follow the specs' schedules")
            for served in servers:
                key = served.secrets_dir / "prediction_key"
                print(f"Model server {served.model}: {served.url}  (prediction key in {key})")
            return 0
        time.sleep(2)
    print(f"Airflow did not become healthy within {budget:.0f} s; stopping it")
    down()
    return 1


def start_model_servers(env: dict[str, str]) -> list:
    """A server per served spec; records what was started for ``down``."""
    from mlops_pack.airflow import model_server

    include = Path(env["MLOPS_PACK_INCLUDE_DIR"])
    home = Path(env["MLOPS_PACK_HOME"])
    os.environ.update({k: env[k] for k in ("MLOPS_PACK_HOME", "MLOPS_PACK_DATA_DIR")})
    served_models = served_specs(include)
    started, record = [], {}
    for index, model in enumerate(served_models):
        served, handle = model_server.launch(
            model,
            runner=env["MLOPS_PACK_RUNNER"],
            include_dir=include,
            home=home,
            secrets_dir=STATE / "secrets" / model,
            log_file=STATE / f"server-{model}.log",
            image=env.get("MLOPS_PACK_TASK_IMAGE"),
            port=SERVER_PORT_BASE + index if SERVER_PORT_BASE else None,
        )
        record[model] = handle
        SERVERS_FILE.write_text(json.dumps(record))
        # Only an existing store: opening a fresh one would create it as this user.
        has_store = (home / "mlflow.db").exists()
        version = model_server.serve_champion(served) if has_store else None
        state = f"serving champion v{version}" if version else "no champion yet"
        print(f"model server {model} on {served.url}: {state}")
        started.append(served)
    return started


def served_specs(include: Path) -> list[str]:
    """Models whose spec has a ``serving`` section; a broken spec is reported and skipped.

    Its DAG shows the same error in the UI (a placeholder DAG), so one bad file does
    not stop the stack.
    """
    from mlops_pack.errors import SpecError
    from mlops_pack.spec import load_spec

    served = []
    for path in sorted((include / "models").glob("*.yaml")):
        try:
            spec = load_spec(path)
        except SpecError as exc:
            print(f"skipped (no model server, DAG marked broken): {exc}")
            continue
        if spec.serving is not None:
            served.append(path.stem)
    return served


def stop_model_servers() -> None:
    from mlops_pack.airflow import model_server

    if not SERVERS_FILE.exists():
        return
    for model, handle in json.loads(SERVERS_FILE.read_text()).items():
        model_server.stop(handle)
        print(f"stopped model server {model}")
    SERVERS_FILE.unlink()


def _sample_data(data: Path) -> None:
    """The examples' default batches, so a run triggered with no conf has data."""
    from mlops_pack.datagen import churn, diabetes

    for month in (1, 2):
        path = data / "churn" / f"churn_month_{month:02d}.csv"
        if not path.exists():
            churn.write(churn.ChurnConfig(rows=20_000, month=month), path)
    if not (data / "diabetes" / "diabetes.csv").exists():
        diabetes.write(data / "diabetes" / "diabetes.csv")
    for item in [data, *data.rglob("*")]:
        item.chmod(0o755 if item.is_dir() else 0o644)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def down() -> int:
    stop_model_servers()
    if not PID_FILE.exists():
        print("nothing to stop")
        return 0
    pid = int(PID_FILE.read_text())
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.5)
        if not _alive(pid):
            break
    PID_FILE.unlink(missing_ok=True)
    print(f"stopped Airflow (process group {pid})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlops_pack.airflow.local_stack",
        description="Airflow with the pack loaded, plus a model server per served spec "
        "(`make up` / `make down`).",
        epilog="Environment: MLOPS_PACK_AIRFLOW_PORT (8080), MLOPS_PACK_SERVER_PORT_BASE, "
        "MLOPS_PACK_STACK_DIR (.mlops/stack), MLOPS_PACK_INCLUDE_DIR (include), "
        "MLOPS_PACK_SCHEDULES (off: retrain DAGs run when triggered; on: the specs' schedules).",
    )
    parser.add_argument("command", choices=["up", "down"], help="start, or stop what up started")
    args = parser.parse_args(argv)
    return {"up": up, "down": down}[args.command]()


if __name__ == "__main__":
    raise SystemExit(main())
