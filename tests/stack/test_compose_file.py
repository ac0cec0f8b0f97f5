"""The shipped docker-compose.yaml, its secrets and its dashboards, checked with the real
tools: ``mlops-pack stack init`` writes the .env, Debian's docker-compose reads the file.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from mlops_pack.mlflow_credentials import read as registry_credentials
from stack_support import docker_compose, env_values
from support import ROOT, run_cli

COMPOSE = ROOT / "docker-compose.yaml"
TLS_OVERRIDE = ROOT / "docker-compose.tls.yaml"
SERVED = ("churn", "diabetes")
LONG_RUNNING = {
    "postgres",
    "lock-db",
    "redis",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "docker-proxy",
    "mlflow",
    "model-server-churn",
    "model-server-diabetes",
    "prometheus",
    "pushgateway",
    "grafana",
}


@pytest.fixture
def stack_env(tmp_path) -> Path:
    code, _ = run_cli("stack", "init", "--dir", tmp_path, "--include", ROOT / "include")
    assert code == 0
    return tmp_path / ".env"


def compose_config(env_file: Path, *overrides: Path, **env: str) -> subprocess.CompletedProcess:
    files = [arg for path in (COMPOSE, *overrides) for arg in ("-f", str(path))]
    return subprocess.run(
        [docker_compose(), "--env-file", str(env_file), *files, "config"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def mount_targets(service: dict) -> list[str]:
    """Where a service's volumes are mounted (docker-compose 1.x prints "src:target:mode")."""
    return [
        v.split(":")[1] if isinstance(v, str) else v["target"] for v in service.get("volumes", [])
    ]


def test_stack_init_writes_private_secrets_once(tmp_path, stack_env, capsys):
    values = env_values(stack_env)
    assert stack_env.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / ".stack").stat().st_mode & 0o777 == 0o700
    assert len(base64.urlsafe_b64decode(values.pop("AIRFLOW_FERNET_KEY"))) == 32
    assert values.pop("AIRFLOW_ADMIN_USER") == "admin"
    # Every secret is fresh, long and safe to put in a DSN or JSON unquoted.
    assert len(set(values.values())) == len(values) >= 9 + 2 * len(SERVED)
    assert all(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{39,}", v) for v in values.values())
    for model in SERVED:
        for secret in ("admin_token", "prediction_key"):
            path = tmp_path / ".stack" / "secrets" / model / secret
            assert path.read_text() == values[f"{model.upper()}_{secret.upper()}"]
        # The server fetches versions from MLflow as the read-only user.
        path = tmp_path / ".stack" / "secrets" / model / "registry_credentials"
        assert registry_credentials(path) == {
            "MLFLOW_TRACKING_USERNAME": "mlops-reader",
            "MLFLOW_TRACKING_PASSWORD": values["MLFLOW_READER_PASSWORD"],
        }
    # Prometheus's and the Pushgateway's web configurations hold their passwords' bcrypt
    # hashes only; the scrapes read the passwords themselves from the files beside them.
    import bcrypt

    for service in ("pushgateway", "prometheus"):
        folder = tmp_path / ".stack" / "secrets" / service
        password = values[f"{service.upper()}_PASSWORD"]
        assert (folder / "password").read_text() == password
        users = yaml.safe_load((folder / "web.yml").read_text())["basic_auth_users"]
        assert list(users) == ["mlops-pack"] and password not in users["mlops-pack"]
        assert bcrypt.checkpw(password.encode(), users["mlops-pack"].encode())
        assert users["mlops-pack"].startswith("$2b$04$")  # checked on every request: cheap
    before = stack_env.read_bytes()
    capsys.readouterr()
    code, _ = run_cli("stack", "init", "--dir", tmp_path, "--include", ROOT / "include")
    assert code == 2
    assert f"{stack_env} exists" in capsys.readouterr().err
    assert stack_env.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".env-")]


def test_no_generated_secret_reads_as_a_command_line_option():
    """One draw in 64 of a URL-safe token starts with '-'; the official image's entrypoint
    passes the admin password as an argument, where that reads as an option."""
    from mlops_pack.stack_env import token

    assert not [t for t in (token() for _ in range(2000)) if t.startswith("-")]


def test_compose_config_accepts_the_shipped_file(stack_env):
    result = compose_config(stack_env)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    services = config["services"]
    assert set(services) == LONG_RUNNING | {"airflow-init"}
    values = env_values(stack_env)
    # The generated secrets are what the services get: no default password anywhere.
    postgres_env = services["postgres"]["environment"]
    assert postgres_env["POSTGRES_PASSWORD"] == values["POSTGRES_PASSWORD"]
    worker = services["airflow-worker"]
    lock_dsn = f"postgresql://mlops_lock:{values['LOCK_DB_PASSWORD']}@lock-db/mlops_lock"
    assert worker["environment"]["MLOPS_PACK_LOCK_DSN"] == lock_dsn
    # The lock's server holds the lock's database only; Airflow's and MLflow's server
    # does not hold it (the step containers, which take the lock, reach only lock-db).
    lock_env = services["lock-db"]["environment"]
    assert lock_env["MLOPS_PACK_DATABASES"] == "mlops_lock"
    assert lock_env["LOCK_DB_PASSWORD"] == values["LOCK_DB_PASSWORD"]
    assert postgres_env["MLOPS_PACK_DATABASES"] == "airflow mlflow"
    assert "LOCK_DB_PASSWORD" not in postgres_env
    assert worker["deploy"]["replicas"] == 2
    assert worker["environment"]["DOCKER_HOST"] == "tcp://docker-proxy:2375"
    # MLflow's GenAI job runner (eight idle processes) is off: tracking and registry only.
    mlflow = services["mlflow"]
    assert mlflow["environment"]["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    # MLflow answers only its users: the image's start script gets their passwords.
    for variable, key in (
        ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_ADMIN_PASSWORD"),
        ("MLFLOW_PACK_PASSWORD", "MLFLOW_PACK_PASSWORD"),
        ("MLFLOW_READER_PASSWORD", "MLFLOW_READER_PASSWORD"),
        ("MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_SECRET_KEY"),
    ):
        assert mlflow["environment"][variable] == values[key], variable
    assert mlflow["command"] == ["--serve-artifacts"]  # the entrypoint adds the auth app
    # Who signs in as whom: the workers (and their steps) write, the Models page reads.
    signed_in = {
        name: (services[name]["environment"].get("MLFLOW_TRACKING_USERNAME"),
               services[name]["environment"].get("MLFLOW_TRACKING_PASSWORD"))
        for name in LONG_RUNNING | {"airflow-init"} if "environment" in services[name]
    }  # fmt: skip
    assert {k: v for k, v in signed_in.items() if v != (None, None)} == {
        "airflow-worker": ("mlops-pack", values["MLFLOW_PACK_PASSWORD"]),
        "airflow-apiserver": ("mlops-reader", values["MLFLOW_READER_PASSWORD"]),
    }
    assert services["airflow-apiserver"]["environment"]["MLFLOW_TRACKING_URI"] == (
        "http://mlflow:5000"
    )
    # Pushes and scrapes of the Pushgateway take the password stack init wrote.
    gateway = services["pushgateway"]
    assert "--web.config.file=/etc/pushgateway/web.yml" in gateway["command"]
    assert "/etc/pushgateway/web.yml" in mount_targets(gateway)
    pushed_with = worker["environment"]["MLOPS_PACK_PUSHGATEWAY_PASSWORD"]
    assert pushed_with == values["PUSHGATEWAY_PASSWORD"]
    assert "/etc/prometheus/secrets/pushgateway_password" in mount_targets(services["prometheus"])
    # Prometheus itself: every path behind its password, which Grafana's data source has.
    prometheus = services["prometheus"]
    assert "--web.config.file=/etc/prometheus/web.yml" in prometheus["command"]
    assert {"/etc/prometheus/web.yml", "/etc/prometheus/secrets/prometheus_password"} <= set(
        mount_targets(prometheus)
    )
    grafana_env = services["grafana"]["environment"]
    assert grafana_env["PROMETHEUS_PASSWORD"] == values["PROMETHEUS_PASSWORD"]
    # The workers start through the pack's entry point (its supervisor fix).
    command = worker["command"]
    command = command if isinstance(command, list) else command.split()
    assert command == ["python", "-m", "mlops_pack.airflow.launch", "celery", "worker"]
    # The scheduler too: its Celery state check keeps one connection, which pre-ping
    # replaces after a Postgres restart.
    scheduler = services["airflow-scheduler"]
    assert scheduler["command"].split() == [
        "python",
        "-m",
        "mlops_pack.airflow.launch",
        "scheduler",
    ]
    options = scheduler["environment"]["AIRFLOW__CELERY__RESULT_BACKEND_SQLALCHEMY_ENGINE_OPTIONS"]
    assert json.loads(options) == {"pool_pre_ping": True}
    # With the fix, the heartbeat interval no longer bounds a finished task's slot: the
    # default (5 s) stays, and with it a fifth of the heartbeats.
    assert "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL" not in worker["environment"]
    # Specs are parsed every 2 minutes, not every 30 s (docs/production.md).
    parse_interval = "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL"
    assert services["airflow-dag-processor"]["environment"][parse_interval] == "120"
    # The workers download the servers' prediction logs: no server volume is theirs.
    assert worker["environment"]["MLOPS_PACK_PREDICTION_LOGS"] == "server"
    assert "serving" in worker["networks"]

    def sources(service) -> set[str]:
        return {
            v.split(":")[0] if isinstance(v, str) else v["source"]
            for v in service.get("volumes", [])
        }

    servers = [s for name, s in services.items() if name.startswith("model-server-")]
    server_volumes = {v for s in servers for v in sources(s) if "predictions" in v}
    assert len(server_volumes) == len(servers) == 2
    assert not server_volumes & sources(worker)
    assert not re.search(r"(?<!\$)\$\{", result.stdout)  # all interpolated
    # Only the proxy sees the Docker socket; only the workers reach the proxy.
    for name, service in services.items():
        sources = [v if isinstance(v, str) else v["source"] for v in service.get("volumes", [])]
        assert any("docker.sock" in s for s in sources) == (name == "docker-proxy"), name
        on_docker_api = "docker-api" in service.get("networks", {})
        assert on_docker_api == (name in {"docker-proxy", "airflow-worker"}), name
    for name in LONG_RUNNING:
        assert services[name]["restart"] == "always", name
        check = services[name]["healthcheck"]
        assert check["test"], name
        # A check that starts Airflow's or Celery's CLI costs seconds of CPU: rare.
        if re.search(r"\b(airflow|celery) ", " ".join(check["test"])):
            assert check["interval"] in ("5m", "5m0s", "300s"), (name, check["interval"])
        else:
            assert check["interval"] in ("10s", "15s", "30s"), (name, check["interval"])
    for name in ("model-server-churn", "model-server-diabetes"):
        server = services[name]
        assert server["read_only"] and server["cap_drop"] == ["ALL"], name
        assert server["user"] == "65534:65534"
        assert "no-new-privileges:true" in server["security_opt"]
        # It fetches each version from the registry (nothing stages files on its volume),
        # with the read-only user's file from its secrets folder.
        command = server["command"]
        assert command[command.index("--registry-url") + 1] == "http://mlflow:5000", name
        credentials = command[command.index("--registry-credentials-file") + 1]
        assert credentials == "/run/mlops-secrets/registry_credentials", name
        assert "/run/mlops-secrets" in mount_targets(server)
    # Published ports listen on loopback unless STACK_BIND says otherwise.
    published = [p for s in services.values() for p in s.get("ports", [])]
    assert len(published) == 6  # UI, Grafana, MLflow, two servers, Prometheus
    assert all(str(p).startswith("127.0.0.1:") for p in published), published


def test_every_image_is_overridable():
    images = re.findall(r"^\s+image: (.+)$", COMPOSE.read_text(), re.MULTILINE)
    assert len(images) >= 8
    for image in images:
        assert re.fullmatch(r"\$\{[A-Z_]+_IMAGE:-[^}]+\}", image), image


def test_compose_refuses_to_start_without_secrets(tmp_path):
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = compose_config(empty)
    assert result.returncode != 0
    assert "run mlops-pack stack init" in result.stderr


def test_shipped_dashboards_are_the_generated_ones():
    from mlops_pack.dashboards import dashboard_text
    from mlops_pack.stack_env import served_models

    folder = ROOT / "include" / "grafana" / "dashboards"
    assert tuple(served_models(ROOT / "include")) == SERVED
    assert sorted(p.stem for p in folder.glob("*.json")) == sorted(SERVED)
    for model in SERVED:
        assert (folder / f"{model}.json").read_text() == dashboard_text(model), (
            f"{model}.json is stale: run `mlops-pack stack dashboards`"
        )


def test_stack_init_refuses_a_served_model_named_like_a_stack_service(tmp_path, capsys):
    """A served model's keys and Prometheus's password each get a folder under
    .stack/secrets: a model named ``prometheus`` is refused, and nothing is written."""
    import shutil

    include = tmp_path / "include"
    shutil.copytree(ROOT / "include" / "expectations", include / "expectations")
    (include / "models").mkdir()
    raw = yaml.safe_load((ROOT / "include/models/churn.yaml").read_text())
    (include / "models" / "prometheus.yaml").write_text(
        yaml.safe_dump({**raw, "name": "prometheus"})
    )
    code, _ = run_cli("stack", "init", "--dir", tmp_path, "--include", include)
    assert code == 2
    assert "served model 'prometheus' has the name of a stack service" in capsys.readouterr().err
    assert not (tmp_path / ".env").exists() and not (tmp_path / ".stack" / "secrets").exists()


@pytest.mark.parametrize("name", [None, "staging"])
def test_the_workers_start_steps_on_the_steps_networks_whatever_their_names(stack_env, name):
    """The steps networks' names are the engine's, not the project's (the engine attaches
    the steps): the workers are told the names the networks get, the defaults or the
    ``STEPS_NETWORK`` and ``SERVER_STEPS_NETWORK`` a second stack on the same engine sets.
    The steps network holds MLflow and the lock's Postgres; the server steps' also the
    model servers. Neither holds Airflow's and MLflow's Postgres."""
    names = {"STEPS_NETWORK": f"{name}-steps", "SERVER_STEPS_NETWORK": f"{name}-server-steps"}
    result = compose_config(stack_env, **(names if name else {}))
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    steps, server_steps = config["networks"]["steps"], config["networks"]["server-steps"]
    assert steps["name"] == (f"{name}-steps" if name else "mlops-pack-steps")
    assert server_steps["name"] == (f"{name}-server-steps" if name else "mlops-pack-server-steps")
    assert steps["internal"] is True and server_steps["internal"] is True
    worker = config["services"]["airflow-worker"]["environment"]
    assert worker["MLOPS_PACK_STEP_NETWORK"] == steps["name"]
    assert worker["MLOPS_PACK_SERVER_STEP_NETWORK"] == server_steps["name"]
    services = config["services"]
    on = {network: sorted(s for s, v in services.items() if network in v.get("networks", {}))
          for network in ("steps", "server-steps")}  # fmt: skip
    assert on == {
        "steps": ["lock-db", "mlflow"],
        "server-steps": ["lock-db", "mlflow", "model-server-churn", "model-server-diabetes"],
    }, on


@pytest.mark.parametrize("port", [None, "15000"])
def test_mlflow_answers_clients_on_its_published_port_whatever_it_is(stack_env, port):
    """MLflow refuses a request whose Host header it does not list (its DNS-rebinding
    guard, 403): a client on the published port sends ``127.0.0.1:<MLFLOW_PORT>``, which
    must be listed for the default port and another one alike (the shipped-file test,
    on a free port, found it missing)."""
    result = compose_config(stack_env, **({"MLFLOW_PORT": port} if port else {}))
    assert result.returncode == 0, result.stderr
    mlflow = yaml.safe_load(result.stdout)["services"]["mlflow"]
    allowed = mlflow["environment"]["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    published = port or "5000"
    for host in (f"127.0.0.1:{published}", f"localhost:{published}", "mlflow:5000",
                 "127.0.0.1:5000"):  # fmt: skip
        assert host in allowed, (host, allowed)


def test_the_tls_override_puts_every_client_on_https_with_the_stack_s_ca(stack_env):
    """docker-compose.tls.yaml over the shipped file: MLflow and each model server get
    their own certificate and key (no other's) and check their own health over HTTPS;
    every service that talks to MLflow (the workers, and through them the steps; the
    api-server; the model servers) has its https URL and the CA mounted where
    MLFLOW_TRACKING_SERVER_CERT_PATH says; the workers reach the model servers by https
    Connections, verified with MLOPS_PACK_SERVER_CA; Prometheus scrapes the servers by
    the shipped HTTPS twin of its configuration, with the CA. No plain-HTTP address of
    MLflow or of a model server is left in the merged file."""
    refused = compose_config(stack_env, TLS_OVERRIDE)  # before stack tls: no folder yet
    assert refused.returncode != 0
    assert "run mlops-pack stack tls" in refused.stderr, refused.stderr
    code, _ = run_cli("stack", "tls", "--dir", stack_env.parent, "--include", ROOT / "include")
    assert code == 0
    result = compose_config(stack_env, TLS_OVERRIDE)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert set(services) == LONG_RUNNING | {"airflow-init"}
    assert "http://mlflow" not in result.stdout and "http://model-server" not in result.stdout
    tls_dir = stack_env.parent / ".stack" / "tls"
    ca_mount = f"{tls_dir}/ca.pem:/run/stack-tls/ca.pem:ro"
    mlflow = services["mlflow"]
    assert mlflow["environment"]["MLFLOW_TLS_CERT_FILE"] == "/run/stack-tls/mlflow.pem"
    assert mlflow["environment"]["MLFLOW_TLS_KEY_FILE"] == "/run/stack-tls/mlflow-key.pem"
    assert sorted(v for v in mlflow["volumes"] if str(tls_dir) in v) == sorted([
        ca_mount,
        f"{tls_dir}/mlflow.pem:/run/stack-tls/mlflow.pem:ro",
        f"{tls_dir}/mlflow-key.pem:/run/stack-tls/mlflow-key.pem:ro",
    ])  # fmt: skip
    assert "/mlartifacts" in mount_targets(mlflow)  # the main file's volume is kept
    assert "https://127.0.0.1:5000/health" in " ".join(mlflow["healthcheck"]["test"])

    def talks_to_mlflow(service: dict) -> bool:
        said = [*(service.get("environment") or {}).values(), *(service.get("command") or [])]
        return any("mlflow:5000" in str(v) for v in said)

    # The server's own allowed Host headers name it: not a client.
    clients = {name for name, svc in services.items() if name != "mlflow" and talks_to_mlflow(svc)}
    assert clients == {"airflow-apiserver", "airflow-worker", "model-server-churn",
                       "model-server-diabetes"}, clients  # fmt: skip
    for name in clients:
        service = services[name]
        env = service["environment"]
        assert env["MLFLOW_TRACKING_SERVER_CERT_PATH"] == "/run/stack-tls/ca.pem", name
        assert ca_mount in service["volumes"], name
        command = service.get("command") or []
        if "--registry-url" in command:
            assert command[command.index("--registry-url") + 1] == "https://mlflow:5000"
        else:
            assert env["MLFLOW_TRACKING_URI"] == "https://mlflow:5000", name
    for model, port in (("churn", 8181), ("diabetes", 8182)):
        server = services[f"model-server-{model}"]
        command = server["command"]
        assert command[command.index("--tls-cert-file") + 1] == "/run/stack-tls/server.pem"
        assert command[command.index("--tls-key-file") + 1] == "/run/stack-tls/server-key.pem"
        own = [v for v in server["volumes"] if str(tls_dir) in v and v != ca_mount]
        assert sorted(own) == sorted([
            f"{tls_dir}/model-server-{model}.pem:/run/stack-tls/server.pem:ro",
            f"{tls_dir}/model-server-{model}-key.pem:/run/stack-tls/server-key.pem:ro",
        ]), own  # fmt: skip
        assert f"https://127.0.0.1:{port}/version" in " ".join(server["healthcheck"]["test"])
        connection = json.loads(
            services["airflow-worker"]["environment"][
                f"AIRFLOW_CONN_MLOPS_PACK_SERVER_{model.upper()}"
            ]
        )
        assert (connection["schema"], connection["host"]) == ("https", f"model-server-{model}")
    worker_env = services["airflow-worker"]["environment"]
    assert worker_env["MLOPS_PACK_SERVER_CA"] == "/run/stack-tls/ca.pem"
    # Every server Connection is https (a plain one would send its token in the clear),
    # and the override's restated values are the main file's but for what it changes.
    plain = yaml.safe_load(compose_config(stack_env).stdout)["services"]
    connections = [k for k in worker_env if k.startswith("AIRFLOW_CONN_MLOPS_PACK_SERVER_")]
    assert len(connections) == len(SERVED), connections
    for name in connections:
        before = json.loads(plain["airflow-worker"]["environment"][name])
        assert json.loads(worker_env[name]) == {**before, "schema": "https"}, name
    for model in SERVED:
        service = f"model-server-{model}"
        before, after = plain[service]["command"], services[service]["command"]
        tls_args = after[after.index("--tls-cert-file") :]
        assert len(tls_args) == 4, after
        expected = [a.replace("http://mlflow", "https://mlflow") for a in before]
        assert after[: -len(tls_args)] == expected, service
    prometheus = services["prometheus"]
    assert "./include/prometheus/prometheus.yml" not in " ".join(prometheus["volumes"])
    assert any(v.endswith("include/prometheus/prometheus.tls.yml:/etc/prometheus/prometheus.yml:ro")
               for v in prometheus["volumes"]), prometheus["volumes"]  # fmt: skip
    assert f"{tls_dir}/ca.pem:/etc/prometheus/tls/ca.pem:ro" in prometheus["volumes"]
    # The main file's settings of those services are kept (merged, not replaced).
    worker = services["airflow-worker"]
    assert worker["environment"]["DOCKER_HOST"] == "tcp://docker-proxy:2375"
    assert "/opt/airflow/labels" in mount_targets(worker)
    assert services["airflow-apiserver"]["environment"]["MLFLOW_TRACKING_USERNAME"] == (
        "mlops-reader"
    )
    churn = services["model-server-churn"]
    assert churn["read_only"] is True and churn["cap_drop"] == ["ALL"]
    assert "/run/mlops-secrets" in mount_targets(churn)


def test_the_shipped_prometheus_tls_twin_is_the_generated_one(tmp_path):
    """prometheus.tls.yml is prometheus.yml with the model servers' jobs on https and
    the CA: nothing else differs, and `mlops-pack stack dashboards` writes it."""
    from mlops_pack.prometheus_tls import CA_IN_CONTAINER

    include = tmp_path / "include"
    shutil.copytree(ROOT / "include" / "models", include / "models")
    shutil.copytree(ROOT / "include" / "prometheus", include / "prometheus")
    (include / "prometheus" / "prometheus.tls.yml").unlink()
    code, _ = run_cli("stack", "dashboards", "--include", include)
    assert code == 0
    shipped = (ROOT / "include" / "prometheus" / "prometheus.tls.yml").read_text()
    assert shipped == (include / "prometheus" / "prometheus.tls.yml").read_text(), (
        "prometheus.tls.yml is stale: run `mlops-pack stack dashboards`"
    )
    plain = yaml.safe_load((ROOT / "include" / "prometheus" / "prometheus.yml").read_text())
    twin = yaml.safe_load(shipped)
    assert twin["global"] == plain["global"]
    for before, after in zip(plain["scrape_configs"], twin["scrape_configs"], strict=True):
        if before["job_name"].startswith("model-server-"):
            assert after == {**before, "scheme": "https",
                             "tls_config": {"ca_file": CA_IN_CONTAINER}}  # fmt: skip
        else:
            assert after == before


def test_stack_tls_writes_a_ca_and_a_certificate_for_the_server_s_names_once(stack_env, capsys):
    """``mlops-pack stack tls`` after ``stack init``: the CA bundle, and for MLflow and
    each served model's server a certificate (its names: the service name, this host,
    and what --name adds) and a key of its own, readable by the containers' users inside
    the stack's private folder, and the folder recorded in .env; run again, it refuses
    and changes nothing."""
    from cryptography import x509

    project = stack_env.parent
    include = ROOT / "include"
    code, _ = run_cli("stack", "tls", "--dir", project, "--include", include,
                      "--name", "mlflow.example.internal", "--name", "10.0.0.7",
                      "--name", "fd00::7",
                      "--server-name", "churn=serving.example.internal")  # fmt: skip
    assert code == 0
    assert "into .env's MLFLOW_ALLOWED_NAMES" in capsys.readouterr().out
    folder = project / ".stack" / "tls"
    servers = [f"model-server-{model}" for model in SERVED]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["ca.pem", "mlflow-key.pem", "mlflow.pem"]
        + [f"{stem}{end}" for stem in servers for end in (".pem", "-key.pem")]
    )
    assert (project / ".stack").stat().st_mode & 0o777 == 0o700
    assert folder.stat().st_mode & 0o777 == 0o755
    assert {p.stat().st_mode & 0o777 for p in folder.iterdir()} == {0o644}  # user 65534
    assert env_values(stack_env)["STACK_TLS_DIR"] == str(folder)
    assert stack_env.stat().st_mode & 0o777 == 0o600
    _assert_mlflow_answers_the_names(stack_env)
    ca = x509.load_pem_x509_certificate((folder / "ca.pem").read_bytes())
    cert = x509.load_pem_x509_certificate((folder / "mlflow.pem").read_bytes())
    assert cert.issuer == ca.subject
    ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes, _ecdsa(cert))
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(n.value) for n in names] == [
        "mlflow", "localhost", "127.0.0.1", "mlflow.example.internal", "10.0.0.7", "fd00::7"
    ]  # fmt: skip
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    # The CA's private key is not kept: nothing else can be signed with it.
    assert "PRIVATE KEY" not in (folder / "ca.pem").read_text()
    assert "PRIVATE KEY" in (folder / "mlflow-key.pem").read_text()
    # Each model server: signed by the same CA, for its service name and its own
    # --server-name values only (never MLflow's names: a stolen server key cannot pass
    # for MLflow), with its own key.
    keys = {(folder / "mlflow-key.pem").read_text()}
    own = {"model-server-churn": ["serving.example.internal"], "model-server-diabetes": []}
    for stem in servers:
        server = x509.load_pem_x509_certificate((folder / f"{stem}.pem").read_bytes())
        ca.public_key().verify(server.signature, server.tbs_certificate_bytes, _ecdsa(server))
        alt = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert [str(n.value) for n in alt] == [stem, "localhost", "127.0.0.1", *own[stem]]
        keys.add((folder / f"{stem}-key.pem").read_text())
    assert len(keys) == 1 + len(servers)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    env_before = stack_env.read_text()
    code, _ = run_cli("stack", "tls", "--dir", project, "--include", include)
    assert code != 0
    assert f"{folder} exists: stack tls never replaces" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert stack_env.read_text() == env_before
    other = project / "other"
    code, _ = run_cli("stack", "tls", "--dir", other)
    assert code != 0
    assert "Fix: run mlops-pack stack init first" in capsys.readouterr().err
    (other / ".env").parent.mkdir()
    (other / ".env").write_text("X=1\n")
    code, _ = run_cli("stack", "tls", "--dir", other, "--name", "mlflow.example.internal")
    assert code != 0  # no include folder: it would write no model server's certificate
    assert "Fix: give --include the include folder" in capsys.readouterr().err
    for bad in ("http://mlflow", "*", "a.example,b.example", "$HOME"):
        code, _ = run_cli("stack", "tls", "--dir", other, "--include", include, "--name", bad)
        assert code != 0
        assert f"--name {bad!r} is not a host name" in capsys.readouterr().err
    for bad in ("serving.example.internal", "nomodel=serving.example", "churn=*"):
        code, _ = run_cli("stack", "tls", "--dir", other, "--include", include,
                          "--server-name", bad)  # fmt: skip
        assert code != 0
        assert f"--server-name {bad!r}: give MODEL=NAME" in capsys.readouterr().err
    assert not (other / ".stack" / "tls").exists()
    assert (other / ".env").read_text() == "X=1\n"


def _assert_mlflow_answers_the_names(stack_env: Path) -> None:
    """The --name values reach MLflow's allowed Host headers in the merged file, with any
    port, as MLflow itself matches them (fnmatch; an IPv6 bracket escaped); other names
    stay refused."""
    from mlflow.server.security_utils import is_allowed_host_header

    result = compose_config(stack_env)
    assert result.returncode == 0, result.stderr
    mlflow = yaml.safe_load(result.stdout)["services"]["mlflow"]
    allowed = [h.strip() for h in mlflow["environment"]["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")]
    for host in ("mlflow.example.internal", "mlflow.example.internal:5000", "10.0.0.7:15000",
                 "[fd00::7]", "[fd00::7]:5000", "mlflow:5000", "127.0.0.1:5000"):  # fmt: skip
        assert is_allowed_host_header(allowed, host), (host, allowed)
    for host in ("evil.example:5000", "mlflow.example.internal.evil:5000", "[fd00::8]:5000"):
        assert not is_allowed_host_header(allowed, host), (host, allowed)
    # Without --name the main file adds nothing new.
    (stack_env.parent / "plain").mkdir()
    plain_env = stack_env.parent / "plain" / ".env"
    plain_env.write_text("\n".join(
        f"{k}={v}" for k, v in env_values(stack_env).items() if k != "MLFLOW_ALLOWED_NAMES"
    ) + "\n")  # fmt: skip
    result = compose_config(plain_env)
    assert result.returncode == 0, result.stderr
    plain = yaml.safe_load(result.stdout)["services"]["mlflow"]["environment"]
    assert not is_allowed_host_header(
        plain["MLFLOW_SERVER_ALLOWED_HOSTS"].split(","), "mlflow.example.internal:5000"
    )


def test_the_one_machine_file_takes_its_tls_override(stack_env, tmp_path):
    """docker-compose.local-tls.yaml over docker-compose.local.yaml (the files the
    Celery stack test runs) is accepted after stack tls and refused before; MLflow and
    the churn server get their own files, every MLflow client the https URL."""
    local = [ROOT / "docker-compose.local.yaml", ROOT / "docker-compose.local-tls.yaml"]
    files = [arg for path in local for arg in ("-f", str(path))]
    env = {**os.environ, "LOCAL_INCLUDE_DIR": str(tmp_path), "LOCAL_DATA_DIR": str(tmp_path),
           "LOCAL_LABELS_DIR": str(tmp_path), "LOCAL_DOCKER_GID": "0",
           "LOCAL_PROMETHEUS_CONFIG": str(tmp_path / "prometheus.yml")}  # fmt: skip

    def config() -> subprocess.CompletedProcess:
        return subprocess.run(
            [docker_compose(), "--env-file", str(stack_env), *files, "--profile", "airflow",
             "config"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
            check=False,
        )  # fmt: skip

    assert "run mlops-pack stack tls" in config().stderr
    code, _ = run_cli("stack", "tls", "--dir", stack_env.parent, "--include", ROOT / "include",
                      "--name", "mlflow.example.internal")  # fmt: skip
    assert code == 0
    result = config()
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert "http://127.0.0.1:25000" not in result.stdout
    for worker in ("airflow-worker-1", "airflow-worker-2", "airflow-apiserver"):
        assert services[worker]["environment"]["MLFLOW_TRACKING_URI"].startswith("https://")
    churn = services["model-server-churn"]
    assert any(v.endswith("model-server-churn-key.pem:/run/stack-tls/server-key.pem:ro")
               for v in churn["volumes"])  # fmt: skip
    assert not [v for v in services["mlflow"]["volumes"] if "model-server" in v]
    allowed = services["mlflow"]["environment"]["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert "mlflow.example.internal:*" in allowed, allowed


def test_stack_tls_keeps_the_names_the_env_lists_already(stack_env):
    """MLFLOW_ALLOWED_NAMES set by hand (a name of the site's own) survives stack tls,
    which adds its --name values beside it, once each."""
    with stack_env.open("a") as env:  # quoted, with export: as compose reads it too
        env.write('export MLFLOW_ALLOWED_NAMES="mlflow.corp,mlflow.corp:*"\n')
    code, _ = run_cli("stack", "tls", "--dir", stack_env.parent, "--include", ROOT / "include",
                      "--name", "mlflow.corp",
                      "--name", "mlflow.example.internal")  # fmt: skip
    assert code == 0
    lines = [line for line in stack_env.read_text().splitlines() if "MLFLOW_ALLOWED_NAMES" in line]
    assert lines == [
        "export MLFLOW_ALLOWED_NAMES="
        "mlflow.corp,mlflow.corp:*,mlflow.example.internal,mlflow.example.internal:*"
    ]
    # Compose reads it so: MLflow answers both names.
    result = compose_config(stack_env)
    assert result.returncode == 0, result.stderr
    allowed = yaml.safe_load(result.stdout)["services"]["mlflow"]["environment"][
        "MLFLOW_SERVER_ALLOWED_HOSTS"
    ].split(",")
    assert {"mlflow.corp:*", "mlflow.example.internal:*"} <= set(allowed), allowed


def _ecdsa(cert):
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.ECDSA(cert.signature_hash_algorithm)
