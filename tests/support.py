"""Constants and helpers shared by the test modules (import as ``support``)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHURN_SPEC = ROOT / "include" / "models" / "churn.yaml"
DIABETES_SPEC = ROOT / "include" / "models" / "diabetes.yaml"


def run_cli(*args: str | Path) -> tuple[int, dict]:
    """Run one CLI command in-process; return its exit code and result.json."""
    from mlops_pack.cli import main

    argv = [str(a) for a in args]
    code = main(argv)
    out = Path(argv[argv.index("--out") + 1]) if "--out" in argv else None
    result = json.loads((out / "result.json").read_text()) if out else {}
    return code, result


def build_task_image() -> str:
    """Build (or reuse) the content-tagged task image; returns its tag."""
    from mlops_pack.airflow.local_docker import build_task_image as build

    return build(ROOT)


def open_dir(prefix: str) -> Path:
    """A fresh temp dir that containers running as another uid can traverse."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Answering(ThreadingHTTPServer):
    """A stand-in for a model server that answers every request with ``status`` and
    ``body`` as JSON (by default an error naming the status) and ``headers``; counts the
    requests."""

    def __init__(self, status: int, body: Any = None, headers: dict | None = None) -> None:
        self.status, self.requests, self.headers = status, [], headers or {}
        self.body = {"error": f"answering {status}"} if body is None else body
        super().__init__(("127.0.0.1", free_port()), _AnsweringHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _AnsweringHandler(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.server.requests.append((self.command, self.path))
        body = json.dumps(self.server.body).encode()
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in self.server.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *args) -> None:  # keep the test output clean
        pass


def airflow_token(base: str, user: str, password: str) -> str:
    """A JWT from an Airflow api-server's own login endpoint."""
    import urllib.request

    request = urllib.request.Request(
        f"{base}/auth/token",
        method="POST",
        data=json.dumps({"username": user, "password": password}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["access_token"]


def run_to_end(api, dag_id: str, run_id: str, timeout: float = 900) -> str:
    """Poll a DAG run through the official client until it succeeds or fails."""
    import time

    import airflow_client.client as ac

    runs = ac.DagRunApi(api)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = str(runs.get_dag_run(dag_id, run_id).state.value)
        if state in ("success", "failed"):
            return state
        time.sleep(3)
    raise AssertionError(f"{dag_id} run {run_id} did not finish in {timeout}s")


def xcom_value(api, dag_id: str, task_id: str, run_id: str):
    """A task's return value through the official client, as the README shows: the
    client wraps it, and the value may come as JSON text."""
    import json

    import airflow_client.client as ac

    entry = ac.XComApi(api).get_xcom_entry(dag_id, task_id, run_id, "return_value")
    value = entry.actual_instance.value
    return json.loads(value) if isinstance(value, str) else value


def lenient(raw: dict) -> None:
    """A spec edit for a gate any sane challenger passes: for tests that need a second
    promotion. Out of time, month 2's own rows judge it, and noise alone can move a
    guardrail or a slice past its tolerance, so only the primary (non-inferiority, margin
    0.2) and the floors are kept; a label-noised challenger still fails its floor."""
    raw["gate"]["primary"] = {"metric": "roc_auc", "mode": "non_inferiority", "margin": 0.2}
    raw["gate"]["guardrails"] = []
    raw["gate"]["slices"] = {"columns": []}


def promote_month_two(out: Path) -> int:
    """Retrain churn on month 2 under a lenient gate (v2 becomes champion); exit code."""
    spec = churn_spec_copy(out.parent / f"{out.name}-lenient", lenient)
    code, _ = run_cli("retrain", "--spec", spec, "--data", "churn/churn_month_02.csv", "--out", out)
    return code


def churn_spec_copy(tmp_path: Path, edit, source: Path = CHURN_SPEC) -> Path:
    """The churn spec (or ``source``) in a fresh include dir (suites included), changed by
    ``edit(raw)``.

    The single-row latency budget is dropped: it is not what such tests test, and a busy
    machine can exceed it.
    """
    import shutil

    import yaml

    include = tmp_path / "include"
    shutil.copytree(ROOT / "include" / "expectations", include / "expectations")
    (include / "models").mkdir(parents=True)
    raw = yaml.safe_load(source.read_text())
    if "budgets" in raw["gate"]:
        raw["gate"]["budgets"]["max_latency_ms_p95"] = None
    edit(raw)
    spec = include / "models" / source.name
    spec.write_text(yaml.safe_dump(raw, sort_keys=False))
    return spec


def pinned_churn_spec(tmp_path: Path) -> Path:
    """The churn spec with today's pinned holdout (carved once from the first batch)."""
    return churn_spec_copy(tmp_path / "pinned", lambda raw: raw["holdout"].update(strategy="split"))


def challenger_decision(spec: Path, data: str, tmp_path: Path, tag: str) -> str:
    """Validate, train, evaluate and gate a challenger on ``data``; the decision's path.
    The gate must pass (use a lenient spec)."""
    assert (
        run_cli("validate", "--spec", spec, "--data", data, "--out", tmp_path / f"v{tag}")[0] == 0
    )
    code, trained = run_cli("train", "--spec", spec, "--data", data, "--out", tmp_path / f"t{tag}")
    assert code == 0, trained
    run_cli(
        "evaluate",
        "--spec",
        spec,
        "--challenger",
        trained["result"]["version"],
        "--out",
        tmp_path / f"e{tag}",
    )
    code, gated = run_cli(
        "gate",
        "--spec",
        spec,
        "--evaluation",
        tmp_path / f"e{tag}" / "evaluation.json",
        "--out",
        tmp_path / f"g{tag}",
    )
    assert code == 0, gated
    return str(tmp_path / f"g{tag}" / "decision.json")


def promote_process(spec: Path, decision: str, out: Path, env: dict, cwd: Path):
    """``mlops_pack promote`` in a process of its own, as an Airflow worker runs it."""
    import subprocess
    import sys

    argv = ["promote", "--spec", str(spec), "--decision", decision, "--out", str(out)]
    return subprocess.Popen(
        [sys.executable, "-m", "mlops_pack", *argv],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def register_dag(dag) -> None:
    """Write a test's own DAG to the metadata DB: ``dag.test()`` runs only serialized DAGs,
    and it is not in the DAGs folder the DAG processor would find it in."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder=open_dir("test-dags-"))
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)
