"""Builds one retrain DAG per model spec, and the rollback DAG.

Only the spec files are read at parse time (small local YAML, parsed by pydantic); no
pandas, scikit-learn, GX or mlflow is imported, so DAG files parse in milliseconds.
"""

from __future__ import annotations

import logging
import os
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Asset, AssetOrTimeSchedule, CronTriggerTimetable, Param, task

from mlops_pack.airflow.approval import RecordApprovalOperator
from mlops_pack.airflow.hooks import server_conn_id
from mlops_pack.airflow.operators import (
    DecideRetrainOperator,
    DeployModelOperator,
    EvaluateChallengerOperator,
    GateOperator,
    LabelledBatchOperator,
    MonitorOperator,
    PromoteModelOperator,
    RecordEscalationOperator,
    RollbackModelOperator,
    TrainModelOperator,
    ValidateDataOperator,
    default_include_dir,
)
from mlops_pack.errors import SpecError
from mlops_pack.retrain_loop import (
    ACKNOWLEDGE,
    ESCALATION_OPTIONS,
    ROLL_BACK,
    monitor_event_extra,
    retrain_asset_uri,
)
from mlops_pack.spec import ModelSpec, RunOverrides, load_spec

log = logging.getLogger(__name__)
START = datetime(2026, 1, 1)
DEFAULT_ARGS = {"owner": "mlops", "retries": 2, "retry_delay": timedelta(seconds=20)}
# What a run may override: the Params below, and nothing else in ``conf``.
RUN_PARAMS = ("data_path", "reason", "gate_mode", "gate_margin", "gate_confidence")
# ``off``: retrain DAGs run only when triggered (``make up`` sets it; see the README).
SCHEDULES_ENV = "MLOPS_PACK_SCHEDULES"


def run_params(spec: ModelSpec) -> dict[str, Param]:
    """What a run may override, as Params: the UI trigger form and REST ``conf``.

    Every field is optional in both: the form marks a field required unless its type
    allows null, so each type does, and an empty field means "the spec's value".
    """
    primary = spec.gate.primary
    return {
        "data_path": Param(
            None,
            type=["null", "string"],
            maxLength=1024,
            pattern=r"^[^\x00-\x1f]*$",
            description=f"Data file, relative to the data dir (default {spec.data.path}).",
        ),
        "reason": Param(
            None,
            type=["null", "string"],
            maxLength=500,
            description="Why this run; recorded. Optional.",
        ),
        "gate_mode": Param(
            None,
            type=["null", "string"],
            # JSON schema checks enum whatever the type, so null must be listed; the form
            # shows it with the label below instead of a literal "null".
            enum=[None, "superiority", "non_inferiority"],
            values_display={
                "null": f"spec default ({primary.mode})",
                "superiority": "superiority",
                "non_inferiority": "non-inferiority",
            },
            description=f"Primary rule (default {primary.mode}).",
        ),
        "gate_margin": Param(
            None,
            type=["null", "number"],
            minimum=-0.2,
            maximum=0.2,
            description=f"Primary margin (default {primary.margin}).",
        ),
        "gate_confidence": Param(
            None,
            type=["null", "number"],
            minimum=0.8,
            maximum=0.999,
            description=f"Bootstrap CI level (default {spec.gate.uncertainty.confidence}).",
        ),
    }


@task(task_id="run_overrides")  # bad conf fails without retry (AirflowFailException)
def collect_overrides(
    params: dict[str, Any] | None = None,
    dag_run: Any = None,
    triggering_asset_events: Any = None,
) -> dict[str, Any]:
    """Turn the run's Params into validated overrides; a bad value fails here, once.

    Airflow validates each Param's value at trigger time but lets unknown ``conf`` keys
    through, and merges them into ``params``; so the run's ``conf`` is compared with the
    declared names, and a typo fails the run here instead of silently doing nothing.
    """
    from airflow.sdk.exceptions import AirflowFailException
    from pydantic import ValidationError

    params = params or {}
    unknown = sorted(set((dag_run.conf if dag_run else None) or {}) - set(RUN_PARAMS))
    if unknown:
        raise AirflowFailException(
            f"run conf: unknown key(s) {unknown}; allowed: {sorted(RUN_PARAMS)}. "
            "Fix the key's spelling and trigger again."
        )
    raw = {
        "data_path": params.get("data_path") or None,
        "reason": params.get("reason") or monitor_reason(triggering_asset_events),
        "gate": {
            k: params.get(f"gate_{k}")
            for k in ("mode", "margin", "confidence")
            if params.get(f"gate_{k}") is not None
        },
    }
    try:
        return RunOverrides.model_validate(raw).model_dump(exclude_none=True, exclude_defaults=True)
    except ValidationError as exc:
        raise AirflowFailException(
            f"run conf: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}"
        ) from None


def monitor_reason(events: Any) -> str:
    """The reason a monitor's retrain Asset event gives, for the run's decision record.

    It names the incident (``monitor incident <id>: ...``), which is how the monitor
    later counts this run's decision among the incident's retrains.
    """
    extra = monitor_event_extra(events)
    if extra is None:
        return ""
    print(f"triggered by a monitor's retrain event: {extra}")
    return str(extra.get("run_reason") or "")[:500]


@task.short_circuit(task_id="challenger_passed", ignore_downstream_trigger_rules=False)
def challenger_passed(decision: dict[str, Any]) -> bool:
    """Skip the promotion path when the gate rejected: a normal, green outcome."""
    print(decision.get("summary", ""))
    return decision.get("verdict") == "promote"


@task.short_circuit(task_id="approved", ignore_downstream_trigger_rules=False)
def approved(approval: dict[str, Any]) -> bool:
    """Go on to deploy and promote only if the recorded answer is Approve."""
    print(f"{approval.get('option')} by {approval.get('approver')}")
    return bool(approval.get("approved"))


def _doc(spec: ModelSpec) -> str:
    gate = spec.gate
    return f"""
### Retrain `{spec.name}` ({spec.task})

{spec.description}

validate → train → evaluate (champion vs challenger, {_holdout_words(spec)}) → gate →
{"deploy (candidate slot, smoke test, canary) → " if spec.serving else ""}promote.
Every step runs in the hardened task container.
{_serving_doc(spec)}
* **Gate**: `{gate.primary.metric}` {gate.primary.mode.replace("_", "-")}, margin
  {gate.primary.margin} ({gate.primary.margin_type}), on the {gate.uncertainty.confidence:.0%}
  bootstrap CI lower bound; guardrails {[g.metric for g in gate.guardrails]}; floors {gate.floors}.
* **A rejected challenger** skips `promote`; the run stays green; the verdict is in the
  `gate` task's log and XCom.
* **Trigger with conf**: `data_path`, `reason`, `gate_mode`, `gate_margin`, `gate_confidence`,
  all optional; any other key fails the run at `run_overrides`.
{_approval_doc(spec)}"""


def _approval_doc(spec: ModelSpec) -> str:
    if not spec.gate.approval.required:
        return ""
    approval = spec.gate.approval
    return f"""* **Approval**: a passed challenger waits in `approve` for Approve or Reject
  ({approval.default} after {approval.timeout_hours} h); every answer is recorded in the
  model's history by `record_approval`; `deploy`/`promote` run only on Approve.
"""


def _holdout_words(spec: ModelSpec) -> str:
    if spec.holdout.pinned:
        return f"pinned holdout ({spec.holdout.strategy})"
    return "the newest rows of the batch, out of time"


def _serving_doc(spec: ModelSpec) -> str:
    if spec.serving is None:
        return ""
    canary = spec.serving.canary
    return f"""
* **Deploy** to the model server on 127.0.0.1:{spec.serving.port} (connection
  `{server_conn_id(spec.name)}`): smoke test against the offline scores, then a
  {canary.mode} ({canary.share:.0%} share, {canary.requests} requests) if enabled
  ({canary.enabled}); any failed check rolls back and fails `deploy`. `promote` switches
  the served model and the alias together under the model's lock.
"""


def _schedule(spec: ModelSpec) -> Any:
    """The spec's cron or data Asset, or-ed with the monitor's retrain Asset.

    With schedules off (``make up``), only the retrain Asset stays: it fires only when a
    monitor asks for a retrain, never because a cron tick passed.
    """
    assets = []
    if spec.monitoring is not None and spec.monitoring.retrain.enabled:
        assets.append(Asset(retrain_asset_uri(spec.name)))
    if os.environ.get(SCHEDULES_ENV, "on") == "off":
        return assets or None
    if spec.schedule.asset:
        data = Asset(spec.schedule.asset)
        return data | assets[0] if assets else [data]
    if assets and spec.schedule.cron:
        return AssetOrTimeSchedule(
            timetable=CronTriggerTimetable(spec.schedule.cron, timezone="UTC"), assets=assets[0]
        )
    return assets or spec.schedule.cron


def build_retrain_dag(spec_path: Path) -> DAG:
    return retrain_dag(load_spec(spec_path))


def retrain_dag(spec: ModelSpec) -> DAG:
    """A loaded spec's retrain DAG (``build_all`` reads each spec file once)."""
    name = spec.name
    schedule = _schedule(spec)
    with DAG(
        dag_id=f"mlops_retrain__{name}",
        schedule=schedule,
        start_date=START,
        catchup=False,
        max_active_runs=1,
        tags=["mlops-pack", "retrain", name],
        doc_md=_doc(spec),
        params=run_params(spec),
        default_args=DEFAULT_ARGS,
    ) as dag:
        # Started by a monitor: the window's labelled rows become the run's batch.
        batch = LabelledBatchOperator(
            task_id="labelled_batch", model=name, overrides=collect_overrides()
        )
        common = {
            "model": name,
            "overrides": "{{ ti.xcom_pull(task_ids='labelled_batch')['overrides'] | tojson }}",
        }
        validate = ValidateDataOperator(task_id="validate", **common)
        train = TrainModelOperator(task_id="train", **common)
        evaluate = EvaluateChallengerOperator(
            task_id="evaluate",
            challenger_version="{{ ti.xcom_pull(task_ids='train')['version'] }}",
            **common,
        )
        gate = GateOperator(
            task_id="gate",
            evaluation_uri="{{ ti.xcom_pull(task_ids='evaluate')['evaluation_uri'] }}",
            **common,
        )
        passed = challenger_passed(gate.output)
        server = {"server_conn_id": server_conn_id(name)} if spec.serving else {}
        promote = PromoteModelOperator(task_id="promote", decision=gate.output, **server, **common)
        batch >> validate >> train >> evaluate >> gate
        before_promote = [promote]
        if spec.serving:
            deploy = DeployModelOperator(
                task_id="deploy",
                challenger_version="{{ ti.xcom_pull(task_ids='train')['version'] }}",
                smoke_sample_uri="{{ ti.xcom_pull(task_ids='evaluate')['smoke_sample_uri'] }}",
                **server,
                **common,
            )
            deploy >> promote
            before_promote = [deploy]
        if spec.gate.approval.required:
            approve = _approval_request(spec)
            record = RecordApprovalOperator(
                task_id="record_approval",
                response=approve.output,
                decision=gate.output,
                **common,
            )
            passed >> approve >> record >> approved(record.output) >> before_promote
            promote.approver = "{{ ti.xcom_pull(task_ids='record_approval')['approver'] }}"
        else:
            passed >> before_promote
    return dag


def _approval_request(spec: ModelSpec):
    """A person answers Approve or Reject (or the timeout default applies).

    The plain HITLOperator, not ApprovalOperator: ApprovalOperator skips its downstream
    tasks on Reject, which would skip the task that records the answer too; here every
    answer is recorded first, and ``approved`` then skips deploy and promote on Reject.
    """
    from airflow.providers.standard.operators.hitl import HITLOperator

    approval = spec.gate.approval
    return HITLOperator(
        task_id="approve",
        subject=f"Promote {spec.name}?",
        body="{{ ti.xcom_pull(task_ids='gate')['summary'] }}",
        options=["Approve", "Reject"],
        defaults=["Approve" if approval.default == "approve" else "Reject"],
        multiple=False,
        response_timeout=timedelta(hours=approval.timeout_hours),
    )


def monitor_schedule(spec: ModelSpec) -> str | None:
    """The monitor's cron (``monitoring.schedule``); none with schedules off (``make up``),
    where only a person or a test starts it."""
    if os.environ.get(SCHEDULES_ENV, "on") == "off":
        return None
    return spec.monitoring_policy().schedule


@task.branch(task_id="next_step")
def next_step(loop: dict[str, Any]) -> list[str]:
    """Emit the retrain event, ask a person, or do nothing (the reason is in the log)."""
    print(f"{loop.get('action')}: {loop.get('why')}")
    return {"trigger": ["emit_retrain"], "escalate": ["escalate"]}.get(loop.get("action"), [])


def _emit_retrain(asset: Asset):
    @task(task_id="emit_retrain", outlets=[asset])
    def emit_retrain(loop: dict[str, Any], outlet_events: Any = None) -> dict[str, Any]:
        """The retrain Asset event: reason, window and figures in ``extra``."""
        extra = loop.get("asset_extra") or {}
        outlet_events[asset].extra.update(extra)
        return extra

    return emit_retrain


@task.short_circuit(task_id="roll_back_chosen", ignore_downstream_trigger_rules=False)
def roll_back_chosen(answer: dict[str, Any]) -> bool:
    print(f"{answer.get('option')} by {answer.get('approver')}")
    return bool(answer.get("roll_back"))


def build_monitor_dag(spec: ModelSpec) -> DAG:
    """Watch one served model: monitor, then trigger a retrain, hold, or ask a person."""
    from airflow.providers.standard.operators.hitl import HITLOperator

    name = spec.name
    asset = Asset(retrain_asset_uri(name))
    with DAG(
        dag_id=f"mlops_monitor__{name}",
        schedule=monitor_schedule(spec),
        start_date=START,
        catchup=False,
        max_active_runs=1,
        tags=["mlops-pack", "monitor", name],
        doc_md=f"""
### Monitor `{name}`

`monitor` judges the window of served predictions (and the labels that arrived) against
the champion's reference; `decide_retrain` reads the model's history and either emits
the retrain Asset event (`{asset.uri}`: `mlops_retrain__{name}` starts), holds
(cooldown, a retrain in flight, paused), or, when {spec.monitoring.retrain.max_failed_retrains}
retrains of one incident did not help, asks a person in `escalate`
({", ".join(ESCALATION_OPTIONS)}). Every choice is a history event. See docs/loop.md.
""",
        default_args=DEFAULT_ARGS,
    ) as dag:
        monitor = MonitorOperator(task_id="monitor", model=name)
        decide = DecideRetrainOperator(task_id="decide_retrain", model=name, monitor=monitor.output)
        branch = next_step(decide.output)
        emit = _emit_retrain(asset)(decide.output)
        escalate = HITLOperator(
            task_id="escalate",
            subject=f"{name}: retraining does not help; what now?",
            body="{{ ti.xcom_pull(task_ids='decide_retrain')['evidence'] }}",
            options=list(ESCALATION_OPTIONS),
            defaults=[ACKNOWLEDGE],
            multiple=False,
            response_timeout=timedelta(hours=spec.monitoring.retrain.answer_timeout_hours),
        )
        record = RecordEscalationOperator(
            task_id="record_escalation", model=name, response=escalate.output, loop=decide.output
        )
        rollback = RollbackModelOperator(
            task_id="roll_back",
            model=name,
            server_conn_id="auto",
            reason=f"{ROLL_BACK} chosen on an escalation: "
            "{{ ti.xcom_pull(task_ids='decide_retrain')['why'] }}",
        )
        branch >> [emit, escalate]
        escalate >> record >> roll_back_chosen(record.output) >> rollback
    return dag


def build_rollback_dag(models: list[str]) -> DAG:
    with DAG(
        dag_id="mlops_rollback",
        schedule=None,
        start_date=START,
        catchup=False,
        max_active_runs=1,
        tags=["mlops-pack", "rollback"],
        doc_md="Moves a model's `champion` alias back to `previous` (or `to_version`). "
        "The reason is required and recorded in the model's history.",
        params={
            "model": Param(models[0] if models else "", type="string", enum=models or [""]),
            "to_version": Param(None, type=["null", "string"], pattern=r"^[0-9]+$"),
            "reason": Param("", type="string", minLength=3, maxLength=500),
        },
        default_args=DEFAULT_ARGS,
    ) as dag:
        RollbackModelOperator(
            task_id="rollback",
            server_conn_id="auto",  # served models: the server rolls back with the alias
            model="{{ params.model }}",
            reason="{{ params.reason }}",
            to_version="{{ params.to_version or '' }}",
        )
    return dag


def broken_spec_dag(spec_path: Path, error: str) -> DAG:
    """Stands in for a spec that does not load: visible in the UI, naming file and field.

    One DAG file builds every model's DAG, so an exception here would remove them all
    (Airflow records one import error per file). The placeholder keeps the DAG id, says
    what is wrong in its description and docs, and fails at once if triggered.
    """
    from airflow.providers.standard.operators.python import PythonOperator

    dag_id = "mlops_retrain__" + re.sub(r"[^A-Za-z0-9_.-]", "_", spec_path.stem)
    with DAG(
        dag_id=dag_id,
        schedule=None,
        start_date=START,
        catchup=False,
        max_active_runs=1,
        tags=["mlops-pack", "retrain", "broken-spec"],
        description=f"BROKEN SPEC: {error}"[:1000],
        doc_md=f"### Broken model spec\n\n`{error}`\n\nFix the file; this DAG then "
        "becomes the model's retrain DAG again.",
        default_args={**DEFAULT_ARGS, "retries": 0},
    ) as dag:
        PythonOperator(task_id="spec_error", python_callable=_refuse, op_args=[error])
    return dag


def _refuse(error: str) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    raise AirflowFailException(error)


def build_all(include_dir: Path | None = None) -> dict[str, DAG]:
    """Every spec's retrain DAG (a placeholder for a broken spec), the monitor DAG of
    every served spec with a ``monitoring`` section, and the rollback DAG."""
    from mlops_pack.extensions import load_extensions

    load_extensions()
    include = include_dir or default_include_dir()
    dags: dict[str, DAG] = {}
    good: list[str] = []
    paths = sorted((include / "models").glob("*.yaml"))
    task_paths = _task_dag_paths(paths)
    if task_paths is not None:  # a worker running one task: that model's DAGs only
        paths = task_paths
    for path in paths:
        built: list[DAG] = []
        try:
            spec = load_spec(path)
            built.append(retrain_dag(spec))
            if spec.serving is not None and spec.monitoring is not None:
                built.append(build_monitor_dag(spec))
            good.append(path.stem)
        except SpecError as exc:
            log.error("model spec not loaded: %s", exc)
            built = [broken_spec_dag(path, str(exc))]
        dags.update((dag.dag_id, dag) for dag in built)
    if task_paths is None:
        dags["mlops_rollback"] = build_rollback_dag(good)
    return dags


def _task_dag_paths(paths: list[Path]) -> list[Path] | None:
    """The one spec file a task's DAG comes from, when Airflow parses this file to run a
    task of a model's retrain or monitor DAG; None otherwise (the dag-processor, tests,
    the rollback DAG, which lists every model, or a DAG id no file matches).

    Every task start parses the DAG file again; building every model's DAGs there made a
    task's start-up grow with the number of specs (27 ms each, docs/benchmarks.md) for
    nothing it uses. Airflow's parsing context names the DAG (its documented pattern for
    generated DAGs); the dag-processor never sets it, so the UI still sees every DAG.
    """
    from airflow.sdk import get_parsing_context

    dag_id = get_parsing_context().dag_id
    if not dag_id:
        return None
    for prefix in ("mlops_retrain__", "mlops_monitor__"):
        if dag_id.startswith(prefix):
            model = dag_id[len(prefix) :]
            # A broken spec's placeholder DAG id is its file name with unsafe characters
            # replaced; compare the same way.
            found = [p for p in paths if re.sub(r"[^A-Za-z0-9_.-]", "_", p.stem) == model]
            return found or None
    return None
