"""The retrain's labelled batch, on real files through the real CLI and a real MLflow store:
served rows (logged as the model server logs them) joined with the labels that arrived,
written with the spec's columns, retained by sha256, recorded with its window, then
trained on with the out-of-time holdout on its newest rows; and the windows refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from mlops_pack.datagen import traffic
from mlops_pack.spec import load_spec
from support import churn_spec_copy, run_cli
from test_monitoring import write_traffic

TIME = "requested_at"
START = (datetime.now(UTC) - timedelta(days=2)).replace(minute=0, second=0, microsecond=0)


def _timed(raw: dict) -> None:
    """churn with a time column: the holdout is the newest rows by request time."""
    raw["columns"].append({"name": TIME, "type": "categorical", "role": "id"})
    raw["holdout"]["time_column"] = TIME


@pytest.fixture(scope="module")
def world(tmp_path_factory, data_dir):
    """churn v1 (time-column spec) trained on month 1 in a store of this module's own; the
    model to score traffic with, as the server would."""
    root = tmp_path_factory.mktemp("labelled")
    spec = churn_spec_copy(root / "spec", _timed)
    month = pd.read_csv(data_dir / "churn" / "churn_month_01.csv")
    month[TIME] = [(START - timedelta(days=60, seconds=-i)).isoformat() for i in range(len(month))]
    month.to_csv(data_dir / "churn" / "churn_timed_01.csv", index=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_PACK_HOME", str(root / "home"))
        mp.setenv("MLOPS_PACK_DATA_DIR", str(data_dir))
        for name in (
            "MLFLOW_TRACKING_URI",
            "MLOPS_PACK_PREDICTION_LOG_DIR",
            "MLOPS_PACK_LABELS_DIR",
        ):
            mp.delenv(name, raising=False)
        code, result = run_cli(
            "retrain", "--spec", spec, "--data", "churn/churn_timed_01.csv", "--out", root / "v1"
        )
        assert code == 0 and result["result"]["verdict"] == "promote", result
        from mlops_pack.registry import CHAMPION, Registry
        from mlops_pack.steps.context import StepContext
        from mlops_pack.steps.evaluate import fetch_model

        registry = Registry()
        ctx = StepContext.load(spec, root / "ctx")
        model, _ = fetch_model(ctx, registry.alias("churn", CHAMPION), root / "model")
        yield {"spec": spec, "model": model, "registry": registry}


def _versions(world) -> int:
    return len(world["registry"].client.search_model_versions("name = 'churn'"))


def _batch_events(world, start) -> list:
    events = world["registry"].history("churn", "labelled_batch")
    return [e for e in events if e["window_start"] == start.isoformat()]


def _serve_and_label(world, start, hours, rows_per_hour, seed, keep=None, **knobs):
    """Traffic in the server's log folder, its true labels in the feed (arriving today)."""
    settings = world["registry"].settings
    logs, labels = settings.prediction_log_dir("churn"), settings.labels_dir("churn")
    frame, request_ids = write_traffic(world, logs, start, hours, rows_per_hour, seed, **knobs)
    lines = []
    for index, request_id in enumerate(request_ids):
        for row in range(100):
            label = int(frame["churned"].iloc[index * 100 + row])
            if keep is None or keep(label):
                lines.append((request_id, row, label))
    traffic.write_labels(labels, datetime.now(UTC).date(), f"seed-{seed}", lines)
    return start, start + timedelta(hours=hours)


def _batch(world, tmp_path, start, end, name="batch"):
    return run_cli(
        "labelled-batch", "--spec", world["spec"], "--start", start.isoformat(),
        "--end", end.isoformat(), "--out", tmp_path / name,
        "--overrides", '{"reason": "monitor incident T1: decay: test"}',
    )  # fmt: skip


def test_retrain_trains_on_the_labelled_window_with_its_newest_rows_held_out(world, tmp_path):
    start, end = _serve_and_label(world, START, 4, 1500, seed=41, concept_drift=1.0)
    code, result = _batch(world, tmp_path, start, end)
    assert code == 0, result
    batch = result["result"]
    assert batch["rows"] == batch["served_rows"] == 6000
    assert set(batch["classes"]) == {"0", "1"} and batch["retention"]["stored"]
    written = pd.read_csv(tmp_path / "batch" / batch["file"])
    assert list(written.columns) == load_spec(world["spec"]).expected_columns()
    assert written["customer_id"].str.match(r"^M041-\d{9}$").all()  # keys as logged
    assert written[TIME].min() >= start.isoformat()
    # The history says which window the batch came from.
    events = _batch_events(world, start)
    assert [e["data_sha256"] for e in events] == [batch["data_sha256"]]
    assert events[0]["window_start"] == start.isoformat()
    assert events[0]["window_end"] == end.isoformat()

    overrides = f'{{"data_sha256": "{batch["data_sha256"]}", "reason": "monitor incident T1"}}'
    code, retrained = run_cli(
        "retrain", "--spec", world["spec"], "--overrides", overrides, "--out", tmp_path / "v2"
    )
    assert code in (0, 3), retrained
    decision = retrained["result"]["decision"]
    assert decision["data_sha256"] == batch["data_sha256"]
    assert retrained["result"]["holdout_rows"] == 1200  # holdout.fraction 0.2 of 6000
    challenger = retrained["result"]["challenger_version"]
    tags = world["registry"].client.get_model_version("churn", challenger).tags
    assert tags["mlops.data_sha256"] == batch["data_sha256"]
    # Out of time: the held-out rows are the window's newest requests.
    newest = sorted(written[TIME])
    span = [pd.Timestamp(t) for t in tags["mlops.holdout_time_range"].split("/")]
    assert span == [pd.Timestamp(newest[-1200]), pd.Timestamp(newest[-1])]
    print(f"labelled batch retrain: {decision['summary']}")


def test_a_window_with_too_few_labels_is_refused_and_nothing_is_stored(world, tmp_path):
    versions = _versions(world)
    start, end = _serve_and_label(world, START + timedelta(hours=5), 1, 1000, seed=42)
    code, result = _batch(world, tmp_path, start, end)
    assert code == 2, result
    assert "labelled_batch.min_rows" in result["error"] and "1000 of 1000" in result["error"]
    assert _batch_events(world, start) == []
    assert not list((tmp_path / "batch").glob("labelled-*"))
    assert _versions(world) == versions


def test_a_window_of_one_class_is_refused(world, tmp_path):
    start = START + timedelta(hours=7)
    start, end = _serve_and_label(world, start, 2, 1500, seed=43, keep=lambda label: label == 0)
    code, result = _batch(world, tmp_path, start, end)
    assert code == 2, result
    assert "labelled_batch.classes" in result["error"]
    assert _batch_events(world, start) == []


def test_a_customer_served_twice_is_one_row_of_the_batch_the_newest(world, tmp_path):
    """The spec's key names one customer: served again later in the window, it is one row,
    the newest request's (validation refuses repeated keys)."""
    start = START + timedelta(hours=10)
    _serve_and_label(world, start, 2, 1000, seed=44)
    # The same customers (same rows, same request ids, same labels) two hours later.
    logs = world["registry"].settings.prediction_log_dir("churn")
    write_traffic(world, logs, start + timedelta(hours=2), 2, 1000, 44)
    code, result = _batch(world, tmp_path, start, start + timedelta(hours=4))
    assert code == 0, result
    batch = result["result"]
    assert (batch["served_rows"], batch["rows"], batch["superseded_rows"]) == (4000, 2000, 2000)
    written = pd.read_csv(tmp_path / "batch" / batch["file"])
    assert written["customer_id"].is_unique and len(written) == 2000
    assert written[TIME].min() >= (start + timedelta(hours=2)).isoformat()
