"""`make up`'s Airflow driven through its REST API with the official Python client.

The stack reads a test include dir: churn (served), churn_gated (human approval, not
served) and a spec with a typo, which must not take the other DAGs down.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

import airflow_client.client as ac
import pytest
import yaml
from airflow_stack import answer_hitl, make_up, token
from support import ROOT, free_port, open_dir, run_to_end, xcom_value

PORT = free_port()
SERVER_PORT = free_port()  # never collide with a user's `make up` or another test run
BASE = f"http://127.0.0.1:{PORT}"
DAG_ID = "mlops_retrain__churn"
GATED = "mlops_retrain__churn_gated"
BROKEN = "mlops_retrain__zz_broken"


def _include_dir() -> Path:
    include = open_dir("mlops-stack-include-")
    shutil.copytree(ROOT / "include" / "expectations", include / "expectations")
    (include / "models").mkdir()
    churn = yaml.safe_load((ROOT / "include/models/churn.yaml").read_text())
    (include / "models" / "churn.yaml").write_text(yaml.safe_dump(churn))
    gated = {**churn, "name": "churn_gated"}
    del gated["serving"]
    gated["gate"] = {**churn["gate"], "approval": {"required": True, "timeout_hours": 1}}
    (include / "models" / "churn_gated.yaml").write_text(yaml.safe_dump(gated))
    broken = {**churn, "name": "zz_broken"}
    broken["gate"] = {**churn["gate"], "primary": {**churn["gate"]["primary"], "margn": 0.01}}
    (include / "models" / "zz_broken.yaml").write_text(yaml.safe_dump(broken))
    for item in [include, *include.rglob("*")]:
        item.chmod(0o755 if item.is_dir() else 0o644)
    return include


@pytest.fixture(scope="module")
def stack():
    extra = {"MLOPS_PACK_SERVER_PORT_BASE": str(SERVER_PORT)}  # churn, the one served spec
    with make_up(_include_dir(), PORT, "mlops-stack-", **extra) as (state, up):
        assert "admin password:" in up.stdout
        assert "DAGs are unpaused and run when triggered" in up.stdout
        # The broken spec is reported and skipped; make up still comes up.
        assert "zz_broken.yaml: gate.primary.margn" in up.stdout
        yield {
            "state": state,
            "passwords": json.loads((state / "passwords.json").read_text()),
            "up": up.stdout,
        }


def _token(user: str, password: str) -> str:
    return token(BASE, user, password)


def _client(token: str | None) -> ac.ApiClient:
    return ac.ApiClient(ac.Configuration(host=BASE, access_token=token))


def _wait_for_dag(api: ac.ApiClient, dag_id: str = DAG_ID):
    for _ in range(90):
        try:
            return ac.DAGApi(api).get_dag(dag_id)
        except ac.ApiException:
            time.sleep(2)
    raise AssertionError(f"{dag_id} never appeared")


def _run_to_end(api: ac.ApiClient, run_id: str, timeout: float = 900, dag_id: str = DAG_ID) -> str:
    return run_to_end(api, dag_id, run_id, timeout)


def _trigger(api: ac.ApiClient, dag_id: str, conf: dict | None) -> str:
    body = ac.TriggerDAGRunPostBody(logical_date=None, conf=conf)
    return ac.DagRunApi(api).trigger_dag_run(dag_id, body).dag_run_id


def _task_states(api: ac.ApiClient, dag_id: str, run_id: str) -> dict[str, str]:
    listed = ac.TaskInstanceApi(api).get_task_instances(dag_id, run_id).task_instances
    return {ti.task_id: str(ti.state.value) if ti.state else "none" for ti in listed}


def test_rest_api_auth_trigger_poll_and_decision(stack):
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{BASE}/api/v2/dags", timeout=10)
    assert info.value.code == 401

    admin = _client(_token("admin", stack["passwords"]["admin"]))
    viewer = _client(_token("viewer", stack["passwords"]["viewer"]))
    # make up leaves the pack's DAGs unpaused: a triggered run starts without a click.
    assert _wait_for_dag(admin).is_paused is False
    # A viewer can read but not trigger.
    ac.DAGApi(viewer).get_dag(DAG_ID)
    with pytest.raises(ac.ApiException) as denied:
        ac.DagRunApi(viewer).trigger_dag_run(DAG_ID, ac.TriggerDAGRunPostBody(logical_date=None))
    assert denied.value.status == 403
    # conf outside the Params schema is refused at the door.
    with pytest.raises(ac.ApiException) as bad:
        ac.DagRunApi(admin).trigger_dag_run(
            DAG_ID, ac.TriggerDAGRunPostBody(logical_date=None, conf={"gate_margin": 5})
        )
    assert bad.value.status == 400

    # Two runs triggered at once for one model: both end green, one promotes, and the
    # alias history is one consistent chain. They train on the same batch, so after one
    # promotes, the other's identical model ties and is rejected.
    conf = {"data_path": "churn/churn_month_01.csv", "reason": "REST test"}
    runs = [
        ac.DagRunApi(admin)
        .trigger_dag_run(DAG_ID, ac.TriggerDAGRunPostBody(logical_date=None, conf=conf))
        .dag_run_id
        for _ in range(2)
    ]
    states = [_run_to_end(admin, run_id) for run_id in runs]
    assert states == ["success", "success"]
    # Schedules are off in make up's stack: no scheduled run joined the manual ones.
    listed = ac.DagRunApi(admin).get_dag_runs(DAG_ID).dag_runs
    assert sorted(r.dag_run_id for r in listed) == sorted(runs)
    assert {str(r.run_type.value) for r in listed} == {"manual"}
    verdicts = [xcom_value(admin, DAG_ID, "gate", run_id)["verdict"] for run_id in runs]
    assert sorted(verdicts) == ["promote", "reject"]

    os.environ["MLOPS_PACK_HOME"] = str(stack["state"] / "store")
    try:
        from mlops_pack.registry import Registry

        promotions = Registry().history("churn", "promotion")
    finally:
        os.environ.pop("MLOPS_PACK_HOME")
    assert [(e.get("from_version"), e["to_version"]) for e in promotions] == [(None, "1")]

    # make up's model server serves what was promoted; a prediction as in the README.
    key = (stack["state"] / "secrets" / "churn" / "prediction_key").read_text()
    row = {
        "tenure_months": 12,
        "monthly_charges": 70.5,
        "total_charges": 800,
        "support_calls": 2,
        "age": 40,
        "contract": "month_to_month",
        "plan": "basic",
        "payment_method": "card",
        "paperless_billing": "yes",
        "region": "north",
    }
    request = urllib.request.Request(
        f"http://127.0.0.1:{SERVER_PORT}/predict",
        method="POST",
        data=json.dumps({"rows": [row]}).encode(),
        headers={"Authorization": f"Bearer {key}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = json.loads(response.read())
    assert answer["version"] == "1" and answer["slot"] == "stable" and answer["labels"][0] in (0, 1)


def test_form_and_api_agree_and_unknown_conf_keys_fail_the_run(stack):
    admin = _client(_token("admin", stack["passwords"]["admin"]))
    _wait_for_dag(admin)
    # What the trigger form renders from: every field may be empty (not required), and
    # gate_mode's empty choice carries a label, not "null".
    params = ac.DAGApi(admin).get_dag_details(DAG_ID).params
    for name in ("data_path", "reason", "gate_mode", "gate_margin", "gate_confidence"):
        assert "null" in params[name]["schema"]["type"], name
    assert params["gate_mode"]["schema"]["values_display"]["null"].startswith("spec default")
    # REST takes the same empty values the form sends; a misspelt key fails the run at
    # run_overrides, before any data is read or any model is trained.
    conf = {"reason": None, "gate_mode": None, "gate_margn": 0.01}
    run_id = _trigger(admin, DAG_ID, conf)
    assert _run_to_end(admin, run_id, timeout=300) == "failed"
    states = _task_states(admin, DAG_ID, run_id)
    assert states["run_overrides"] == "failed"
    assert states["validate"] == "upstream_failed" and states["train"] == "upstream_failed"


def test_a_broken_spec_is_visible_and_the_other_dags_stay(stack):
    admin = _client(_token("admin", stack["passwords"]["admin"]))
    broken = _wait_for_dag(admin, BROKEN)
    assert "zz_broken.yaml" in broken.description
    assert "gate.primary.margn" in broken.description
    assert "broken-spec" in [tag.name for tag in broken.tags]
    for dag_id in (DAG_ID, GATED, "mlops_rollback"):
        _wait_for_dag(admin, dag_id)
    assert ac.ImportErrorApi(admin).get_import_errors().total_entries == 0


def _answer(api: ac.ApiClient, run_id: str, option: str) -> None:
    """Answer the approval request once the run asks, until it is taken."""

    def gate_not_failed() -> None:
        assert _task_states(api, GATED, run_id).get("gate") != "failed", run_id

    answer_hitl(api, GATED, run_id, "approve", option, check=gate_not_failed)


def test_approval_answers_are_recorded_end_to_end(stack):
    admin = _client(_token("admin", stack["passwords"]["admin"]))
    _wait_for_dag(admin, GATED)
    # First run (no champion: the gate promotes) approved; no reason given, as REST allows.
    approved = _trigger(admin, GATED, {"data_path": "churn/churn_month_01.csv"})
    _answer(admin, approved, "Approve")
    assert _run_to_end(admin, approved, dag_id=GATED) == "success"
    assert _task_states(admin, GATED, approved)["promote"] == "success"
    # Second run passes a lenient gate, and a person rejects it: nothing is promoted.
    lenient = {"gate_mode": "non_inferiority", "gate_margin": 0.2, "reason": "reject me"}
    rejected = _trigger(admin, GATED, {"data_path": "churn/churn_month_02.csv", **lenient})
    _answer(admin, rejected, "Reject")
    assert _run_to_end(admin, rejected, dag_id=GATED) == "success"
    states = _task_states(admin, GATED, rejected)
    assert states["record_approval"] == "success"
    assert states["approved"] == "success" and states["promote"] == "skipped"

    decisions = [
        xcom_value(admin, GATED, "gate", run)["decision_id"] for run in (approved, rejected)
    ]
    os.environ["MLOPS_PACK_HOME"] = str(stack["state"] / "store")
    try:
        from mlops_pack.registry import Registry

        events = Registry().history("churn_gated", "approval")
        promotions = Registry().history("churn_gated", "promotion")
    finally:
        os.environ.pop("MLOPS_PACK_HOME")
    assert [(e["option"], e["approver"], e["decision_id"], e["dag_run_id"]) for e in events] == [
        ("Approve", "admin", decisions[0], approved),
        ("Reject", "admin", decisions[1], rejected),
    ]
    assert all(e["responded_at"] for e in events)
    assert [(p["to_version"], p.get("approver")) for p in promotions] == [("1", "admin")]


def test_models_page_in_a_browser(stack):
    """The plugin in a real Chromium: log in, Models, a model, a rejected decision's
    report; the gate task's extra link; a viewer reads; no login, no data (401)."""
    from browser import browser, login, shot

    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{BASE}/mlops-pack/api/models", timeout=10)
    assert info.value.code == 401
    admin = _client(_token("admin", stack["passwords"]["admin"]))
    runs = ac.DagRunApi(admin).get_dag_runs(DAG_ID).dag_runs
    gates = {
        r.dag_run_id: xcom_value(admin, DAG_ID, "gate", r.dag_run_id)
        for r in runs
        if _task_states(admin, DAG_ID, r.dag_run_id).get("gate") == "success"
    }
    rejected = next(run for run, d in gates.items() if d["verdict"] == "reject")
    decision = gates[rejected]
    # The gate's XCom leads with the verdict and its reason.
    assert list(decision)[:3] == ["verdict", "summary", "checks"]
    failed = [c["name"] for c in decision["checks"] if c["verdict"] == "fail"]
    assert failed
    # Its log leads with the summary (it starts with the verdict) and prints the table once.
    request = urllib.request.Request(
        f"{BASE}/api/v2/dags/{DAG_ID}/dagRuns/{rejected}/taskInstances/gate/logs/1",
        headers={"Authorization": f"Bearer {admin.configuration.access_token}",
                 "Accept": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        lines = [str(e.get("event", "")) for e in json.loads(response.read())["content"]]
    verdict = [i for i, line in enumerate(lines) if line.strip() == decision["summary"]]
    header = [i for i, line in enumerate(lines) if "value is" in line and "verdict" in line]
    assert len(verdict) == 1 and len(header) == 1 and verdict[0] < header[0], lines

    with browser() as chromium:
        context, page = login(chromium, BASE, "admin", stack["passwords"]["admin"])
        models = page.get_by_role("link", name="Models").first
        models.wait_for(timeout=60_000)
        models.click()
        page.wait_for_url("**/plugin/mlops-models", timeout=60_000)
        frame = page.frame_locator("iframe")
        frame.get_by_role("link", name="churn", exact=True).wait_for(timeout=60_000)
        shot(page, "01-models")
        frame.get_by_role("link", name="churn", exact=True).click()
        frame.get_by_text("Timeline").wait_for()
        shot(page, "02-model-churn")
        frame.locator(f'a[href$="/decisions/{decision["decision_id"]}"]').first.click()
        report = frame.locator("body")
        frame.get_by_text("Failed checks:").wait_for()
        text = report.inner_text()
        assert "REJECT" in text and decision["summary"] in text
        for name in failed:
            assert name in text
        assert frame.locator("svg").count() >= 3  # curves and the bootstrap plot
        shot(page, "03-rejected-report")

        # The gate task's extra link, as the task instance page shows it.
        request = urllib.request.Request(
            f"{BASE}/api/v2/dags/{DAG_ID}/dagRuns/{rejected}/taskInstances/gate/links",
            headers={"Authorization": f"Bearer {admin.configuration.access_token}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            links = json.loads(response.read())
        href = links["extra_links"]["Comparison report"]
        assert href.endswith(f"/mlops-pack/models/churn/decisions/{decision['decision_id']}")
        # The Details tab of the task instance shows it; same origin, so it opens in place.
        task_page = context.new_page()
        task = f"{BASE}/dags/{DAG_ID}/runs/{quote(rejected, safe='')}/tasks/gate/details"
        task_page.goto(task, wait_until="networkidle")
        link = task_page.get_by_role("link", name="Comparison report")
        link.wait_for(timeout=60_000)
        shot(task_page, "04-gate-task-links")
        link.click()
        task_page.wait_for_url(f"**/decisions/{decision['decision_id']}")
        assert "Failed checks:" in task_page.locator("body").inner_text()
        shot(task_page, "05-gate-link-report")
        context.close()

        # A viewer reads the same pages but cannot trigger (Airflow's own 403).
        context, page = login(chromium, BASE, "viewer", stack["passwords"]["viewer"])
        page.goto(f"{BASE}/mlops-pack/models/churn")
        assert "Timeline" in page.locator("body").inner_text()
        shot(page, "06-viewer-model")
        denied = page.request.post(
            f"{BASE}/api/v2/dags/{DAG_ID}/dagRuns", data={"logical_date": None}
        )
        assert denied.status == 403
        context.close()
