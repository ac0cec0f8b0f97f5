"""A real model server container for churn, with v1 served and v2 evaluated (not deployed).

Models are trained in-process (fast, same code as the step containers); the server runs
in the hardened task image on a free port of 127.0.0.1.
"""

from __future__ import annotations

import os

import pytest
from serving_support import write_spec
from support import free_port, open_dir, run_cli


@pytest.fixture(scope="module")
def served(task_image, data_dir):
    import docker
    from mlops_pack.airflow.model_server import start_server, stop_server

    home, include, secrets, work = (
        open_dir(p) for p in ("srv-home-", "srv-inc-", "srv-sec-", "srv-work-")
    )
    spec = write_spec(include)
    env = {"MLOPS_PACK_HOME": str(home), "MLOPS_PACK_DATA_DIR": str(data_dir)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    client = docker.APIClient(base_url="unix://var/run/docker.sock")
    server = None
    try:
        code, _ = run_cli(
            "retrain", "--spec", spec, "--data", "churn/churn_month_01.csv", "--out", work / "v1"
        )
        assert code == 0
        for step, extra in (
            ("validate", ["--data", "churn/churn_month_02.csv"]),
            ("train", ["--data", "churn/churn_month_02.csv"]),
            ("evaluate", ["--challenger", "2"]),
        ):
            code, result = run_cli(step, "--spec", spec, *extra, "--out", work / f"v2-{step}")
            assert code == 0, result
        smoke_sample_uri = result["result"]["smoke_sample_uri"]
        server = start_server(
            client,
            model="churn",
            include_dir=include,
            home=home,
            image=task_image,
            secrets_dir=secrets,
            port=free_port(),
        )
        for name in ("admin_token", "prediction_key"):
            (work / name).write_text(server.secret(name))
        code, result = run_cli(
            "rollback",
            "--spec",
            spec,
            "--reason",
            "serve v1",
            "--to-version",
            "1",
            "--server-url",
            server.url,
            "--admin-token-file",
            work / "admin_token",
            "--out",
            work / "rb",
        )
        assert code == 0 and result["result"]["served"]["served"]["version"] == "1", result
        state = {
            "client": client,
            "server": server,
            "home": home,
            "include": include,
            "spec": spec,
            "work": work,
            "secrets": secrets,
            "image": task_image,
            "smoke_sample_uri": smoke_sample_uri,
        }
        yield state
        server = state["server"]
    finally:
        if server is not None:
            stop_server(client, server)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
