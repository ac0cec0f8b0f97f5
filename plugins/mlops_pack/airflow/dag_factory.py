"""Builds one retrain DAG per model spec, and the rollback DAG.

Only the spec files are read at parse time (small local YAML, parsed by pydantic); no
pandas, scikit-learn, GX or mlflow is imported, so DAG files parse in milliseconds.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Asset, Param, task

from mlops_pack.airflow.operators import (
    DeployModelOperator,
    EvaluateChallengerOperator,
    GateOperator,
    PromoteModelOperator,
    RollbackModelOperator,
    TrainModelOperator,
    ValidateDataOperator,
    default_include_dir,
)
from mlops_pack.spec import ModelSpec, RunOverrides, load_spec

START = datetime(2026, 1, 1)
DEFAULT_ARGS = {"owner": "mlops", "retries": 2, "retry_delay": timedelta(seconds=20)}


def run_params(spec: ModelSpec) -> dict[str, Param]:
    """What a run may override, as Params: the UI trigger form and REST ``conf``."""
    return {
        "data_path": Param(
            None,
            type=["null", "string"],
            maxLength=1024,
            pattern=r"^[^\x00-\x1f]*$",
            description=f"Data file, relative to the data dir (default {spec.data.path}).",
        ),
        "reason": Param("", type="string", maxLength=500, description="Why this run; recorded."),
        "gate_mode": Param(
            None,
            type=["null", "string"],
            enum=[None, "superiority", "non_inferiority"],
            description=f"Primary rule (default {spec.gate.primary.mode}).",
        ),
        "gate_margin": Param(
            None,
            type=["null", "number"],
            minimum=-0.2,
            maximum=0.2,
            description=f"Primary margin (default {spec.gate.primary.margin}).",
        ),
        "gate_confidence": Param(
            None,
            type=["null", "number"],
            minimum=0.8,
            maximum=0.999,
            description=f"Bootstrap CI level (default {spec.gate.uncertainty.confidence}).",
        ),
    }


@task(task_id="run_overrides", retries=0)
def collect_overrides(params: dict[str, Any] | None = None, dag_run: Any = None) -> dict[str, Any]:
    """Turn the run's Params into validated overrides; a bad value fails here, once.

    Airflow validates each Param's value at trigger time but lets unknown ``conf`` keys
    through; those are refused here so a typo never silently does nothing.
    """
    from airflow.sdk.exceptions import AirflowFailException
    from pydantic import ValidationError

    params = params or {}
    unknown = sorted(set((dag_run.conf if dag_run else None) or {}) - set(params))
    if unknown:
        raise AirflowFailException(f"run conf: unknown keys {unknown}; allowed: {sorted(params)}")
    raw = {
        "data_path": params.get("data_path") or None,
        "reason": params.get("reason") or "",
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


@task.short_circuit(task_id="challenger_passed", ignore_downstream_trigger_rules=False)
def challenger_passed(decision: dict[str, Any]) -> bool:
    """Skip the promotion path when the gate rejected: a normal, green outcome."""
    print(decision.get("summary", ""))
    return decision.get("verdict") == "promote"


@task(task_id="approver")
def approver_of(response: dict[str, Any] | None) -> str:
    """Who approved (recorded with the promotion); the timeout default is named as such."""
    user = (response or {}).get("responded_by_user") or {}
    return str(user.get("name") or user.get("id") or "timeout-default")


def _doc(spec: ModelSpec) -> str:
    gate = spec.gate
    return f"""
### Retrain `{spec.name}` ({spec.task})

{spec.description}

validate → train → evaluate (champion vs challenger, pinned holdout) → gate →
{"deploy (candidate slot, smoke test, canary) → " if spec.serving else ""}promote.
Every step runs in the hardened task container.
{_serving_doc(spec)}
* **Gate**: `{gate.primary.metric}` {gate.primary.mode.replace("_", "-")}, margin
  {gate.primary.margin} ({gate.primary.margin_type}), on the {gate.uncertainty.confidence:.0%}
  bootstrap CI lower bound; guardrails {[g.metric for g in gate.guardrails]}; floors {gate.floors}.
* **A rejected challenger** skips `promote`; the run stays green; the verdict is in the
  `gate` task's log and XCom.
* **Trigger with conf**: `data_path`, `reason`, `gate_mode`, `gate_margin`, `gate_confidence`.
"""


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


def build_retrain_dag(spec_path: Path) -> DAG:
    spec = load_spec(spec_path)
    name = spec.name
    if spec.schedule.asset:
        schedule: Any = [Asset(spec.schedule.asset)]
    else:
        schedule = spec.schedule.cron
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
        overrides = collect_overrides()
        common = {"model": name, "overrides": overrides}
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
        validate >> train >> evaluate >> gate
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
            from airflow.providers.standard.operators.hitl import ApprovalOperator

            approve = ApprovalOperator(
                task_id="approve",
                subject=f"Promote {name}?",
                body="{{ ti.xcom_pull(task_ids='gate')['summary'] }}",
                response_timeout=timedelta(hours=spec.gate.approval.timeout_hours),
                defaults=["Approve" if spec.gate.approval.default == "approve" else "Reject"],
            )
            who = approver_of(approve.output)
            passed >> approve
            who >> before_promote
            promote.approver = who
        else:
            passed >> before_promote
    return dag


def server_conn_id(model: str) -> str:
    """The Airflow Connection that holds a model server's address and secrets."""
    return f"mlops_pack_server_{model}"


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


def build_all(include_dir: Path | None = None) -> dict[str, DAG]:
    from mlops_pack.extensions import load_extensions

    load_extensions()
    include = include_dir or default_include_dir()
    specs = sorted((include / "models").glob("*.yaml"))
    dags = {f"mlops_retrain__{p.stem}": build_retrain_dag(p) for p in specs}
    dags["mlops_rollback"] = build_rollback_dag([p.stem for p in specs])
    return dags
