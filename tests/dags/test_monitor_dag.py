"""The monitor DAG per served spec, and the retrain DAG listening to its Asset."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from support import ROOT

RETRAIN_URI = "mlops-pack://churn/retrain"


def _include(tmp_path: Path, monitoring: dict | None) -> Path:
    include = tmp_path / "include"
    shutil.copytree(ROOT / "include" / "expectations", include / "expectations")
    (include / "models").mkdir()
    for name in ("churn", "diabetes"):
        raw = yaml.safe_load((ROOT / "include" / "models" / f"{name}.yaml").read_text())
        if name == "churn":
            raw.pop("monitoring", None)  # the shipped spec is monitored; the test decides
            if monitoring is not None:
                raw["monitoring"] = monitoring
        (include / "models" / f"{name}.yaml").write_text(yaml.safe_dump(raw))
    return include


def test_a_served_spec_with_monitoring_gets_a_monitor_dag(airflow_db, tmp_path, monkeypatch):
    from airflow.sdk import AssetOrTimeSchedule
    from mlops_pack.airflow.dag_factory import build_all

    monkeypatch.delenv("MLOPS_PACK_SCHEDULES", raising=False)
    policy = {"max_failed_retrains": 2, "answer_timeout_hours": 2}
    dags = build_all(_include(tmp_path, {"retrain": policy}))
    # Only the specs with a monitoring section (churn here) are watched.
    assert sorted(dags) == [
        "mlops_monitor__churn",
        "mlops_retrain__churn",
        "mlops_retrain__diabetes",
        "mlops_rollback",
    ]
    monitor = dags["mlops_monitor__churn"]
    edges = {t.task_id: sorted(t.downstream_task_ids) for t in monitor.tasks}
    assert edges["monitor"] == ["decide_retrain"]
    assert edges["next_step"] == ["emit_retrain", "escalate"]
    assert edges["escalate"] == ["record_escalation"]
    assert edges["roll_back_chosen"] == ["roll_back"]
    assert [a.uri for a in monitor.get_task("emit_retrain").outlets] == [RETRAIN_URI]
    escalate = monitor.get_task("escalate")
    assert escalate.options == ["Acknowledge", "Pause retraining", "Roll back"]
    assert escalate.defaults == ["Acknowledge"] and escalate.response_timeout.seconds == 7200
    assert monitor.timetable.expression == "0 * * * *"  # monitoring.schedule's default
    assert monitor.max_active_runs == 1 and "2 retrains" in monitor.doc_md.replace("\n", " ")

    # The retrain DAG runs on its cron or on the monitor's Asset, whichever comes first.
    timetable = dags["mlops_retrain__churn"].timetable
    assert isinstance(timetable, AssetOrTimeSchedule)
    assert timetable.asset_condition.uri == RETRAIN_URI
    assert dags["mlops_retrain__churn"].max_active_runs == 1
    # With schedules off (make up), only the Asset remains: no cron tick retrains.
    monkeypatch.setenv("MLOPS_PACK_SCHEDULES", "off")
    off = build_all(_include(tmp_path / "off", {}))
    quiet = off["mlops_retrain__churn"]
    # ... and the monitor runs only when started: no hourly runs of an idle stack.
    assert type(off["mlops_monitor__churn"].timetable).__name__ == "NullTimetable"
    assert not isinstance(quiet.timetable, AssetOrTimeSchedule)
    assert [a.uri for a in quiet.timetable.asset_condition.objects] == [RETRAIN_URI]


def test_without_monitoring_nothing_changes(airflow_db, tmp_path, monkeypatch):
    from mlops_pack.airflow.dag_factory import build_all

    monkeypatch.delenv("MLOPS_PACK_SCHEDULES", raising=False)
    dags = build_all(_include(tmp_path, None))
    assert "mlops_monitor__churn" not in dags
    assert dags["mlops_retrain__churn"].timetable.expression == "0 4 1 * *"


def _event(uri: str, extra: dict, minute: int):
    from airflow.sdk.api.datamodels._generated import AssetReferenceAssetEventDagRun
    from airflow.sdk.execution_time.comms import AssetEventDagRunReferenceResult

    return AssetEventDagRunReferenceResult(
        asset=AssetReferenceAssetEventDagRun(name=uri, uri=uri, extra={}),
        extra=extra,
        source_task_id="emit_retrain",
        source_dag_id="mlops_monitor__churn",
        source_run_id=f"scheduled__{minute}",
        source_map_index=-1,
        source_aliases=[],
        timestamp=datetime(2026, 5, 1, 6, minute, tzinfo=UTC),
    )


@pytest.mark.parametrize("with_data_asset", [False, True])
def test_the_run_reason_comes_from_the_newest_retrain_event(airflow_db, with_data_asset):
    from airflow.sdk.execution_time.context import TriggeringAssetEventsAccessor
    from mlops_pack.airflow.dag_factory import monitor_reason

    events = [
        _event(RETRAIN_URI, {"run_reason": "monitor incident A: drift: x"}, 1),
        _event(RETRAIN_URI, {"run_reason": "monitor incident A: decay: y"}, 2),
    ]
    if with_data_asset:
        events.append(_event("s3://bucket/churn.csv", {"run_reason": "not ours"}, 3))
    accessor = TriggeringAssetEventsAccessor.build(events)
    assert monitor_reason(accessor) == "monitor incident A: decay: y"
    assert monitor_reason(TriggeringAssetEventsAccessor.build([])) == ""
    assert monitor_reason(None) == ""


def test_decide_then_emit_puts_the_reason_on_the_asset_event(
    airflow_db, store, task_image, tmp_path, monkeypatch
):
    """The decide step (in the task container) and the Asset event, run by Airflow."""
    import subprocess

    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.sdk import DAG, Asset
    from airflow.utils.session import create_session
    from mlops_pack.airflow.dag_factory import _emit_retrain, next_step
    from mlops_pack.airflow.operators import DecideRetrainOperator
    from support import register_dag

    monkeypatch.setenv("MLOPS_PACK_INCLUDE_DIR", str(_include(tmp_path, {})))
    monkeypatch.setenv("MLOPS_PACK_RUNNER", "docker")
    monkeypatch.setenv("MLOPS_PACK_TASK_IMAGE", task_image)
    # A deployment's store belongs to the user its step containers run as.
    store.mkdir(parents=True, exist_ok=True)
    subprocess.run(["chown", "-R", "65534:65534", str(store)], check=True)
    monitor = {
        "status": "drift",
        "alarms": [{"kind": "data_drift", "summary": "3 of 10 features drifted"}],
        "window": {"start": "2026-05-01T00:00:00+00:00", "end": "2026-05-02T00:00:00+00:00",
                   "rows": 900, "labelled_rows": 0, "requests": 9},
        "champion_version": "1",
        "performance": None,
    }  # fmt: skip
    with DAG("test_monitor_emit", schedule=None, catchup=False) as dag:
        decide = DecideRetrainOperator(task_id="decide_retrain", model="churn", monitor=monitor)
        next_step(decide.output) >> _emit_retrain(Asset(RETRAIN_URI))(decide.output)
    register_dag(dag)

    def run_once() -> tuple[dict, list[dict]]:
        run = dag.test()
        states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
        with create_session() as session:
            events = (
                session.query(AssetEvent)
                .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                .filter(AssetModel.uri == RETRAIN_URI, AssetEvent.source_dag_id == dag.dag_id)
                .all()
            )
            return states, [dict(e.extra) for e in events]

    states, extras = run_once()
    assert states == {
        "decide_retrain": "success",
        "next_step": "success",
        "emit_retrain": "success",
    }, states
    assert len(extras) == 1, extras
    assert extras[0]["reason"] == "drift"
    assert extras[0]["window"]["rows"] == 900
    assert extras[0]["run_reason"].startswith("monitor incident ")
    assert extras[0]["run_reason"].endswith(": drift: 3 of 10 features drifted")
    # The same alarm again at once: the retrain is in flight, so no second event.
    states, extras = run_once()
    assert states["emit_retrain"] == "skipped" and len(extras) == 1, (states, extras)
