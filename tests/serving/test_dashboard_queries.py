"""Every Grafana panel query returns data from a real Prometheus scraping a real server.

Prometheus (Debian's package) runs with the shipped include/prometheus/prometheus.yml,
adapted only where this machine differs from the compose network: the targets (the
churn server's free port on 127.0.0.1, Prometheus's own port) and a 1 s scrape interval
so that rates exist after seconds rather than minutes. The queries are the shipped
dashboards' own, sent verbatim. Grafana itself has no build installable here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from dashboard_support import (
    SCRAPE_SECONDS,
    assert_every_panel_has_data,
    panel_queries,
    query,
)
from mlops_pack.errors import ServiceUnavailableError
from serving_support import write_spec
from support import ROOT, free_port, open_dir, run_cli


def prometheus_config(folder: Path, server_port: int, prom_port: int, key: str) -> Path:
    config = yaml.safe_load((ROOT / "include/prometheus/prometheus.yml").read_text())
    config["global"]["scrape_interval"] = f"{SCRAPE_SECONDS:g}s"
    targets = {
        "model-server-churn:8181": f"127.0.0.1:{server_port}",
        "localhost:9090": f"127.0.0.1:{prom_port}",
        # Not started here: left pointing at a closed port, scraped as down.
        "model-server-diabetes:8182": f"127.0.0.1:{free_port()}",
        "pushgateway:9091": f"127.0.0.1:{free_port()}",
    }
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            static["targets"] = [targets[t] for t in static["targets"]]
    (folder / "secrets").mkdir()
    for model in ("churn", "diabetes"):
        (folder / "secrets" / f"{model}_prediction_key").write_text(key)
    for service in ("pushgateway", "prometheus"):  # this Prometheus takes no password
        (folder / "secrets" / f"{service}_password").write_text("unused here")
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def served(task_image, data_dir):
    """A churn server container serving v1, its champion (no challenger: lighter than the
    serving tests' shared fixture, which also trains and evaluates v2)."""
    import docker
    from mlops_pack.airflow.model_server import serve_champion, start_server, stop_server

    home, include, secrets, work = (
        open_dir(p) for p in ("dash-home-", "dash-inc-", "dash-sec-", "dash-work-")
    )
    spec = write_spec(include)
    client = docker.APIClient(base_url="unix://var/run/docker.sock")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLOPS_PACK_HOME", str(home))
        env.setenv("MLOPS_PACK_DATA_DIR", str(data_dir))
        code, result = run_cli(
            "retrain", "--spec", spec, "--data", "churn/churn_month_01.csv", "--out", work / "v1"
        )
        assert code == 0, result
        server = start_server(
            client,
            model="churn",
            include_dir=include,
            home=home,
            image=task_image,
            secrets_dir=secrets,
            port=free_port(),
        )
        try:
            # The first load imports scikit-learn in a container held to one CPU: on a
            # busy machine that can outlast the client's 30 s, while the load goes on.
            for attempt in range(3):
                try:
                    assert serve_champion(server) == "1"
                    break
                except ServiceUnavailableError:
                    if attempt == 2:
                        raise
            yield server
        finally:
            stop_server(client, server)


@pytest.fixture
def prometheus(served, tmp_path):
    binary = shutil.which("prometheus")
    assert binary, "prometheus is missing: `make test-tools` (apt-get install prometheus)"
    port = free_port()
    config = prometheus_config(tmp_path, served.port, port, served.secret("prediction_key"))
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2):
                    break
            except OSError:
                assert process.poll() is None, (tmp_path / "prometheus.log").read_text()
                assert time.monotonic() < deadline, "prometheus did not become ready"
                time.sleep(0.2)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def test_every_panel_query_returns_data(served, prometheus, data_dir):
    import pandas as pd

    frame = pd.read_csv(data_dir / "churn" / "churn_month_01.csv", nrows=60)
    rows = json.loads(frame.drop(columns=["churned", "customer_id"]).to_json(orient="records"))
    queries = assert_every_panel_has_data(
        prometheus, "churn", served.url, served.secret("prediction_key"), rows
    )
    up = query(prometheus, 'up{job="model-server-churn"}')
    assert [float(s["value"][1]) for s in up] == [1.0], up
    requests = query(prometheus, 'mlops_pack_requests_total{model="churn",status="ok"}')
    assert requests and sum(float(s["value"][1]) for s in requests) >= 22
    flagged = query(prometheus, 'sum by (kind) (mlops_pack_range_violations_total{model="churn"})')
    assert {s["metric"]["kind"] for s in flagged} >= {"input_range"}
    info = next(q for q in queries if "mlops_pack_model_info" in q)
    served_version = query(prometheus, info)
    assert {s["metric"]["version"] for s in served_version} == {"1"}


def test_the_other_dashboards_ask_the_same_of_their_model():
    churn = panel_queries("churn")
    assert panel_queries("diabetes") == [
        q.replace('model="churn"', 'model="diabetes"') for q in churn
    ]
