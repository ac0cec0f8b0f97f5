"""Helpers for the model server tests (import as ``serving_support``)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import yaml
from support import ROOT, free_port, open_dir, run_cli


def write_spec(include: Path, **serving: object) -> Path:
    """include/models/churn.yaml with the serving section changed as given."""
    spec = yaml.safe_load((ROOT / "include/models/churn.yaml").read_text())
    spec["serving"]["canary"]["requests"] = 40
    for key, value in serving.items():
        spec["serving"][key] = value
    (include / "models").mkdir(parents=True, exist_ok=True)
    if not (include / "expectations").exists():
        shutil.copytree(ROOT / "include" / "expectations", include / "expectations")
    path = include / "models" / "churn.yaml"
    path.write_text(yaml.safe_dump(spec))
    for item in [include, *include.rglob("*")]:
        item.chmod(0o755 if item.is_dir() else 0o644)
    return path


def sample_rows(served_state: dict) -> tuple[list[dict], list[float]]:
    """The smoke sample the evaluate step wrote for v2: holdout rows and v2's scores."""
    sample = next((served_state["work"] / "v2-evaluate").glob("smoke_sample.json"))
    data = json.loads(sample.read_text())
    return data["rows"], data["predictions"]


def restart_server(served_state: dict) -> None:
    """Start the fixture's server again (same port, home and secrets), replacing the old one."""
    from mlops_pack.airflow.model_server import start_server

    served_state["server"] = start_server(
        served_state["client"],
        model="churn",
        include_dir=served_state["include"],
        home=served_state["home"],
        image=served_state["image"],
        secrets_dir=served_state["secrets"],
        port=served_state["server"].port,
    )


@contextlib.contextmanager
def churn_served(task_image: str, data_dir: Path) -> Iterator[dict]:
    """A real churn model server container serving v1, with v2 trained and evaluated.

    Models are trained in-process (fast, same code as the step containers); the server
    runs in the hardened task image on a free port of 127.0.0.1. Yields the state the
    serving tests share; the server is stopped and the environment restored after.
    """
    import docker
    from mlops_pack.airflow.model_server import start_server, stop_server

    home, include, secrets, work = (
        open_dir(p) for p in ("srv-home-", "srv-inc-", "srv-sec-", "srv-work-")
    )
    # Latency is judged by the tests that are about it (with their own specs); here the
    # budgets only have to let v1 and v2 through the gate and the server on a busy machine.
    spec = write_spec(include, latency_budget_ms_p95=5000)
    relaxed = yaml.safe_load(spec.read_text())
    relaxed["gate"]["budgets"]["max_latency_ms_p95"] = 5000
    spec.write_text(yaml.safe_dump(relaxed))
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
