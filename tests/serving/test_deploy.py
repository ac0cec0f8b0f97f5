"""Deploy failures roll back on their own: stable keeps serving, the alias does not move.

The deploy step runs in-process here (the same code the step container runs); the
server is the real container. Successful deploys and switches run through Airflow in
tests/dags/test_retrain_dag_docker.py.
"""

from __future__ import annotations

import json
import shutil
import threading
import time

from mlops_pack.errors import ServiceUnavailableError
from mlops_pack.server_client import ServerClient
from serving_support import restart_server, write_spec
from support import open_dir, run_cli


class Traffic:
    """Prediction requests in the background during a deploy; records every failure."""

    def __init__(self, client: ServerClient, row: dict) -> None:
        self.client, self.row = client, row
        self.sent, self.failures, self.versions = 0, [], set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status, body, _ = self.client.call("POST", "/predict", {"rows": [self.row]})
                if status != 200:
                    self.failures.append((status, body))
                else:
                    self.versions.add(body["version"])
            except ServiceUnavailableError as exc:
                self.failures.append(("connection", str(exc)))
            self.sent += 1
            time.sleep(0.02)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)


def _deploy(served, spec, smoke_sample, out_name: str) -> tuple[int, dict]:
    work = served["work"]
    return run_cli(
        "deploy",
        "--spec",
        spec,
        "--challenger",
        "2",
        "--smoke-sample",
        smoke_sample,
        "--server-url",
        served["server"].url,
        "--admin-token-file",
        work / "admin_token",
        "--prediction-key-file",
        work / "prediction_key",
        "--out",
        work / out_name,
    )


def _assert_untouched(served, traffic: Traffic) -> None:
    from mlops_pack.registry import CHAMPION, Registry

    public = ServerClient(served["server"].url, served["server"].secret("prediction_key"))
    assert public.ok("GET", "/version")["version"] == "1"
    assert public.ok("GET", "/version")["candidate"] is None
    assert Registry().alias("churn", CHAMPION).version == "1"
    assert traffic.sent > 0 and traffic.failures == [] and traffic.versions == {"1"}


def _rejection(served) -> tuple[str, list[dict]]:
    from mlops_pack.registry import TAG, Registry

    registry = Registry()
    tag = registry.version("churn", "2").tags.get(f"{TAG}deploy_rejected", "")
    return tag, registry.history("churn", "deploy_rejected")


def _row(served) -> dict:
    sample = json.loads((served["work"] / "v2-evaluate" / "smoke_sample.json").read_text())
    return sample["rows"][0]


def _public(served) -> ServerClient:
    return ServerClient(served["server"].url, served["server"].secret("prediction_key"))


def test_over_latency_budget_rolls_back_with_no_failed_request(served):
    tight = write_spec(open_dir("srv-tight-"), latency_budget_ms_p95=0.01)
    with Traffic(_public(served), _row(served)) as traffic:
        code, result = _deploy(served, tight, served["smoke_sample_uri"], "latency")
    assert code == 5 and result["status"] == "deploy_failed", result
    assert "smoke_latency_p95" in result["error"] and "stable v1 keeps serving" in result["error"]
    checks = {c["name"]: c["passed"] for c in result["result"]["checks"]}
    assert checks == {
        "ready": True,
        "load": True,
        "offline_match": True,
        "smoke_latency_p95": False,
    }
    _assert_untouched(served, traffic)
    tag, events = _rejection(served)
    assert tag.startswith("smoke_latency_p95") and events[-1]["version"] == "2"


def test_predictions_unlike_the_offline_scores_roll_back(served):
    # The offline scores no longer match what the server computes (as when the serving
    # environment differs from the evaluation's): copy the evaluation and shift them.
    copy = open_dir("srv-eval-")
    source = served["work"] / "v2-evaluate"
    sample = json.loads((source / "smoke_sample.json").read_text())
    sample["predictions"] = [p + 0.01 for p in sample["predictions"]]
    (copy / "smoke_sample.json").write_text(json.dumps(sample))
    with Traffic(_public(served), _row(served)) as traffic:
        code, result = _deploy(served, served["spec"], copy / "smoke_sample.json", "offline")
    assert code == 5, result
    assert "offline_match: max |served - offline| = 0.01" in result["error"]
    _assert_untouched(served, traffic)


def test_a_model_that_cannot_load_rolls_back(served):
    staged = served["home"] / "serving" / "churn" / "models" / "v2" / "model.skops"
    original = staged.read_bytes() if staged.exists() else None
    staged.parent.mkdir(parents=True, exist_ok=True)
    staged.write_bytes(b"not a model")  # corrupted after staging
    try:
        with Traffic(_public(served), _row(served)) as traffic:
            code, result = _deploy(served, served["spec"], served["smoke_sample_uri"], "load")
    finally:
        if original is None:
            shutil.rmtree(staged.parent)
        else:
            staged.write_bytes(original)
    assert code == 5, result
    assert (
        "load: v2 refused before loading" in result["error"]
        and "sha256 mismatch" in result["error"]
    )
    _assert_untouched(served, traffic)


def test_killing_the_server_during_the_canary_fails_clearly_and_restart_serves_stable(served):
    from mlops_pack.registry import CHAMPION, Registry

    slow = write_spec(
        open_dir("srv-slow-"),
        canary={
            "enabled": True,
            "mode": "canary",
            "share": 0.05,
            "requests": 100000,
            "max_seconds": 120,
            "synthetic_traffic": True,
        },
    )
    admin = ServerClient(served["server"].url, served["server"].secret("admin_token"))
    killed = threading.Event()

    def kill_when_canary_runs() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if admin.ok("GET", "/admin/stats")["slots"]["mode"] == "canary":
                    time.sleep(1.0)
                    served["client"].kill(served["server"].container)
                    killed.set()
                    return
            except ServiceUnavailableError:
                return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_when_canary_runs, daemon=True)
    killer.start()
    code, result = _deploy(served, slow, served["smoke_sample_uri"], "killed")
    killer.join(10)
    assert killed.is_set()
    assert code == 1 and result["status"] == "error", result
    assert "stopped answering during the deploy of v2" in result["error"]
    assert "the alias did not move" in result["error"]
    assert Registry().alias("churn", CHAMPION).version == "1"
    restart_server(served)
    version = _public(served).ok("GET", "/version")
    assert version["version"] == "1" and version["candidate"] is None


def _long_canary_spec():
    """A canary that would run for minutes: the failures below hit it while it runs.

    The latency budget is out of the way: the smoke test must pass on a busy machine.
    """
    return write_spec(
        open_dir("srv-long-"),
        latency_budget_ms_p95=60000,
        canary={
            "enabled": True,
            "mode": "canary",
            "share": 0.5,
            "requests": 100000,
            "max_seconds": 300,
            "synthetic_traffic": True,
        },
    )


def _wait_for_canary(served, timeout: float = 180) -> None:
    admin = ServerClient(served["server"].url, served["server"].secret("admin_token"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body, _ = admin.call("GET", "/admin/stats")
        if status == 200 and body["slots"]["mode"] == "canary":
            return
        time.sleep(0.2)
    raise AssertionError("the canary never started")


def _assert_safe_state(served) -> None:
    """No candidate, no canary traffic, stable v1: what every failed deploy must leave."""
    admin = ServerClient(served["server"].url, served["server"].secret("admin_token"))
    status, stats, _ = admin.call("GET", "/admin/stats")
    assert status == 200, stats
    slots = stats["slots"]
    assert slots["candidate"] is None and slots["mode"] == "off" and slots["share"] == 0.0, slots
    assert slots["stable"]["version"] == "1"


def test_sigterm_mid_canary_turns_traffic_off_and_drops_the_candidate(served):
    """``docker stop``, an Airflow timeout or a kill reach the step as SIGTERM."""
    import os
    import signal
    import subprocess
    import sys

    from support import ROOT

    work = served["work"]
    out = open_dir("srv-term-")
    process = subprocess.Popen(
        [sys.executable, "-m", "mlops_pack", "deploy", "--spec", str(_long_canary_spec()),
         "--challenger", "2", "--smoke-sample", served["smoke_sample_uri"],
         "--server-url", served["server"].url,
         "--admin-token-file", str(work / "admin_token"),
         "--prediction-key-file", str(work / "prediction_key"), "--out", str(out)],
        cwd=ROOT, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        with Traffic(_public(served), _row(served)) as traffic:
            _wait_for_canary(served)
            time.sleep(1.0)  # candidate-scored requests are flowing
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 1, stderr
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "error" and "SIGTERM" in result["error"], result
    _assert_safe_state(served)
    assert traffic.failures == [], traffic.failures


def test_an_error_mid_canary_turns_traffic_off_and_drops_the_candidate(served, monkeypatch):
    # An unexpected error (a bug, say) cannot be caused for real on purpose: inject one
    # into the canary's polling once the canary has routed traffic to the candidate.
    original = ServerClient.ok
    canary_on = threading.Event()

    def failing_ok(self, method, path, body=None, timeout=None):
        if (method, path) == ("GET", "/admin/stats") and canary_on.is_set():
            raise RuntimeError("injected failure mid-canary")
        answer = original(self, method, path, body, timeout)
        if path == "/admin/traffic" and body and body.get("mode") == "canary":
            canary_on.set()
        return answer

    monkeypatch.setattr(ServerClient, "ok", failing_ok)
    with Traffic(_public(served), _row(served)) as traffic:
        code, result = _deploy(served, _long_canary_spec(), served["smoke_sample_uri"], "inject")
    assert canary_on.is_set()
    assert code == 1 and "injected failure mid-canary" in result["error"], result
    monkeypatch.undo()
    _assert_safe_state(served)
    assert traffic.failures == [], traffic.failures
