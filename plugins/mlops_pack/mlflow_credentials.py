"""Credentials for an MLflow tracking server that asks for them, handed over as a file.

MLflow's client reads ``MLFLOW_TRACKING_USERNAME`` and ``MLFLOW_TRACKING_PASSWORD`` (or
``MLFLOW_TRACKING_TOKEN``) from its process's environment. A container's environment is
shown by ``docker inspect``, so a step container or a model server gets them as a file
(``KEY=value`` per line, mounted read-only among its secrets) and puts them into its own
environment when it starts. The file may hold nothing else: it must not be a way to set
other variables (``LD_PRELOAD``) in the process that reads it.

A tracking server behind TLS with a certificate of a private CA is trusted through
MLflow's own ``MLFLOW_TRACKING_SERVER_CERT_PATH`` (a PEM bundle). The worker's process
reads the path; a step container or a model server gets a copy of the bundle next to
its credentials (the path names a file of the worker's host), and the variable names the
copy.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from mlops_pack.ca_bundles import read_bundle
from mlops_pack.errors import BadInputError

CREDENTIAL_KEYS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
# The file's name among a step's or a model server's secrets, and the variable naming it.
CREDENTIALS_FILE = "registry_credentials"
FILE_VARIABLE = "MLOPS_PACK_MLFLOW_CREDENTIALS_FILE"
# MLflow's variable for the CA bundle its client verifies the server with, and the
# bundle's name where a step or a model server gets its copy.
CA_VARIABLE = "MLFLOW_TRACKING_SERVER_CERT_PATH"
CA_FILE = "registry_ca.pem"


def read(path: Path) -> dict[str, str]:
    """The credentials in ``path``; any line that is not one of them is refused."""
    found = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or key.strip() not in CREDENTIAL_KEYS:
            raise BadInputError(
                f"{path}:{number}: expected KEY=value with KEY one of {list(CREDENTIAL_KEYS)}",
                {"rule": "mlflow_credentials", "file": str(path)},
            )
        found[key.strip()] = value.strip()
    return found


def render(env: Mapping[str, str]) -> str | None:
    """The file's text for the credentials set in ``env``, or None when there are none."""
    lines = [f"{key}={env[key]}" for key in CREDENTIAL_KEYS if env.get(key)]
    return "\n".join(lines) + "\n" if lines else None


def load(path: Path, named_by: str) -> None:
    """Put the credentials in ``path`` into this process's environment, where MLflow's
    client looks; ``named_by`` (the option or variable that named the file) is in the
    message when it cannot be read."""
    try:
        os.environ.update(read(Path(path)))
    except OSError as exc:
        raise BadInputError(
            f"{named_by}={path}: cannot read it ({exc.strerror}). Fix: name a readable "
            "file of MLFLOW_TRACKING_USERNAME=... and MLFLOW_TRACKING_PASSWORD=... lines, "
            "or unset it",
            {"rule": "mlflow_credentials", "file": str(path)},
        ) from exc


def load_named_file(env: Mapping[str, str] | None = None) -> None:
    """``load`` the file ``MLOPS_PACK_MLFLOW_CREDENTIALS_FILE`` names; nothing when unset."""
    named = (os.environ if env is None else env).get(FILE_VARIABLE)
    if named:
        load(Path(named), FILE_VARIABLE)


def ca_bundle(env: Mapping[str, str] | None = None) -> str | None:
    """The certificates of the CA bundle ``MLFLOW_TRACKING_SERVER_CERT_PATH`` names (PEM),
    to hand to a container; None when it is unset (``ca_bundles.read_bundle``)."""
    return read_bundle(CA_VARIABLE, "the MLflow server", "mlflow_ca_bundle", env)
