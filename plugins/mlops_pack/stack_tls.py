"""``mlops-pack stack tls``: a private CA and the certificates of the MLflow server and
of the model servers, for ``docker-compose.tls.yaml`` (HTTPS when the stack spans hosts).

The users' passwords travel with every request to the tracking server (basic
authentication), and the model servers' admin tokens and prediction keys with every
request to a server. On one host they stay on the engine's internal networks; between
hosts they would cross a network in the clear. With the override, the servers answer
HTTPS only, and every client (workers, step containers, the api-server, the model
servers fetching from MLflow, Prometheus) verifies their certificates against the CA
written here.

The CA's private key is never written: it signs the servers' certificates and is gone,
so a copy of ``ca.pem`` on every host cannot be used to mint another certificate that
the clients would trust. Renewing means a new CA: remove the folder, run the command
again and restart the stack. A site with its own PKI puts its own files at these names
instead (``ca.pem``: the CA bundle; ``mlflow.pem``: the server's chain; ``mlflow-key.pem``;
``model-server-<model>.pem`` and ``model-server-<model>-key.pem`` for each served model).
A model served later needs its own: a new CA, as for renewing.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mlops_pack.errors import BadInputError
from mlops_pack.stack_env import ENV_FILE, served_models

TLS_DIR = Path(".stack") / "tls"
# What the stack's clients call the server: its service name, and the published port on
# this host (the health check and people on it).
DEFAULT_NAMES = ("mlflow", "localhost", "127.0.0.1")
# The .env key docker-compose.yaml adds to MLflow's allowed Host headers (its DNS-rebinding
# guard): the other names clients use, which --name adds.
ALLOWED_NAMES_KEY = "MLFLOW_ALLOWED_NAMES"
VALID_DAYS = 730


@dataclass(frozen=True)
class TlsFiles:
    """The CA bundle the clients trust, and the server's certificate and key (PEM)."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def under(cls, folder: Path) -> TlsFiles:
        return cls(folder / "ca.pem", folder / "mlflow.pem", folder / "mlflow-key.pem")

    def server(self, model: str) -> tuple[Path, Path]:
        """A model server's certificate and key, beside the MLflow server's."""
        stem = self.ca.parent / server_stem(model)
        return stem.with_name(f"{stem.name}.pem"), stem.with_name(f"{stem.name}-key.pem")


def server_stem(model: str) -> str:
    """A model server's service name in the compose files, and its files' stem."""
    return f"model-server-{model}"


_HOST_NAME = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
)


def _is_host(name: str) -> bool:
    """A host name (letters, digits, dots and inner hyphens) or an IP address (IPv6
    included): not a URL, a host:port, a wildcard (``*`` would make MLflow answer any
    Host header) or a list."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return len(name) <= 253 and _HOST_NAME.fullmatch(name) is not None
    return True


def server_names(given: Sequence[str], models: Sequence[str]) -> dict[str, list[str]]:
    """``--server-name MODEL=NAME`` values, by model: the other names clients on other
    hosts reach that model's server by (its certificate carries them)."""
    found: dict[str, list[str]] = {}
    for value in given:
        model, _, name = value.partition("=")
        if model not in models or not _is_host(name):
            raise BadInputError(
                f"--server-name {value!r}: give MODEL=NAME, a served model ({', '.join(models)}"
                " here) and the host name or IP address clients use for its server, such as "
                "churn=serving.example.internal",
                {"rule": "stack_tls_server_name", "name": value},
            )
        found.setdefault(model, []).append(name)
    return found


def _subject_names(names: Sequence[str]) -> list:
    from cryptography import x509

    found = []
    for name in dict.fromkeys(names):  # in order, once each
        try:
            found.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            found.append(x509.DNSName(name))
    return found


def _ca_key_usage():
    """A CA key's usage: signing certificates and revocation lists, nothing else."""
    from cryptography import x509

    uses = dict.fromkeys(
        ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
         "key_agreement", "encipher_only", "decipher_only"),
        False,
    )  # fmt: skip
    return x509.KeyUsage(key_cert_sign=True, crl_sign=True, **uses)


def _certificates(
    servers: dict[str, Sequence[str]],
) -> tuple[bytes, dict[str, tuple[bytes, bytes]]]:
    """PEM bytes of a new CA certificate, and for each server (its file stem: the names
    its certificate carries) a certificate the CA signed and the server's own key. The
    CA's key signs them all here and is then dropped."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mlops-pack stack CA")])

    def builder(subject, public_key):
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            # Clocks of several hosts: valid from a little before now.
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )

    ca = (
        builder(ca_name, ca_key.public_key())
        # It signs the servers' certificates and nothing below them.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    issued = {}
    for stem, names in servers.items():
        server_key = ec.generate_private_key(ec.SECP256R1())  # one key per server
        server = (
            builder(
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]),
                server_key.public_key(),
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(_subject_names(names)), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        key = server_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        issued[stem] = (server.public_bytes(pem), key)
    return ca.public_bytes(pem), issued


def write_tls(
    folder: Path,
    names: Sequence[str] = (),
    models: Sequence[str] = (),
    other_names: Mapping[str, Sequence[str]] | None = None,
) -> TlsFiles:
    """Write into ``folder`` a CA bundle, the MLflow server's certificate for
    ``DEFAULT_NAMES`` and ``names``, and one for each served model's server (its service
    name, localhost, 127.0.0.1 and its ``other_names``), each with a key of its own; all
    at once (staged, then moved into place). Refuses to replace existing files.

    A name is on one server's certificate only: a server's key, were it stolen, cannot
    pass for another server (MLflow, whose clients send passwords, above all)."""
    folder = Path(folder)
    if folder.exists():
        raise BadInputError(
            f"{folder} exists: stack tls never replaces a certificate the clients may "
            "trust already. Keep it, or remove the folder, run stack tls again and restart "
            "the stack (every client gets the new CA)",
            {"rule": "stack_tls_exists", "file": str(folder)},
        )
    bad = [name for name in names if not _is_host(name)]
    if bad:
        raise BadInputError(
            f"--name {bad[0]!r} is not a host name or an IP address. Fix: give the name "
            "the clients use for the MLflow server, such as mlflow.example.internal",
            {"rule": "stack_tls_name", "name": bad[0]},
        )
    servers = {"mlflow": [*DEFAULT_NAMES, *names]}
    for model in models:
        extra = (other_names or {}).get(model, [])
        servers[server_stem(model)] = [server_stem(model), *DEFAULT_NAMES[1:], *extra]
    ca, issued = _certificates(servers)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tls-", dir=folder.parent))
    try:
        files = {staging / "ca.pem": ca}
        for stem, (cert, key) in issued.items():
            files[staging / f"{stem}.pem"] = cert
            files[staging / f"{stem}-key.pem"] = key
        for path, data in files.items():
            path.write_bytes(data)
            # Bind-mounted into containers of other users (the servers run as 65534):
            # readable there; the stack's folder (.stack, 0700) keeps other users of the
            # host out, and each server mounts its own key only.
            path.chmod(0o644)
        staging.chmod(0o755)
        os.rename(staging, folder)  # one step: no half-written folder is ever seen
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return TlsFiles.under(folder)


def init_tls(
    project_dir: Path,
    names: Sequence[str] = (),
    include_dir: Path | None = None,
    server_name_values: Sequence[str] = (),
) -> dict[str, object]:
    """``stack tls``: the files under ``project_dir/.stack/tls`` (a certificate for
    MLflow, with ``names``, and for the server of every served spec under
    ``include_dir``, by default ``project_dir/include``, with its ``--server-name``
    values), and the folder recorded in the stack's ``.env`` as ``STACK_TLS_DIR``
    (docker-compose.tls.yaml requires it; a value the .env holds already is kept)."""
    project_dir = Path(project_dir).resolve()
    env_path = project_dir / ENV_FILE
    if not env_path.is_file():
        raise BadInputError(
            f"{env_path} does not exist: stack tls records its folder in the stack's .env. "
            "Fix: run mlops-pack stack init first",
            {"rule": "stack_tls_env", "file": str(env_path)},
        )
    stack_dir = project_dir / TLS_DIR.parent
    stack_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    stack_dir.chmod(0o700)
    include_dir = Path(include_dir or project_dir / "include")
    if not (include_dir / "models").is_dir():
        raise BadInputError(
            f"{include_dir / 'models'} is not a folder: stack tls writes a certificate for "
            "the server of every served spec there. Fix: give --include the include folder "
            "stack init was given",
            {"rule": "stack_tls_include", "file": str(include_dir / "models")},
        )
    models = served_models(include_dir)
    others = server_names(server_name_values, models)
    files = write_tls(stack_dir / TLS_DIR.name, names, models, others)
    in_env = _record_in_env(env_path, "STACK_TLS_DIR", lambda kept: kept or str(files.ca.parent))
    if names:
        _record_in_env(env_path, ALLOWED_NAMES_KEY, lambda kept: _allowed_names(kept, names))
    return {
        "tls_dir": str(files.ca.parent),
        "tls_dir_in_env": in_env,
        "names": list(dict.fromkeys([*DEFAULT_NAMES, *names])),
        "servers": [server_stem(model) for model in models],
        "valid_days": VALID_DAYS,
    }


def _allowed_names(kept: str | None, names: Sequence[str]) -> str:
    """The Host headers MLflow answers for ``names`` (bare, and with any port), added to
    those the .env lists already (``kept``). MLflow matches an entry with ``*`` as an
    fnmatch pattern, in which ``[`` opens a class: an IPv6 address's bracket is escaped."""
    entries = [e.strip() for e in (kept or "").split(",") if e.strip()]
    for name in names:
        try:
            is_v6 = ipaddress.ip_address(name).version == 6
        except ValueError:
            is_v6 = False
        bare = f"[{name}]" if is_v6 else name
        entries += [bare, f"[[]{name}]:*" if is_v6 else f"{name}:*"]
    return ",".join(dict.fromkeys(entries))


def _record_in_env(env_path: Path, key: str, value: Callable[[str | None], str]) -> str:
    """Set ``key`` in the .env to ``value(what it holds now, or None)`` and return it,
    keeping every other line as it was (and the file's line endings); the file is
    replaced whole, mode 600, never seen half-written. A line ``export KEY=...`` counts,
    and a quoted value is read without its quotes (as compose reads the file)."""
    text = env_path.read_text(encoding="utf-8")
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = text.splitlines()

    def named(line: str) -> bool:
        left = line.split("=", 1)[0].strip()
        return "=" in line and left.removeprefix("export").strip() == key

    held = [i for i, line in enumerate(lines) if named(line)]
    kept = None
    if held:
        kept = lines[held[-1]].split("=", 1)[1].strip()
        if len(kept) >= 2 and kept[0] == kept[-1] and kept[0] in "'\"":
            kept = kept[1:-1]
    written = value(kept or None)
    if held:
        prefix = "export " if lines[held[-1]].lstrip().startswith("export") else ""
        lines[held[-1]] = f"{prefix}{key}={written}"
    else:
        lines.append(f"{key}={written}")
    fd, staged = tempfile.mkstemp(prefix=".env-", dir=env_path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:  # mkstemp: mode 600
            out.write(newline.join(lines) + newline)
        os.replace(staged, env_path)
    except BaseException:
        Path(staged).unlink(missing_ok=True)
        raise
    return written
