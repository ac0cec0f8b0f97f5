"""Real services for the cross-host tests: a throwaway PostgreSQL cluster and an MLflow
tracking server, each in a temp dir on a free port, stopped by PID afterwards."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from support import ROOT, free_port, open_dir


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if found is None:
        raise RuntimeError(
            f"PostgreSQL's {name} is not installed: apt-get install postgresql "
            "(.ci/run installs it in CI)"
        )
    return found


def _as_owner(argv: list[str], owner: str | None) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as ``owner`` then."""
    return ["runuser", "-u", owner, "--", *argv] if owner else argv


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """A PostgreSQL cluster in a fresh temp dir, listening on 127.0.0.1; yields a DSN.

    The dir is outside pytest's (which is private to root): under root the cluster runs
    as ``postgres`` (or nobody), which must reach it.
    """
    owner = None
    if os.geteuid() == 0:
        owner = "postgres" if _has_user("postgres") else "nobody"
    root = open_dir("mlops-pack-pg-")
    data = root / "pgdata"
    if owner:
        entry = pwd.getpwnam(owner)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    port = free_port()
    subprocess.run(
        _as_owner([_pg_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"], owner),
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    ctl = _pg_bin("pg_ctl")
    subprocess.run(
        _as_owner(
            [ctl, "-D", str(data), "-o", options, "-l", str(root / "pg.log"), "-w", "start"],
            owner,
        ),
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_owner([ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], owner),
            check=False,
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _serve_script():
    """include/mlflow/serve.py, the MLflow image's start script, as a module: the stack's
    MLflow users are defined there, once (the image has no pack to import them from)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "mlflow_serve", ROOT / "include" / "mlflow" / "serve.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def mlflow_signin(user: str, passwords: dict[str, str]) -> dict[str, str]:
    """The client variables that sign in as one of the stack's MLflow users (``mlops-pack``
    or ``mlops-reader``), with its password from ``passwords`` (``mlflow_passwords()`` or
    the stack's ``.env``)."""
    return {
        "MLFLOW_TRACKING_USERNAME": user,
        "MLFLOW_TRACKING_PASSWORD": passwords[_serve_script().USERS[user]],
    }


def mlflow_passwords() -> dict[str, str]:
    """Fresh passwords for an MLflow server behind basic authentication (see below)."""
    import secrets

    return {
        name: secrets.token_urlsafe(24)
        for name in (
            "MLFLOW_AUTH_ADMIN_PASSWORD",
            "MLFLOW_PACK_PASSWORD",
            "MLFLOW_READER_PASSWORD",
            "MLFLOW_FLASK_SERVER_SECRET_KEY",
        )
    }


def tls_files(root: Path):
    """A CA of the site's own and a server certificate it signed (for 127.0.0.1 and
    localhost among others), as ``mlops-pack stack tls`` writes them."""
    from mlops_pack.stack_tls import write_tls

    return write_tls(root)


@contextlib.contextmanager
def mlflow_server(root: Path, passwords: dict[str, str] | None = None, tls=None) -> Iterator[str]:
    """``mlflow server`` with a SQLite backend and a proxied artifact store (clients need
    only its URL); yields the tracking URI.

    ``passwords`` (``mlflow_passwords()``): the server starts as the compose stack's does, through
    the MLflow image's start script (include/mlflow/serve.py), behind basic authentication.
    ``tls`` (``tls_files()``, with ``passwords``): it serves HTTPS only, through the same
    script's TLS variables; the URI is then ``https://127.0.0.1:<port>``.
    """
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = (root / "mlflow-server.log").open("wb")
    backend = f"sqlite:///{root / 'mlflow.db'}"
    args = [
        "--serve-artifacts",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    if passwords:
        command = [sys.executable, str(ROOT / "include" / "mlflow" / "serve.py"), *args]
        env.update(passwords, MLFLOW_BACKEND_STORE_URI=backend)
        if tls:
            env.update(MLFLOW_TLS_CERT_FILE=str(tls.cert), MLFLOW_TLS_KEY_FILE=str(tls.key))
    else:
        assert tls is None, "tls goes through include/mlflow/serve.py: give passwords too"
        command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend, *args]
    proc = subprocess.Popen(
        command,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=root,
        env=env,
        start_new_session=True,  # its workers share its process group, stopped together
    )
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    trust = ssl.create_default_context(cafile=str(tls.ca)) if tls else None
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2, context=trust) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"mlflow server did not start: {(root / 'mlflow-server.log').read_text()}"
                )
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
