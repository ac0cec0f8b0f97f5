"""Start and stop a model's server container, and hand Airflow its Connection.

One container per served model, from the task image, with the step containers'
hardening (non-root, read-only root filesystem, no capabilities, no-new-privileges,
pids, memory and CPU limits). It uses the host network because it must be reachable and
the engine may have no bridge network; it binds to 127.0.0.1 only. It sees the include
dir and its staged models read-only, writes only its state and prediction logs, and
reads its two secrets from a read-only mount. With a remote registry (an MLflow tracking
server, ``MLFLOW_TRACKING_URI=http...``) the server fetches versions itself by registry
URI into its own folder, and nothing is staged (``registry_url``; its credentials, if
the tracking server needs them, from ``registry_credentials`` in the secrets folder).

Several stacks (checkouts, ``make demo`` next to ``make up``) may share one Docker
engine: each server container carries its stack's id, derived from the store
(``MLOPS_PACK_HOME``), in its name and labels, and a stack removes only containers
labelled with its own id.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from mlops_pack.airflow.container import (
    LABEL,
    STACK_LABEL,
    ContainerLimits,
    ContainerSpec,
    container_user,
    create,
    hand_over,
    owner_of,
    stack_id,
)
from mlops_pack.airflow.container import remove_quietly as _remove
from mlops_pack.errors import ServiceUnavailableError
from mlops_pack.mlflow_credentials import CA_FILE, CA_VARIABLE, CREDENTIALS_FILE, ca_bundle
from mlops_pack.server_client import ServerClient

log = logging.getLogger(__name__)
SECRET_FILES = ("admin_token", "prediction_key")
REGISTRY_CREDENTIALS = CREDENTIALS_FILE  # optional, written by the operator
# A server answers requests: it keeps Docker's default CPU weight, where steps yield.
SERVER_LIMITS = ContainerLimits(memory="1g", cpus=1.0, pids=128, tmpfs_size="64m", cpu_shares=1024)


def container_name(model: str, port: int, stack: str) -> str:
    return f"mlops-server-{model}-{port}-{stack}"


def remove_owned(client, name: str, stack: str) -> bool:
    """Remove container ``name`` only if ``stack`` owns it; True if it was removed or absent."""
    owner = owner_of(client, name)
    if owner is None:
        return True
    if owner != stack:
        log.warning("container %s belongs to stack %r, not %r: left alone", name, owner, stack)
        return False
    _remove(client, name, log)
    return True


@dataclass(frozen=True)
class ServedModel:
    model: str
    port: int
    container: str
    secrets_dir: Path
    stack: str = ""  # the owning stack's id (containers only)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def secret(self, name: str) -> str:
        return (self.secrets_dir / name).read_text(encoding="utf-8").strip()

    def connection_env(self) -> dict[str, str]:
        """``AIRFLOW_CONN_...`` for the deploy, promote and rollback tasks."""
        conn = {
            "conn_type": "http",
            "host": "127.0.0.1",
            "port": self.port,
            "password": self.secret("admin_token"),
            "extra": {"prediction_api_key": self.secret("prediction_key")},
        }
        return {f"AIRFLOW_CONN_MLOPS_PACK_SERVER_{self.model.upper()}": json.dumps(conn)}


def ensure_secrets(secrets_dir: Path, uid: int, gid: int) -> None:
    """Generate the admin token and the prediction key once; mode 600, owned by the server."""
    secrets_dir.mkdir(parents=True, exist_ok=True)
    for name in SECRET_FILES:
        path = secrets_dir / name
        if not path.exists():
            path.write_text(secrets.token_urlsafe(32), encoding="utf-8")
        hand_over(path, uid, gid, 0o600)
    if (secrets_dir / REGISTRY_CREDENTIALS).exists():
        hand_over(secrets_dir / REGISTRY_CREDENTIALS, uid, gid, 0o600)
    hand_over(secrets_dir, uid, gid, 0o700)


def _registry_ca(
    registry_url: str | None, secrets_dir: Path, seen_as: str, uid: int, gid: int
) -> dict[str, str]:
    """The server's environment for checking an https registry's certificate against
    the worker's CA bundle (``MLFLOW_TRACKING_SERVER_CERT_PATH``): a copy among its
    secrets (after ``ensure_secrets``), since the container sees no file of the
    worker's. Empty without one."""
    copy = secrets_dir / CA_FILE
    bundle = ca_bundle() if registry_url else None
    if bundle is None:  # a copy from an earlier start would mislead whoever looks
        copy.unlink(missing_ok=True)
        return {}
    copy.write_text(bundle, encoding="utf-8")
    hand_over(copy, uid, gid, 0o600)
    return {CA_VARIABLE: f"{seen_as}/{CA_FILE}"}


def _serving_port(include_dir: Path, model: str, port: int | None) -> int:
    """``port``, else the spec's ``serving.port``; a spec without ``serving`` is refused."""
    from mlops_pack.spec import load_spec

    spec = load_spec(include_dir / "models" / f"{model}.yaml")
    if spec.serving is None:
        raise ValueError(f"model {model}: the spec has no 'serving' section")
    return port or spec.serving.port


def _serving_dir(home: Path, model: str, uid: int, gid: int) -> Path:
    """``<home>/serving/<model>/{models,state,predictions}``, traversable, owned by the server."""
    base = home / "serving" / model
    for folder in (home / "serving", base, base / "models", base / "state", base / "predictions"):
        folder.mkdir(parents=True, exist_ok=True)
        hand_over(folder, uid, gid, 0o755)
    return base


def _server_args(
    spec: str, base: str, secrets_dir: str, port: int, registry: list[str] = ()
) -> list[str]:
    """The server's command line; the paths as the server process sees them."""
    return [
        "--spec", spec,
        "--models-dir", f"{base}/models",
        "--state-dir", f"{base}/state",
        "--log-dir", f"{base}/predictions",
        "--admin-token-file", f"{secrets_dir}/admin_token",
        "--prediction-key-file", f"{secrets_dir}/prediction_key",
        "--port", str(port),
        *registry,
    ]  # fmt: skip


def _registry_args(registry_url: str | None, secrets_dir: Path, seen_as: str) -> list[str]:
    """Fetch from the registry (and with which credentials file), or nothing: staged."""
    if not registry_url:
        return []
    if "@" in registry_url.split("/")[2]:
        raise ValueError(
            "the registry URL carries credentials, which a command line would show: put "
            f"them in {secrets_dir / REGISTRY_CREDENTIALS} (MLFLOW_TRACKING_USERNAME=..., "
            "MLFLOW_TRACKING_PASSWORD=...) and give the URL without them"
        )
    args = ["--registry-url", registry_url]
    if (secrets_dir / REGISTRY_CREDENTIALS).exists():
        args += ["--registry-credentials-file", f"{seen_as}/{REGISTRY_CREDENTIALS}"]
    return args


def start_server(
    client,
    *,
    model: str,
    include_dir: Path,
    home: Path,
    image: str,
    secrets_dir: Path,
    port: int | None = None,
    ready_timeout: float = 90.0,
    registry_url: str | None = None,
) -> ServedModel:
    """(Re)start ``model``'s server and wait until it answers; returns how to reach it.

    ``registry_url``: the server fetches versions from that MLflow tracking server
    itself; its models folder is then its own (writable), and nothing is staged."""
    from docker.types import Mount

    port = _serving_port(include_dir, model, port)
    uid, gid = container_user(home)
    base = _serving_dir(home, model, uid, gid)
    ensure_secrets(secrets_dir, uid, gid)
    trust = _registry_ca(registry_url, secrets_dir, "/run/mlops-secrets", uid, gid)
    stack = stack_id(home)
    served = ServedModel(model, port, container_name(model, port, stack), secrets_dir, stack)
    if not remove_owned(client, served.container, stack):
        raise RuntimeError(
            f"container {served.container} exists but is not this stack's "
            f"({STACK_LABEL}={owner_of(client, served.container)!r}, this stack {stack!r}); "
            "it was left running: remove it yourself if it is stale"
        )
    container_spec = ContainerSpec(
        image=image,
        # Inside the container: the mounts below.
        command=_server_args(
            f"/opt/include/models/{model}.yaml",
            "/srv",
            "/run/mlops-secrets",
            port,
            _registry_args(registry_url, secrets_dir, "/run/mlops-secrets"),
        ),
        name=served.container,
        user=f"{uid}:{gid}",
        mounts=[
            Mount("/opt/include", str(include_dir), type="bind", read_only=True),
            # Staged by the deploy (read-only), or the server's own fetch cache.
            Mount("/srv/models", str(base / "models"), type="bind", read_only=not registry_url),
            Mount("/srv/state", str(base / "state"), type="bind", read_only=False),
            Mount("/srv/predictions", str(base / "predictions"), type="bind", read_only=False),
            Mount("/run/mlops-secrets", str(secrets_dir), type="bind", read_only=True),
        ],
        # MLOPS_PACK_IMAGE: thread pools sized to one CPU.
        environment={"MLOPS_PACK_IMAGE": image, **trust},
        network_mode="host",
        limits=SERVER_LIMITS,
        entrypoint=["python", "-m", "mlops_pack.serving"],
        labels={
            LABEL: "server",
            "io.mlops-pack.server": model,
            STACK_LABEL: stack,
            "io.mlops-pack.home": str(Path(home).resolve()),
        },
    )
    container_id = create(client, container_spec, log)
    client.start(container_id)
    try:
        ServerClient(served.url, served.secret("prediction_key")).wait_ready(ready_timeout)
    except ServiceUnavailableError:
        logs = client.logs(container_id, tail=40).decode("utf-8", "replace")
        _remove(client, container_id, log)
        raise RuntimeError(f"model server {served.container} did not start:\n{logs}") from None
    return served


def stop_server(client, served: ServedModel) -> None:
    remove_owned(client, served.container, served.stack)


def start_server_process(
    *,
    model: str,
    include_dir: Path,
    home: Path,
    secrets_dir: Path,
    log_file: Path,
    port: int | None = None,
    ready_timeout: float = 90.0,
    registry_url: str | None = None,
) -> tuple[ServedModel, int]:
    """Without a Docker engine: the same server as a local process; returns it and its pid."""
    import subprocess
    import sys

    port = _serving_port(include_dir, model, port)
    base = _serving_dir(home, model, os.getuid(), os.getgid())
    ensure_secrets(secrets_dir, os.getuid(), os.getgid())
    served = ServedModel(model, port, f"pid-{model}-{port}", secrets_dir)
    with log_file.open("ab") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlops_pack.serving",
                *_server_args(
                    str(include_dir / "models" / f"{model}.yaml"),
                    str(base),
                    str(secrets_dir),
                    port,
                    _registry_args(registry_url, secrets_dir, str(secrets_dir)),
                ),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        ServerClient(served.url, served.secret("prediction_key")).wait_ready(ready_timeout)
    except ServiceUnavailableError:
        process.kill()
        raise RuntimeError(f"model server for {model} did not start; see {log_file}") from None
    return served, process.pid


def serve_champion(served: ServedModel) -> str | None:
    """Load the registry's current champion into a freshly started server, if there is one."""
    from mlops_pack.registry import CHAMPION, Registry
    from mlops_pack.steps.served import ServedSwitch

    registry = Registry()
    champion = registry.alias(served.model, CHAMPION)
    if champion is None:
        return None
    admin = ServerClient(served.url, served.secret("admin_token"))
    ServedSwitch(admin, registry, served.model).serve(champion)
    return champion.version


def launch(
    model: str,
    *,
    runner: str,
    include_dir: Path,
    home: Path,
    secrets_dir: Path,
    log_file: Path,
    image: str | None = None,
    port: int | None = None,
) -> tuple[ServedModel, dict[str, object]]:
    """A container with the docker runner, else a local process; returns a handle for ``stop``.

    With a remote registry (an MLflow tracking server) the server fetches versions itself.
    """
    from mlops_pack.settings import Settings

    settings = Settings.from_env()
    registry_url = settings.tracking_uri if settings.remote_tracking else None
    if runner == "docker":
        client = _client()
        served = start_server(
            client,
            model=model,
            include_dir=include_dir,
            home=home,
            image=image or "",
            secrets_dir=secrets_dir,
            port=port,
            registry_url=registry_url,
        )
        return served, {"container": served.container, "stack": served.stack}
    served, pid = start_server_process(
        model=model,
        include_dir=include_dir,
        home=home,
        secrets_dir=secrets_dir,
        log_file=log_file,
        port=port,
        registry_url=registry_url,
    )
    return served, {"pid": pid}


def stop(handle: dict[str, object]) -> None:
    """Stop what ``launch`` started: remove the container, or end the process group."""
    import signal

    if "container" in handle:
        remove_owned(_client(), str(handle["container"]), str(handle.get("stack", "")))
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(int(handle["pid"]), signal.SIGTERM)


def _client():
    import docker

    return docker.APIClient(base_url=os.environ.get("DOCKER_HOST", "unix://var/run/docker.sock"))
