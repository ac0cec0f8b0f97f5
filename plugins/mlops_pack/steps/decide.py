"""The gate and promotion steps: apply the policy, record the decision, move the alias."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mlops_pack.errors import BadInputError, HoldoutMismatchError
from mlops_pack.gate import decide
from mlops_pack.records import DecisionRecord, EvaluationRecord, to_json, write_json
from mlops_pack.registry import TAG
from mlops_pack.steps import holdout as holdouts
from mlops_pack.steps.context import StepContext
from mlops_pack.steps.served import ServedSwitch

DECISION = "decision.json"
REPORT = "report.html"
PROMOTION = "promotion.json"


def _read(path: Path, model: type, what: str):
    try:
        return model.model_validate_json(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInputError(f"{path}: {what} file not found") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise BadInputError(f"{path}: not a valid {what} record: {where}: {first['msg']}") from None


def gate(ctx: StepContext, evaluation_location: str | Path) -> DecisionRecord:
    evaluation_path = ctx.fetch(evaluation_location)
    evaluation: EvaluationRecord = _read(evaluation_path, EvaluationRecord, "evaluation")
    if evaluation.model != ctx.spec.name:
        raise BadInputError(
            f"{evaluation_path}: evaluation is for model {evaluation.model!r}, "
            f"not {ctx.spec.name!r}"
        )
    challenger = ctx.registry.version(ctx.spec.name, evaluation.challenger.version)
    pin = holdouts.for_version(ctx, challenger.tags)
    decision = decide(
        evaluation,
        ctx.spec.gate,
        pinned_holdout_sha256=pin.sha256 if pin else None,
        dag_run_id=ctx.dag_run_id,
        reason=ctx.overrides.reason,
    )
    path = write_json(ctx.out_dir / DECISION, decision)
    registry = ctx.registry
    registry.client.set_model_version_tag(
        ctx.spec.name, challenger.version, f"{TAG}verdict", decision.verdict
    )
    registry.client.set_model_version_tag(
        ctx.spec.name, challenger.version, f"{TAG}decision_id", decision.decision_id
    )
    registry.client.set_model_version_tag(
        ctx.spec.name, challenger.version, f"{TAG}summary", decision.summary[:5000]
    )
    report_uri = None
    if challenger.run_id:
        folder = f"decisions/{decision.decision_id}"
        registry.client.log_artifact(challenger.run_id, str(path), folder)
        report = _write_report(decision, evaluation, ctx.out_dir / REPORT)
        if report is not None:
            registry.client.log_artifact(challenger.run_id, str(report), folder)
            report_uri = f"{folder}/{REPORT}"
    registry.append_event(
        ctx.spec.name,
        "decision",
        {
            "decision_id": decision.decision_id,
            "verdict": decision.verdict,
            "challenger_version": decision.challenger_version,
            "champion_version": decision.champion_version,
            "holdout_sha256": decision.holdout_sha256,
            "dag_run_id": ctx.dag_run_id,
            # The monitor counts the retrains of an incident by it (steps/loop.py).
            "reason": decision.reason or None,
            "summary": decision.summary[:500],
            # artifact path on the challenger's run; the Models page serves it from there
            "report": report_uri,
        },
    )
    return decision


def _write_report(
    decision: DecisionRecord, evaluation: EvaluationRecord, path: Path
) -> Path | None:
    """The comparison report beside the decision; a plotting failure never blocks a decision."""
    from mlops_pack.steps.comparison_report import render

    try:
        text = render(decision, evaluation)
    except Exception as exc:  # the verdict stands without its plots
        print(
            f"warning: comparison report not written: {type(exc).__name__}: {exc}", file=sys.stderr
        )
        return None
    path.write_text(text, encoding="utf-8")
    return path


def promote(
    ctx: StepContext,
    decision_path: Path,
    approver: str | None = None,
    switch: ServedSwitch | None = None,
) -> dict[str, Any]:
    """Move the alias (and, with ``switch``, the served model) to the gate's challenger."""
    decision: DecisionRecord = _read(decision_path, DecisionRecord, "decision")
    name = ctx.spec.name
    if decision.model != name:
        raise BadInputError(
            f"{decision_path}: decision is for model {decision.model!r}, not {name!r}"
        )
    if decision.verdict != "promote":
        raise BadInputError(
            f"{decision_path}: the gate rejected v{decision.challenger_version}; "
            f"nothing to promote ({decision.summary})"
        )
    if decision.approval_required and not approver:
        raise BadInputError(
            f"model {name}: the spec requires approval before promotion "
            "(gate.approval.required); pass the approver"
        )
    challenger = ctx.registry.version(name, decision.challenger_version)
    pin = holdouts.for_version(ctx, challenger.tags)
    if pin is None or pin.sha256 != decision.holdout_sha256:
        raise HoldoutMismatchError(
            f"model {name}: the holdout was refreshed since this decision "
            f"({decision.holdout_sha256[:12]} -> {pin.sha256[:12] if pin else 'none'}); re-evaluate"
        )
    hooks: dict[str, Any] = {}
    if switch is not None:
        hooks = {"serve": lambda: switch.serve(challenger), "unserve": _unserve(switch)}
    result = ctx.registry.promote(
        name,
        decision.challenger_version,
        decision.champion_version,
        decision.decision_id,
        {
            "dag_run_id": ctx.dag_run_id,
            "approver": approver,
            "holdout_sha256": decision.holdout_sha256,
        },
        **hooks,
    )
    record = {
        "schema": "mlops_pack.promotion/1",
        "model": name,
        "outcome": result.outcome,
        "champion": result.champion,
        "previous": result.previous,
        "decision_id": decision.decision_id,
        "approver": approver,
        "served": result.served,
    }
    write_json(ctx.out_dir / PROMOTION, record)
    return record


def decision_json(decision: DecisionRecord) -> dict[str, Any]:
    return json.loads(to_json(decision))


def rollback(
    ctx: StepContext,
    reason: str,
    to_version: str | None = None,
    switch: ServedSwitch | None = None,
) -> dict[str, Any]:
    """Move the alias (and, with ``switch``, the served model) back, with a reason."""
    if not reason.strip():
        raise BadInputError("a rollback needs a reason")
    hooks = {"serve": switch.serve, "unserve": _unserve(switch)} if switch is not None else {}
    result = ctx.registry.rollback(ctx.spec.name, to_version, reason, ctx.dag_run_id, **hooks)
    write_json(ctx.out_dir / "rollback.json", result)
    return result


def _unserve(switch: ServedSwitch):
    return lambda served: switch.restore(served.get("before"))
