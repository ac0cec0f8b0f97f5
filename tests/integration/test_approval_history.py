"""Every answer to an approval request is a history event that `mlops-pack history` shows."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from support import CHURN_SPEC, ROOT, run_cli

DECISION = {"decision_id": "dec-42", "model": "churn", "challenger_version": "2",
            "champion_version": "1", "verdict": "promote"}  # fmt: skip


def _answer(tmp_path, name: str, option: str, user: dict | None) -> tuple[int, dict]:
    response = {
        "chosen_options": [option],
        "params_input": {},
        "responded_at": "2026-11-30T10:00:00+00:00",
        "responded_by_user": user,
    }
    (tmp_path / f"{name}.json").write_text(json.dumps(response))
    (tmp_path / "decision.json").write_text(json.dumps(DECISION))
    return run_cli(
        "record-approval", "--spec", CHURN_SPEC, "--response", tmp_path / f"{name}.json",
        "--decision", tmp_path / "decision.json", "--run-id", f"run-{name}",
        "--out", tmp_path / name,
    )  # fmt: skip


def test_approve_reject_and_timeout_are_recorded_and_shown(store, tmp_path):
    assert _answer(tmp_path, "yes", "Approve", {"id": "u1", "name": "alice"})[0] == 0
    code, result = _answer(tmp_path, "no", "Reject", {"id": "u2", "name": "bob"})
    assert code == 0 and result["result"]["approved"] is False
    code, result = _answer(tmp_path, "late", "Reject", None)  # the timeout default
    assert code == 0 and result["result"]["approver"] == "timeout-default"
    assert result["result"]["by_timeout"] is True

    from mlops_pack.registry import Registry

    events = Registry().history("churn", "approval")
    assert [(e["option"], e["approver"], e["decision_id"], e["dag_run_id"]) for e in events] == [
        ("Approve", "alice", "dec-42", "run-yes"),
        ("Reject", "bob", "dec-42", "run-no"),
        ("Reject", "timeout-default", "dec-42", "run-late"),
    ]
    shown = subprocess.run(
        [sys.executable, "-m", "mlops_pack.cli", "history", "--spec", str(CHURN_SPEC)],
        capture_output=True, text=True, check=True, cwd=ROOT, env=dict(os.environ),
    ).stdout  # fmt: skip
    lines = [line for line in shown.splitlines() if line.startswith("approval")]
    assert len(lines) == 3
    assert "Reject by bob at 2026-11-30T10:00:00+00:00 for decision dec-42" in lines[1]
    assert "Reject by timeout-default" in lines[2] and "by_timeout=True" in lines[2]


def test_an_answer_outside_the_options_is_bad_input(store, tmp_path):
    code, result = _answer(tmp_path, "odd", "Maybe", {"id": "u1", "name": "alice"})
    assert code == 2
    assert "odd.json: chosen_options must be exactly one of" in result["error"]
    from mlops_pack.registry import Registry

    assert Registry().history("churn", "approval") == []
