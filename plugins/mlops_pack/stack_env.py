"""``mlops-pack stack init``: the secrets of the compose stack, generated once.

The shipped ``docker-compose.yaml`` has no default password: every secret comes from an
untracked ``.env`` next to it (mode 600) and, for the model servers, from files under
``.stack/secrets/<model>/`` (the server reads its keys from files so they never show in
``ps`` or ``docker inspect``). Writing refuses to replace either: the Postgres passwords
are set in the database volume on the first start and the Fernet key encrypts stored
connections, so a silently regenerated file would lock the stack out of its own data.
Nothing half-written becomes visible: both are written under temporary names and moved
into place, the ``.env`` last with a link that fails if the file appeared meanwhile.

Prometheus and the Pushgateway answer only with their passwords (basic authentication):
``.stack/secrets/<service>/`` holds each one's web configuration (the password's bcrypt
hash, the only form they accept) and the password itself, for the scrapes that
Prometheus makes of both (``password_file``); the workers (pushing) and Grafana (reading)
get theirs from the ``.env``.

The MLflow server answers only its users (MLflow's basic authentication; the MLflow
image's include/mlflow/serve.py makes them from the ``.env``): ``mlops-pack`` for the
workers and their step containers, ``mlops-reader`` for the api-server's Models page and
the model servers, whose secrets folders hold it as ``registry_credentials``.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import tempfile
from pathlib import Path

from mlops_pack import mlflow_credentials
from mlops_pack.errors import BadInputError
from mlops_pack.spec import load_spec

ENV_FILE = ".env"
SECRETS_DIR = Path(".stack") / "secrets"
SERVER_SECRETS = ("admin_token", "prediction_key")
# Generated secrets; every one is URL- and YAML-safe (they end up in DSNs and JSON).
PASSWORDS = (
    "POSTGRES_PASSWORD",
    "AIRFLOW_DB_PASSWORD",
    "MLFLOW_DB_PASSWORD",
    "LOCK_DB_PASSWORD",
    "REDIS_PASSWORD",
    "AIRFLOW_ADMIN_PASSWORD",
    "AIRFLOW_JWT_SECRET",
    "AIRFLOW_API_SECRET_KEY",
    "GRAFANA_ADMIN_PASSWORD",
    "PUSHGATEWAY_PASSWORD",
    "PROMETHEUS_PASSWORD",
    "MLFLOW_ADMIN_PASSWORD",
    "MLFLOW_PACK_PASSWORD",
    "MLFLOW_READER_PASSWORD",
    "MLFLOW_SECRET_KEY",
)
# The user of the services behind basic authentication (one each: the password is the
# secret), and where each one's password is in the .env.
WEB_USER = "mlops-pack"
WEB_SERVICES = {"pushgateway": "PUSHGATEWAY_PASSWORD", "prometheus": "PROMETHEUS_PASSWORD"}
# MLflow's read-only user (include/mlflow/serve.py creates it): the model servers fetch
# versions with it, from the file each one's secrets folder holds.
MLFLOW_READER = "mlops-reader"


def fernet_key() -> str:
    """A Fernet key: 32 random bytes, URL-safe base64 (what cryptography's generator does)."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode("ascii")


def served_models(include_dir: Path) -> list[str]:
    """Names of the specs under ``include_dir/models`` that have a ``serving`` section."""
    names = []
    for path in sorted((include_dir / "models").glob("*.yaml")):
        spec = load_spec(path)
        if spec.serving is not None:
            names.append(spec.name)
    return names


def token() -> str:
    """A URL-safe random secret that does not start with '-': command lines receive some
    of them (`airflow users create --password ...` in the official image's entrypoint),
    where a leading dash reads as an option and the admin user is silently not created."""
    while True:
        drawn = secrets.token_urlsafe(32)
        if not drawn.startswith("-"):
            return drawn


def web_config(password: str) -> str:
    """A Prometheus-family ``--web.config.file``: basic authentication on every path."""
    import bcrypt

    # bcrypt's lowest work factor: the gateway checks the hash on every request (each
    # Prometheus scrape), 0.25 CPU-seconds at the default of 12, and the password is 32
    # random bytes that no number of guesses reaches, so a slow hash would buy nothing.
    salt = bcrypt.gensalt(rounds=4)
    hashed = bcrypt.hashpw(password.encode("utf-8"), salt).decode("ascii")
    return (
        "# Written by `mlops-pack stack init`: the service answers only this user.\n"
        f"basic_auth_users:\n  {WEB_USER}: '{hashed}'\n"
    )


def stack_values(models: list[str]) -> dict[str, str]:
    values = {"AIRFLOW_ADMIN_USER": "admin", "AIRFLOW_FERNET_KEY": fernet_key()}
    values.update({name: token() for name in PASSWORDS})
    for model in models:
        for secret in SERVER_SECRETS:
            values[f"{model.upper()}_{secret.upper()}"] = token()
    return values


def init_stack(project_dir: Path, include_dir: Path | None = None) -> dict[str, object]:
    """Write ``.env`` and the model servers' secret files; refuse to replace either."""
    project_dir = project_dir.resolve()
    env_path = project_dir / ENV_FILE
    secrets_dir = project_dir / SECRETS_DIR
    for existing in (env_path, secrets_dir):
        if existing.exists():
            raise BadInputError(
                f"{existing} exists: stack init never replaces the stack's secrets (the "
                "database volumes and stored connections depend on them). Keep it, or "
                "remove it together with the stack's volumes (docker-compose down -v) "
                "and run stack init again",
                {"rule": "stack_secrets_exist", "file": str(existing)},
            )
    models = served_models(include_dir or project_dir / "include")
    clash = sorted(set(models) & set(WEB_SERVICES))
    if clash:  # each model's keys and each service's password have a folder of that name
        raise BadInputError(
            f"served model {clash[0]!r} has the name of a stack service whose secrets "
            f"folder is .stack/secrets/{clash[0]}. Fix: rename the model in its spec",
            {"rule": "stack_model_name", "model": clash[0]},
        )
    values = stack_values(models)
    _write_server_secrets(secrets_dir, models, values)
    try:
        _write_env(env_path, values)
    except FileExistsError:  # another init won the race: keep its files, not a mix
        shutil.rmtree(secrets_dir, ignore_errors=True)
        raise BadInputError(
            f"{env_path} appeared while stack init ran; nothing was changed",
            {"rule": "stack_secrets_exist", "file": str(env_path)},
        ) from None
    return {"env_file": str(env_path), "secrets_dir": str(secrets_dir), "models": models}


def _write_server_secrets(secrets_dir: Path, models: list[str], values: dict[str, str]) -> None:
    stack_dir = secrets_dir.parent
    stack_dir.mkdir(mode=0o700, exist_ok=True)
    stack_dir.chmod(0o700)  # the only guard: the files below are readable by any uid
    staging = Path(tempfile.mkdtemp(prefix=".secrets-", dir=stack_dir))
    try:
        for model in models:
            folder = staging / model
            folder.mkdir()
            # Bind-mounted into containers whose users differ from the host's (the
            # server runs as 65534, Prometheus as nobody): readable inside, while the
            # 0700 folder above keeps other host users out.
            folder.chmod(0o755)
            for secret in SERVER_SECRETS:
                path = folder / secret
                path.write_text(values[f"{model.upper()}_{secret.upper()}"], encoding="utf-8")
                path.chmod(0o644)
            path = folder / mlflow_credentials.CREDENTIALS_FILE
            reader = {
                "MLFLOW_TRACKING_USERNAME": MLFLOW_READER,
                "MLFLOW_TRACKING_PASSWORD": values["MLFLOW_READER_PASSWORD"],
            }
            path.write_text(mlflow_credentials.render(reader) or "", encoding="utf-8")
            path.chmod(0o644)
        for service, key in WEB_SERVICES.items():
            folder = staging / service
            folder.mkdir()
            folder.chmod(0o755)
            (folder / "web.yml").write_text(web_config(values[key]), encoding="utf-8")
            (folder / "password").write_text(values[key], encoding="utf-8")
            for path in folder.iterdir():
                path.chmod(0o644)  # Prometheus and the Pushgateway run as nobody
        staging.chmod(0o755)
        staging.rename(secrets_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _write_env(env_path: Path, values: dict[str, str]) -> None:
    lines = [
        "# The compose stack's secrets, written by `mlops-pack stack init`. Keep private;",
        "# never commit. The Postgres passwords are fixed in the database volume at its",
        "# first start: changing them here later needs the same change in Postgres.",
        *(f"{key}={value}" for key, value in values.items()),
    ]
    fd, tmp = tempfile.mkstemp(prefix=".env-", dir=env_path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write("\n".join(lines) + "\n")
        os.link(tmp, env_path)  # fails if the file appeared meanwhile: never replaced
    finally:
        os.unlink(tmp)
