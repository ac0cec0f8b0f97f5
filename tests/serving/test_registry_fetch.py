"""A model server that fetches versions from the registry itself (no shared disk).

A real ``mlflow server`` (proxied artifact store: clients need only its URL) holds two
churn versions, trained in-process against it; a real server container, started with the
registry's URL and an empty home of its own, fetches ``models:/churn/<version>`` and
checks the sha256 recorded on the version before loading. Nothing is staged by the
trainer. A version whose file was changed in the artifact store is refused with a clear
error, and the old version keeps serving. The MLflow server runs behind its basic
authentication, as in the compose stack: the trainer signs in as the pack's user, the
server container as the read-only one, from the credentials file in its secrets folder.
The server answers HTTPS only, with a certificate of a private CA that the worker trusts
through ``MLFLOW_TRACKING_SERVER_CERT_PATH``: the server container verifies it against its
copy of the bundle (the compose stacks' tests fetch over plain HTTP on their networks).
"""

from __future__ import annotations

import pytest
from mlops_pack import mlflow_credentials
from mlops_pack.hashing import sha256_file
from mlops_pack.model_fetch import SHA_TAG
from mlops_pack.server_client import ServerClient
from services import mlflow_passwords, mlflow_server, mlflow_signin, tls_files
from serving_support import write_spec
from support import free_port, open_dir, run_cli


@pytest.fixture(scope="module")
def fetching(task_image, data_dir, tmp_path_factory):
    import docker
    from mlops_pack.airflow.model_server import start_server, stop_server

    root = tmp_path_factory.mktemp("fetch")
    trainer, server_home, include, secrets = (
        open_dir(p) for p in ("fetch-trainer-", "fetch-srv-", "fetch-inc-", "fetch-sec-")
    )
    spec = write_spec(include, latency_budget_ms_p95=5000)
    passwords = mlflow_passwords()
    reader = mlflow_credentials.render(mlflow_signin("mlops-reader", passwords))
    (secrets / mlflow_credentials.CREDENTIALS_FILE).write_text(reader)
    tls = tls_files(root / "tls")
    with (
        mlflow_server(root / "mlflow", passwords, tls) as tracking,
        pytest.MonkeyPatch.context() as env,
    ):
        env.setenv("MLFLOW_TRACKING_URI", tracking)
        env.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(tls.ca))
        for name, value in mlflow_signin("mlops-pack", passwords).items():
            env.setenv(name, value)
        env.setenv("MLOPS_PACK_HOME", str(trainer))
        env.setenv("MLOPS_PACK_DATA_DIR", str(data_dir))
        for month in ("01", "02"):  # v1 and v2: registered, with their sha256 recorded
            for step in ("validate", "train"):
                data = f"churn/churn_month_{month}.csv"
                out = root / f"{step}-{month}"
                code, result = run_cli(step, "--spec", spec, "--data", data, "--out", out)
                assert code == 0, result
        client = docker.APIClient(base_url="unix://var/run/docker.sock")
        server = start_server(
            client,
            model="churn",
            include_dir=include,
            home=server_home,
            image=task_image,
            secrets_dir=secrets,
            port=free_port(),
            registry_url=tracking,
        )
        try:
            yield {
                "server": server,
                "tracking": tracking,
                "artifacts": root / "mlflow" / "artifacts",
                "trainer": trainer,
                "server_home": server_home,
                "secrets": secrets,
                "tls": tls,
                "container": client.inspect_container(server.container),
            }
        finally:
            stop_server(client, server)


def _recorded(version: str) -> str:
    from mlops_pack.registry import Registry

    return Registry().version("churn", version).tags[SHA_TAG]


def test_the_server_fetches_a_version_by_registry_uri_and_checks_its_sha256(fetching, monkeypatch):
    from mlops_pack.registry import Registry
    from mlops_pack.steps.served import LOAD_TIMEOUT_S, ServedSwitch

    monkeypatch.setenv("MLFLOW_TRACKING_URI", fetching["tracking"])
    monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(fetching["tls"].ca))
    monkeypatch.setenv("MLOPS_PACK_HOME", str(fetching["trainer"]))
    server = fetching["server"]
    # The registry is https; the server checks it against its copy of the worker's CA.
    assert fetching["tracking"].startswith("https://")
    env = dict(e.split("=", 1) for e in fetching["container"]["Config"]["Env"])
    assert env["MLFLOW_TRACKING_SERVER_CERT_PATH"] == "/run/mlops-secrets/registry_ca.pem"
    copy = fetching["secrets"] / "registry_ca.pem"
    assert copy.read_bytes() == fetching["tls"].ca.read_bytes()
    admin = ServerClient(server.url, server.secret("admin_token"))
    public = ServerClient(server.url, server.secret("prediction_key"))
    assert admin.ok("GET", "/admin/stats")["model_source"] == "registry"

    # Served through the same switch the promote and rollback steps use: nothing staged.
    registry = Registry()
    served = ServedSwitch(admin, registry, "churn").serve(registry.version("churn", "1"))
    assert served["served"]["version"] == "1"
    assert public.ok("GET", "/version")["version"] == "1"
    assert not (fetching["trainer"] / "serving").exists()  # the trainer staged nothing
    cached = fetching["server_home"] / "serving/churn/models/v1/model.skops"
    assert sha256_file(cached) == _recorded("1")  # the server's own verified copy

    # A request naming another hash than the registry records is refused before any fetch.
    v2 = _recorded("2")
    status, body, _ = admin.call(
        "POST", "/admin/candidate", {"version": "2", "sha256": "0" * 64}, timeout=LOAD_TIMEOUT_S
    )
    assert status == 422, body
    assert f"the registry records {v2[:12]}" in body["error"], body

    # v2's file changed in the artifact store after training: fetched, checked, refused.
    stored = [p for p in fetching["artifacts"].rglob("model.skops") if sha256_file(p) == v2]
    assert stored, "v2's model file not found in the artifact store"
    originals = {p: p.read_bytes() for p in stored}
    for path in stored:
        path.write_bytes(originals[path] + b"tampered")
    try:
        status, body, _ = admin.call(
            "POST", "/admin/candidate", {"version": "2", "sha256": v2}, timeout=LOAD_TIMEOUT_S
        )
    finally:
        for path, data in originals.items():
            path.write_bytes(data)
    assert status == 422, body
    assert "models:/churn/2/model.skops: sha256 mismatch" in body["error"], body
    slots = admin.ok("GET", "/admin/stats")["slots"]
    assert slots["candidate"] is None and slots["stable"]["version"] == "1"
    assert public.ok("GET", "/version")["version"] == "1"  # the old version keeps serving
    assert not (fetching["server_home"] / "serving/churn/models/v2").exists()

    # The untouched file loads.
    loaded = admin.ok(
        "POST", "/admin/candidate", {"version": "2", "sha256": v2}, timeout=LOAD_TIMEOUT_S
    )
    assert loaded["slots"]["candidate"]["version"] == "2"
    admin.ok("DELETE", "/admin/candidate")
