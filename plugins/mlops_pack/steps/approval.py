"""Record the answer to an approval request (a person's, or the timeout default) in history.

The decision record is written by the gate before anyone is asked, and it is
append-only; so the answer is its own history event that names the decision it
answered. Every answer is recorded, a rejection as much as an approval.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlops_pack.errors import BadInputError
from mlops_pack.records import write_json
from mlops_pack.steps.context import StepContext

APPROVE, REJECT = "Approve", "Reject"
TIMEOUT_DEFAULT = "timeout-default"  # the approver named when nobody answered in time
APPROVAL = "approval.json"


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInputError(f"{path}: {what} file not found") from None
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{path}: {what} is not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise BadInputError(f"{path}: {what} must be a JSON object")
    return data


def record_approval(ctx: StepContext, response_path: Path, decision_path: Path) -> dict[str, Any]:
    """Append an ``approval`` event: option, approver, when, and the decision it answered."""
    response = read_json_object(response_path, "approval response")
    decision = read_json_object(decision_path, "decision")
    options = response.get("chosen_options")
    if not isinstance(options, list) or len(options) != 1 or options[0] not in (APPROVE, REJECT):
        raise BadInputError(
            f"{response_path}: chosen_options must be exactly one of "
            f"[{APPROVE!r}, {REJECT!r}], got {options!r}"
        )
    for field in ("decision_id", "challenger_version"):
        if not decision.get(field):
            raise BadInputError(f"{decision_path}: decision: {field} is missing")
    if decision.get("model") not in (None, ctx.spec.name):
        raise BadInputError(
            f"{decision_path}: decision is for model {decision.get('model')!r}, "
            f"not {ctx.spec.name!r}"
        )
    user = response.get("responded_by_user") or {}
    approver = user.get("name") or user.get("id")
    option = options[0]
    event = {
        "decision_id": decision["decision_id"],
        "option": option,
        "approver": str(approver) if approver else TIMEOUT_DEFAULT,
        "by_timeout": not approver,
        "responded_at": str(response.get("responded_at") or ""),
        "challenger_version": str(decision["challenger_version"]),
        "champion_version": decision.get("champion_version"),
        "dag_run_id": ctx.dag_run_id,
    }
    event_id = ctx.registry.append_event(ctx.spec.name, "approval", event)
    record = {
        "schema": "mlops_pack.approval/1",
        "model": ctx.spec.name,
        "approved": option == APPROVE,
        "event_id": event_id,
        **event,
    }
    write_json(ctx.out_dir / APPROVAL, record)
    return record
