"""Prometheus and dashboard helpers shared by the dashboard test and the compose stack
test (import as ``dashboard_support``): the panel queries of a shipped dashboard, a
query against Prometheus's HTTP API, traffic of every kind the panels chart, and a wait
for fresh scrapes."""

from __future__ import annotations

import json
import math
import re
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
import urllib3
from mlops_pack.server_client import ServerClient
from support import ROOT

SCRAPE_SECONDS = 1.0


def panel_queries(model: str, section: str = "serving") -> list[str]:
    """The queries of the shipped dashboard's panels above its row (``serving``: the
    server's own metrics) or below it (``monitor``: the monitor's, from the Pushgateway)."""
    dashboard = json.loads((ROOT / f"include/grafana/dashboards/{model}.json").read_text())
    panels = dashboard["panels"]
    row = next(i for i, panel in enumerate(panels) if panel["type"] == "row")
    chosen = {"serving": panels[:row], "monitor": panels[row + 1 :]}[section]
    return [target["expr"] for panel in chosen for target in panel.get("targets", [])]


def assert_queries_have_data(port: int, model: str, queries: list[str], prefix: str) -> None:
    """Every query returns finite data, and every metric it names (``prefix``...) has
    series for the model: a fallback such as ``or vector(0)`` must not hide a misspelt
    metric."""
    for expr in queries:
        samples = query(port, expr)
        assert samples, f"no data: {expr}"
        values = [float(s["value"][1]) for s in samples]
        assert all(math.isfinite(v) for v in values), (expr, samples)
        for metric in set(re.findall(rf"\b{prefix}[a-z_]+\b", expr)):
            assert query(port, f'count({metric}{{model="{model}"}})'), metric


# The password of a Prometheus that takes one (the compose stack's; the helpers here take
# a port, and the Prometheus the serving tests start has none), by its port.
PROMETHEUS_PASSWORDS: dict[int, str] = {}


def basic_auth(password: str) -> dict[str, str]:
    """The header for the compose stack's Prometheus and Pushgateway (user mlops-pack)."""
    return urllib3.make_headers(basic_auth=f"mlops-pack:{password}")


def query(port: int, expr: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    password = PROMETHEUS_PASSWORDS.get(port)
    request = urllib.request.Request(url, headers=basic_auth(password) if password else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = json.load(response)
    except urllib.error.HTTPError as exc:  # a malformed query: 400 with the parser's error
        pytest.fail(f"{expr}: {exc.code} {exc.read().decode()}")
    assert body["status"] == "success", (expr, body)
    return body["data"]["result"]


def traffic(url: str, key: str, rows: list[dict]) -> None:
    """Scored requests, a batch with inputs outside the training range, a request with a
    wrong key and one with a bad body: every kind of series the dashboards chart."""
    public = ServerClient(url, key)
    for start in range(0, 60, 6):
        assert public.call("POST", "/predict", {"rows": rows[start : start + 6]})[0] == 200
    odd = [{**row, "age": 500, "tenure_months": 10_000} for row in rows[:3]]
    assert public.call("POST", "/predict", {"rows": odd})[0] == 200
    wrong = ServerClient(url, "not-the-key")
    assert wrong.call("POST", "/predict", {"rows": rows[:1]})[0] == 401
    assert public.call("POST", "/predict", {"rows": [{"age": "old"}]})[0] in (400, 422)


def last_scrape(port: int, job: str) -> float:
    samples = query(port, f'timestamp(up{{job="{job}"}})')
    return float(samples[0]["value"][1]) if samples else 0.0


def wait_for_scrapes(port: int, count: int, job: str = "model-server-churn") -> None:
    """Until Prometheus has scraped ``job`` ``count`` more times (after now)."""
    after = time.time()
    deadline = after + 60
    for _ in range(count):
        while last_scrape(port, job) <= after:
            assert time.time() < deadline, f"Prometheus does not scrape {job}"
            time.sleep(SCRAPE_SECONDS / 4)
        after = last_scrape(port, job)


def assert_every_panel_has_data(port: int, model: str, url: str, key: str, rows: list[dict]):
    """Two rounds of traffic, each seen by two scrapes (rates and increases need a counter
    that moved between two samples), then every panel query of the model's dashboard
    must return finite data, and every metric it names must have series for the model.
    Returns the queries."""
    wait_for_scrapes(port, 1, f"model-server-{model}")
    for _ in range(2):
        traffic(url, key, rows)
        wait_for_scrapes(port, 2, f"model-server-{model}")
    queries = panel_queries(model)
    assert len(queries) >= 9
    assert_queries_have_data(port, model, queries, "mlops_pack_")
    return queries
