"""CA bundles that a worker hands to the processes it starts, for servers whose
certificates a private CA signed: the MLflow tracking server
(``MLFLOW_TRACKING_SERVER_CERT_PATH``, MLflow's own variable) and the model servers
(``MLOPS_PACK_SERVER_CA``).

The variable names a PEM file on the worker's host, which no step container, model
server or pod can read: they get a copy of its certificates (a CA is public) and the
variable names the copy. The file is read in the worker, so that a path that cannot be
used fails the task at once with the fix; in a container it would be a TLS error on the
first request, after the container started, retried.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from mlops_pack.errors import BadInputError

# The model servers' CA: what the pack's server client verifies an https server with
# (unset: the system's trust store), and the copy's name among a step's secrets.
SERVER_CA_VARIABLE = "MLOPS_PACK_SERVER_CA"
SERVER_CA_FILE = "server_ca.pem"
_PEM_CERTIFICATE = "-----BEGIN CERTIFICATE-----"
_PEM_BLOCK = re.compile(r"-----BEGIN CERTIFICATE-----\s.*?-----END CERTIFICATE-----", re.DOTALL)


def read_bundle(
    variable: str, server: str, rule: str, env: Mapping[str, str] | None = None
) -> str | None:
    """The certificates (PEM) of the bundle ``variable`` names in ``env`` (this
    process's environment by default); None when it is unset. ``server`` says in the
    message whose certificate the CA signed; ``rule`` is the error's rule."""
    named = ((os.environ if env is None else env).get(variable) or "").strip()
    if not named:
        return None
    facts = {"rule": rule, "file": named}
    try:
        # A DER file is binary: what is not text holds no PEM certificate either.
        text = Path(named).read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        raise BadInputError(
            f"{variable}={named}: cannot read it ({exc.strerror}). Fix: name the PEM file "
            f"of the CA that signed the certificate of {server}, readable by this process, "
            "or unset it when a public CA signed that certificate",
            facts,
        ) from exc
    # Only the certificates go on: a bundle that also holds a private key (a server's
    # combined PEM, named by mistake) must not carry it into containers and pod specs.
    certificates = _PEM_BLOCK.findall(text)
    if not certificates:
        raise BadInputError(
            f"{variable}={named}: holds no PEM certificate (no '{_PEM_CERTIFICATE}' "
            "line). Fix: name the CA's certificate in PEM form (openssl x509 -in ca.der "
            "-inform der -out ca.pem converts a DER file)",
            facts,
        )
    return "\n".join(certificates) + "\n"


def server_ca(env: Mapping[str, str] | None = None) -> str | None:
    """The model servers' CA certificates (``MLOPS_PACK_SERVER_CA``), or None."""
    return read_bundle(SERVER_CA_VARIABLE, "the model servers", "server_ca_bundle", env)
