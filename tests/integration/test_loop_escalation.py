"""Labels that turn random: retrains cannot help, so after K rejections a person is asked.

Monitor records are written with known content (the monitor step's contract); the
gate's rejections are its history events; every decision goes through the real MLflow
history and the real CLI.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from support import churn_spec_copy, run_cli

T0 = datetime(2026, 5, 1, 6, tzinfo=UTC)


def _policy(raw: dict) -> None:
    raw["monitoring"] = {
        "retrain": {"cooldown_hours": 6, "max_failed_retrains": 2, "period_days": 7}
    }


def _monitor(tmp_path, hours: float, status: str = "decay") -> str:
    end = T0 + timedelta(hours=hours)
    record = {  # as the monitor step writes its result.json
        "step": "monitor",
        "exit_code": 0,
        "error": None,
        "status": status,
        "alarms": []
        if status == "healthy"
        else [{"kind": status, "summary": "roc_auc 0.52 [0.49, 0.55] < 0.80 - 0.03"}],
        "window": {
            "start": (end - timedelta(hours=24)).isoformat(),
            "end": end.isoformat(),
            "rows": 5000,
            "labelled_rows": 4000,
            "requests": 50,
        },
        "model": "churn",
        "champion_version": "1",
        "features": {},
        "performance": {
            "metric": "roc_auc",
            "value": 0.52,
            "ci_low": 0.49,
            "ci_high": 0.55,
            "reference": 0.8,
            "tolerance": 0.03,
        },
        "skipped": [],
    }
    path = tmp_path / f"monitor-{hours}.json"
    path.write_text(json.dumps(record))
    return str(path)


def _decide(spec, tmp_path, hours: float, status: str = "decay") -> dict:
    out = tmp_path / f"decide-{hours}"
    code, result = run_cli(
        "decide-retrain",
        "--spec",
        spec,
        "--monitor",
        _monitor(tmp_path, hours, status),
        "--now",
        (T0 + timedelta(hours=hours)).isoformat(),
        "--out",
        out,
    )
    assert code == 0, result
    return result["result"]


def _gate_rejects(registry, reason: str, version: str) -> str:
    """The ``decision`` event the gate appends when it rejects a challenger (decide.py).

    Written directly: a real retrain costs minutes on a loaded 2-core machine, and what
    this test is about starts at the history event (the gate itself is tested elsewhere).
    """
    decision_id = f"d-{version}"
    registry.append_event(
        "churn",
        "decision",
        {
            "decision_id": decision_id,
            "verdict": "reject",
            "challenger_version": version,
            "champion_version": "1",
            "holdout_sha256": "0" * 64,
            "dag_run_id": f"asset_triggered__{version}",
            "reason": reason,
        },
    )
    return decision_id


def test_random_labels_escalate_after_k_rejected_retrains(store, registry, tmp_path):
    spec = churn_spec_copy(tmp_path, _policy)
    first = _decide(spec, tmp_path, 0)
    assert first["action"] == "trigger" and first["asset_extra"]["reason"] == "decay"
    assert first["asset_extra"]["window"]["labelled_rows"] == 4000
    incident = first["incident_id"]
    # The retrain is queued or running: a new alarm is absorbed, not a second trigger.
    assert _decide(spec, tmp_path, 1)["why"] == "a retrain of this incident is running or queued"
    rejected = [_gate_rejects(registry, first["asset_extra"]["run_reason"], "2")]
    cooling = _decide(spec, tmp_path, 2)
    assert cooling["action"] == "suppressed" and cooling["why"].startswith("cooldown"), cooling
    second = _decide(spec, tmp_path, 7)
    assert second["action"] == "trigger" and second["incident_id"] == incident
    rejected.append(_gate_rejects(registry, second["asset_extra"]["run_reason"], "3"))

    escalation = _decide(spec, tmp_path, 14)
    assert escalation["action"] == "escalate", escalation
    assert [f["decision_id"] for f in escalation["failed_retrains"]] == rejected
    assert "roc_auc 0.52 [0.49, 0.55]" in escalation["evidence"]
    assert all(d in escalation["evidence"] for d in rejected)
    metrics = (tmp_path / "decide-14" / "loop.prom").read_text()
    assert 'mlops_pack_loop_escalated{model="churn"} 1.0' in metrics
    assert 'mlops_pack_loop_failed_retrains{model="churn"} 2.0' in metrics
    # Escalated: later alarms of the incident wait for the person, past any cooldown.
    assert _decide(spec, tmp_path, 40)["why"] == "escalated to a person; waiting"

    response = tmp_path / "response.json"
    response.write_text(
        json.dumps(
            {
                "chosen_options": ["Pause retraining"],
                "responded_by_user": {"id": "7", "name": "ops-oncall"},
                "responded_at": "2026-05-02T23:00:00+00:00",
            }
        )
    )
    code, answer = run_cli(
        "record-escalation",
        "--spec",
        spec,
        "--response",
        response,
        "--loop",
        tmp_path / "decide-14" / "loop.json",
        "--out",
        tmp_path / "answer",
    )
    assert code == 0 and answer["result"]["incident_id"] == incident

    assert _decide(spec, tmp_path, 48, "healthy")["why"] == "the alarm cleared"
    # A new incident while paused: recorded, not triggered, until a person resumes.
    paused = _decide(spec, tmp_path, 60, "drift")
    assert paused["incident_id"] != incident
    assert paused["why"] == "automatic retraining is paused by ops-oncall"
    code, _ = run_cli(
        "resume-retraining", "--spec", spec, "--reason", "labels fixed", "--out", tmp_path / "rs"
    )
    assert code == 0
    assert _decide(spec, tmp_path, 61, "drift")["action"] == "trigger"

    kinds = [e["kind"] for e in registry.history("churn")]
    assert kinds.count("retrain_trigger") == 3  # no storm: 8 alarm windows, 3 triggers
    assert kinds.count("escalation") == 1 and kinds.count("escalation_answer") == 1
    assert kinds.count("retrain_suppressed") == 4
    answer_event = next(e for e in registry.history("churn", "escalation_answer"))
    assert answer_event["option"] == "Pause retraining"
    assert answer_event["approver"] == "ops-oncall"


def test_a_bad_monitor_record_is_bad_input(store, tmp_path):
    spec = churn_spec_copy(tmp_path, _policy)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"status": "on fire"}))
    code, result = run_cli(
        "decide-retrain", "--spec", spec, "--monitor", bad, "--out", tmp_path / "o"
    )
    assert code == 2
    assert "status must be one of" in result["error"] and str(bad) in result["error"]


def test_a_now_without_a_zone_is_bad_input(store, tmp_path):
    """Every time the loop compares carries a zone: a naive ``--now`` is refused up front.
    (It used to pass on an empty history and fail as an internal error, comparing naive
    and aware times, once the history held a retrain trigger.)"""
    spec = churn_spec_copy(tmp_path, _policy)
    code, result = run_cli(
        "decide-retrain", "--spec", spec, "--monitor", _monitor(tmp_path, 1),
        "--now", "2026-11-30T06:00:00", "--out", tmp_path / "o",
    )  # fmt: skip
    assert code == 2, result
    assert "--now '2026-11-30T06:00:00': expected an ISO-8601 time with a zone" in result["error"]
