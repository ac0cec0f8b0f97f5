"""Closing the loop: from a monitor record to "retrain", "wait" or "ask a person".

The monitor step says what it saw (healthy, drift, decay, stale); this step decides
what to do about it, from the model's history alone, so every worker and every retry
decides the same way and every decision leaves a trace:

* An **incident** is the run of alarm windows from the first alarm to the next healthy
  window (``incident_opened`` .. ``incident_closed`` events). Its id names the retrains
  started for it: the retrain run's reason starts with ``monitor incident <id>:`` and the
  gate's decision event keeps that reason.
* **Trigger** (``retrain_trigger`` event; the DAG then emits the retrain Asset event)
  unless: automatic retraining is paused by a person; a retrain of this incident has no
  decision yet (it is running or queued: it absorbs this alarm); the last trigger is
  younger than ``cooldown_hours``; or the incident is escalated. Each of those is a
  ``retrain_suppressed`` event with the reason, so a storm that did not happen is visible.
* **Escalate** (``escalation`` event, once per incident) when, among the retrains
  triggered for this incident within ``period_days``, K were rejected by the gate or
  promoted while the alarm kept firing (the monitor now judges that very version).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mlops_pack.errors import BadInputError
from mlops_pack.records import write_json
from mlops_pack.retrain_loop import (
    ACKNOWLEDGE,
    ESCALATION_OPTIONS,
    INCIDENT_REASON,
    PAUSE,
    ROLL_BACK,
    incident_reason,
)
from mlops_pack.spec import RetrainPolicy
from mlops_pack.steps.approval import TIMEOUT_DEFAULT, read_json_object
from mlops_pack.steps.context import StepContext

ALARMS = ("drift", "decay", "stale")
LOOP = "loop.json"
METRICS = "loop.prom"


def _load_monitor(path: Path) -> dict[str, Any]:
    record = read_json_object(path, "monitor record")
    # A failed step's result.json wraps its payload in "result"; a record is read as is.
    record = record["result"] if isinstance(record.get("result"), dict) else record
    status = record.get("status")
    if status not in (*ALARMS, "healthy", "insufficient_data"):
        raise BadInputError(
            f"{path}: monitor record: status must be one of healthy, drift, decay, stale, "
            f"insufficient_data; got {status!r}"
        )
    return record


def _at(event: dict[str, str]) -> datetime:
    return datetime.fromisoformat(event["at"])


def _open_incident(events: list[dict[str, str]]) -> str | None:
    state = None
    for event in events:
        if event["kind"] == "incident_opened":
            state = event["incident_id"]
        elif event["kind"] == "incident_closed":
            state = None
    return state


def _paused(events: list[dict[str, str]]) -> dict[str, str] | None:
    """The answer that paused automatic retraining, unless retraining was resumed since."""
    paused = None
    for event in events:
        if event["kind"] == "escalation_answer" and event.get("option") == PAUSE:
            paused = event
        elif event["kind"] == "retrain_resumed":
            paused = None
    return paused


def failed_retrains(
    events: list[dict[str, str]],
    incident: str,
    now: datetime,
    policy: RetrainPolicy,
    champion: str | None,
) -> tuple[list[dict[str, str]], bool]:
    """The incident's gate decisions that did not help, and whether a retrain is in flight.

    Rejected counts; promoted counts once the monitor judges the promoted version (it is
    the champion now) and still raises the alarm. Decisions carry no trigger time, so
    only the newest ones, as many as the incident's triggers within ``period_days``, are
    counted. A trigger without a decision is in flight (running or queued) while it is
    younger than the cooldown plus a day; after that it is taken as lost (a failed run).
    """
    triggers = [
        e for e in events if e["kind"] == "retrain_trigger" and e["incident_id"] == incident
    ]
    recent = [e for e in triggers if _at(e) >= now - timedelta(days=policy.period_days)]
    decisions = []
    for event in events:
        match = (
            INCIDENT_REASON.match(event.get("reason", "")) if event["kind"] == "decision" else None
        )
        if match and match.group(1) == incident:
            decisions.append(event)
    failed = [
        {
            "decision_id": d["decision_id"],
            "verdict": d["verdict"],
            "challenger_version": d.get("challenger_version"),
            "why": "rejected by the gate"
            if d["verdict"] == "reject"
            else "promoted, and the alarm still fires on it",
        }
        for d in decisions[-len(recent) :]
        if recent and (d["verdict"] == "reject" or d.get("challenger_version") == champion)
    ]
    in_flight = bool(triggers) and len(triggers) > len(decisions)
    if in_flight:
        limit = timedelta(hours=policy.cooldown_hours + 24)
        in_flight = now - _at(triggers[-1]) < limit
    return failed, in_flight


def decide(ctx: StepContext, monitor_path: Path, now: datetime | None = None) -> dict[str, Any]:
    """Read the monitor record and the history; record and return what to do."""
    monitor = _load_monitor(monitor_path)
    now = now or datetime.now(UTC)
    spec = ctx.spec
    policy = spec.monitoring.retrain if spec.monitoring else RetrainPolicy()
    model = spec.name
    events = ctx.registry.history(model)
    status = monitor["status"]
    summary = "; ".join(a.get("summary", a.get("kind", "")) for a in monitor.get("alarms", []))
    incident = _open_incident(events)
    record: dict[str, Any] = {
        "schema": "mlops_pack.loop/1",
        "model": model,
        "status": status,
        "incident_id": incident,
        "window": monitor.get("window"),
        "champion_version": monitor.get("champion_version"),
        "failed_retrains": [],
        "asset_extra": None,
        "evidence": "",
        "escalated": False,
        "at": now.isoformat(),
    }

    def finish(action: str, why: str, kind: str | None, **fields: Any) -> dict[str, Any]:
        record.update(action=action, why=why)
        if kind:
            base = {"incident_id": record["incident_id"], "status": status, "at": now.isoformat()}
            record["event_id"] = ctx.registry.append_event(
                model, kind, {**base, "why": why, "dag_run_id": ctx.dag_run_id, **fields}
            )
        write_json(ctx.out_dir / LOOP, record)
        _write_metrics(ctx.out_dir / METRICS, model, action, record)
        return record

    if status not in ALARMS:
        closing = bool(status == "healthy" and incident)
        why = "the alarm cleared" if closing else f"monitor status {status}"
        return finish("none", why, "incident_closed" if closing else None)
    if incident is None:
        incident = f"{now:%Y%m%dT%H%M%S}"
        ctx.registry.append_event(
            model,
            "incident_opened",
            {
                "incident_id": incident,
                "status": status,
                "summary": summary[:500],
                "at": now.isoformat(),
            },
        )
        events = ctx.registry.history(model)
    record["incident_id"] = incident
    failed, pending = failed_retrains(
        events, incident, now, policy, monitor.get("champion_version")
    )
    record["failed_retrains"] = failed
    escalated = next(
        (e for e in events if e["kind"] == "escalation" and e["incident_id"] == incident), None
    )
    if escalated:
        record["escalated"] = True
        return finish("suppressed", "escalated to a person; waiting", "retrain_suppressed")
    if len(failed) >= policy.max_failed_retrains:
        record["escalated"] = True
        record["evidence"] = _evidence(model, incident, status, summary, monitor, failed, policy)
        return finish(
            "escalate",
            f"{len(failed)} retrains for incident {incident} did not help "
            f"(K={policy.max_failed_retrains} within {policy.period_days:g} days)",
            "escalation",
            failed=len(failed),
            summary=summary[:500],
        )
    hold = _hold(events, policy, pending, now)
    if hold:
        return finish("suppressed", hold, "retrain_suppressed")
    record["asset_extra"] = {
        "model": model,
        "incident_id": incident,
        "reason": status,
        "summary": summary[:500],
        "window": monitor.get("window"),
        "champion_version": monitor.get("champion_version"),
        "alarms": monitor.get("alarms", [])[:20],
        "performance": monitor.get("performance"),
        "run_reason": incident_reason(incident, status, summary),
    }
    return finish("trigger", f"{status}: {summary}"[:500], "retrain_trigger", summary=summary[:500])


def _hold(
    events: list[dict[str, str]], policy: RetrainPolicy, pending: bool, now: datetime
) -> str | None:
    """Why no retrain starts now, if one must not: paused, in flight, or cooling down."""
    paused = _paused(events)
    if paused:
        return f"automatic retraining is paused by {paused.get('approver')}"
    if not policy.enabled:
        return "automatic retraining is off (monitoring.retrain.enabled)"
    if pending:
        return "a retrain of this incident is running or queued"
    last = [e for e in events if e["kind"] == "retrain_trigger"]
    if last and now - _at(last[-1]) < timedelta(hours=policy.cooldown_hours):
        return (
            f"cooldown: last retrain triggered at {last[-1]['at']} "
            f"(cooldown {policy.cooldown_hours:g} h)"
        )
    return None


def _evidence(
    model: str,
    incident: str,
    status: str,
    summary: str,
    monitor: dict[str, Any],
    failed: list[dict[str, Any]],
    policy: RetrainPolicy,
) -> str:
    """What the person asked sees first: the alarm, the window, and the retrains that failed."""
    window = monitor.get("window") or {}
    lines = [
        f"**{model}**: incident {incident} ({status}) is still open after {len(failed)} "
        f"retrains (K = {policy.max_failed_retrains}, period {policy.period_days:g} days).",
        "",
        f"Alarm: {summary or status}",
        f"Window: {window.get('start')} .. {window.get('end')}, {window.get('rows')} rows, "
        f"{window.get('labelled_rows')} labelled; champion v{monitor.get('champion_version')}",
    ]
    performance = monitor.get("performance")
    if performance:
        lines.append(
            f"Performance: {performance.get('metric')} {performance.get('value')} "
            f"[{performance.get('ci_low')}, {performance.get('ci_high')}] vs reference "
            f"{performance.get('reference')} (tolerance {performance.get('tolerance')})"
        )
    lines += ["", "Retrains:"]
    lines += [
        f"- decision {f['decision_id']}: v{f['challenger_version']} {f['why']}" for f in failed
    ]
    lines += [
        "",
        f"{ACKNOWLEDGE}: keep the model, keep waiting (no retrains for this incident). "
        f"{PAUSE}: no automatic retrains until resumed (`mlops-pack resume-retraining`). "
        f"{ROLL_BACK}: serve the previous champion.",
    ]
    return "\n".join(lines)


def _write_metrics(path: Path, model: str, action: str, record: dict[str, Any]) -> None:
    """Prometheus text for alerting: an open escalation, failed retrains, the last action."""
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    registry = CollectorRegistry()
    escalated = Gauge(
        "mlops_pack_loop_escalated",
        "1 while the monitor waits for a person (retraining did not help)",
        ["model"],
        registry=registry,
    )
    escalated.labels(model).set(1 if record.get("escalated") else 0)
    failed = Gauge(
        "mlops_pack_loop_failed_retrains",
        "Retrains of the open incident that did not help",
        ["model"],
        registry=registry,
    )
    failed.labels(model).set(len(record.get("failed_retrains") or []))
    last = Gauge(
        "mlops_pack_loop_action",
        "1 for the action the last monitor run took",
        ["model", "action"],
        registry=registry,
    )
    for name in ("none", "trigger", "suppressed", "escalate"):
        last.labels(model, name).set(1 if name == action else 0)
    write_to_textfile(str(path), registry)


def record_escalation_answer(
    ctx: StepContext, response_path: Path, loop_path: Path
) -> dict[str, Any]:
    """Record a person's answer to an escalation (every option, the timeout default too)."""
    response = read_json_object(response_path, "escalation response")
    loop = read_json_object(loop_path, "loop record")
    options = response.get("chosen_options")
    if not isinstance(options, list) or len(options) != 1 or options[0] not in ESCALATION_OPTIONS:
        raise BadInputError(
            f"{response_path}: chosen_options must be exactly one of "
            f"{list(ESCALATION_OPTIONS)}, got {options!r}"
        )
    if not loop.get("incident_id"):
        raise BadInputError(f"{loop_path}: loop record: incident_id is missing")
    user = response.get("responded_by_user") or {}
    approver = user.get("name") or user.get("id")
    event = {
        "incident_id": loop["incident_id"],
        "option": options[0],
        "approver": str(approver) if approver else TIMEOUT_DEFAULT,
        "by_timeout": not approver,
        "responded_at": str(response.get("responded_at") or ""),
        "dag_run_id": ctx.dag_run_id,
        "at": datetime.now(UTC).isoformat(),
    }
    event_id = ctx.registry.append_event(ctx.spec.name, "escalation_answer", event)
    record = {
        "schema": "mlops_pack.escalation_answer/1",
        "model": ctx.spec.name,
        "event_id": event_id,
        "roll_back": options[0] == ROLL_BACK,
        **event,
    }
    write_json(ctx.out_dir / "escalation_answer.json", record)
    return record


def resume_retraining(ctx: StepContext, reason: str) -> dict[str, Any]:
    """Lift a pause a person set when answering an escalation."""
    event = {"reason": reason, "dag_run_id": ctx.dag_run_id, "at": datetime.now(UTC).isoformat()}
    event_id = ctx.registry.append_event(ctx.spec.name, "retrain_resumed", event)
    return {"model": ctx.spec.name, "event_id": event_id, **event}
