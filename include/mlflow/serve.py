"""Start the MLflow tracking server of the compose stack behind MLflow's basic authentication.

The MLflow image runs this instead of ``mlflow server``. It
1. writes the auth app's configuration into a private file on the container's tmpfs: its
   users live in the tracking backend's database (``MLFLOW_BACKEND_STORE_URI``), in
   tables of their own (MLflow versions them apart from the tracking tables), so the
   stack needs no second database; every signed-in user may read everything
   (``default_permission = READ``), and what a user creates (an experiment, a registered
   model) is that user's to change;
2. makes the stack's two users exist with the passwords of the environment (a password
   changed in ``.env`` takes effect at the next start):
   ``mlops-pack`` (``MLFLOW_PACK_PASSWORD``): Airflow's workers and api-server, and the
   step containers; it creates the experiments, runs, registered models and versions,
   and so may move their aliases. ``mlops-reader`` (``MLFLOW_READER_PASSWORD``): the
   model servers, which only download versions. MLflow's own admin
   (``MLFLOW_AUTH_ADMIN_PASSWORD``, created by MLflow at its first start) is for people
   managing users; nothing of the pack signs in with it;
3. becomes ``mlflow server --app-name basic-auth`` with the arguments it was given;
   with ``MLFLOW_TLS_CERT_FILE`` and ``MLFLOW_TLS_KEY_FILE`` (PEM files) it serves HTTPS
   only, so that the users' passwords do not cross a network between hosts in the clear
   (clients trust a private CA through ``MLFLOW_TRACKING_SERVER_CERT_PATH``,
   docs/production.md).

Verifying a password costs MLflow a scrypt hash (0.8 CPU-seconds measured on a 2-core
host, bench/bench_mlflow_auth.py), on every request unless the result is cached: a
retrain makes about a hundred requests, so successful checks are cached for
``MLFLOW_AUTH_CACHE_SECONDS`` (300 by default; 0 turns it off).
Users and passwords are only changed here, at start, so the cache never outlives one.
"""

from __future__ import annotations

import os
import shlex
import sys
import tempfile

USERS = {"mlops-pack": "MLFLOW_PACK_PASSWORD", "mlops-reader": "MLFLOW_READER_PASSWORD"}
# The auth app's forms are signed with MLFLOW_FLASK_SERVER_SECRET_KEY: one key for every
# worker process, or a form served by one fails its check on another.
REQUIRED = (
    "MLFLOW_BACKEND_STORE_URI",
    "MLFLOW_AUTH_ADMIN_PASSWORD",
    "MLFLOW_FLASK_SERVER_SECRET_KEY",
    *USERS.values(),
)


def auth_config(database_uri: str, cache_seconds: int) -> str:
    # configparser treats "%" as interpolation: a percent-encoded password must be doubled.
    escaped = database_uri.replace("%", "%%")
    return (
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = {escaped}\n"
        "admin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        f"auth_cache_ttl_seconds = {cache_seconds}\n"
    )


TLS = ("MLFLOW_TLS_CERT_FILE", "MLFLOW_TLS_KEY_FILE")


def tls_arguments(argv: list[str]) -> list[str]:
    """``--uvicorn-opts`` that make the server answer HTTPS only, when both TLS variables
    name readable files; nothing when neither is set."""
    given = {name: os.environ.get(name, "").strip() for name in TLS}
    if not any(given.values()):
        return []
    if not all(given.values()):
        sys.exit(
            f"mlflow: {' and '.join(TLS)} go together (the certificate chain and its private "
            f"key, PEM); only {' '.join(n for n in TLS if given[n])} is set. Fix: set both, "
            "or neither for plain HTTP"
        )
    # MLflow takes --uvicorn-opts from the command line or MLFLOW_UVICORN_OPTS, and the
    # command line wins: options given either way would be dropped without a word.
    if any(a == "--uvicorn-opts" or a.startswith("--uvicorn-opts=") for a in argv) or (
        os.environ.get("MLFLOW_UVICORN_OPTS")
    ):
        sys.exit(
            f"mlflow: {TLS[0]} is set and uvicorn's options are given too (--uvicorn-opts "
            "or MLFLOW_UVICORN_OPTS); this script writes that option for TLS. Fix: drop "
            "them"
        )
    for name, path in given.items():
        if not os.path.isfile(path) or not os.access(path, os.R_OK):
            sys.exit(
                f"mlflow: {name}={path} is not a readable file. Fix: run `mlops-pack stack "
                "tls` (or put your own PEM files there) and mount them readable by the "
                "server's user"
            )
    cert, key = given[TLS[0]], given[TLS[1]]
    # MLflow splits the option's value with shlex: quoted, a path may hold spaces.
    return ["--uvicorn-opts", shlex.join(["--ssl-certfile", cert, "--ssl-keyfile", key])]


def ensure_users(database_uri: str) -> None:
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore()
    store.init_db(database_uri)  # creates or migrates the auth tables
    for user, variable in USERS.items():
        password = os.environ[variable]
        if store.has_user(user, use_primary=True):
            store.update_user(user, password=password)
        else:
            store.create_user(user, password)


def main(argv: list[str]) -> None:
    missing = [name for name in REQUIRED if not os.environ.get(name)]
    if missing:
        sys.exit(
            f"mlflow: {', '.join(missing)} not set. Fix: run `mlops-pack stack init` (it "
            "writes them into .env) and start the stack with that .env"
        )
    tls = tls_arguments(argv)
    database_uri = os.environ["MLFLOW_BACKEND_STORE_URI"]
    cache = int(os.environ.get("MLFLOW_AUTH_CACHE_SECONDS", "300"))
    fd, path = tempfile.mkstemp(prefix="mlflow-auth-", suffix=".ini")
    with os.fdopen(fd, "w", encoding="utf-8") as out:  # mode 600: it holds the DB password
        out.write(auth_config(database_uri, cache))
    os.environ["MLFLOW_AUTH_CONFIG_PATH"] = path
    ensure_users(database_uri)
    # The users' passwords are in the database now; the server process needs none of them.
    for variable in USERS.values():
        del os.environ[variable]
    server = [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth", *argv, *tls]
    os.execv(sys.executable, server)  # noqa: S606 - fixed argv, no shell: becomes the server


if __name__ == "__main__":
    main(sys.argv[1:])
