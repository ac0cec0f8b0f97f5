"""The monitor step on real files: generated traffic written as the model server writes its
prediction logs, labels in the documented feed, the real CLI, a real MLflow store with a
champion trained on churn month 1 (and its reference profile), and once in the task
container."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from mlops_pack.datagen import churn
from support import CHURN_SPEC, run_cli

NOBODY = 65534
ROWS_PER_REQUEST = 100
# Windows end a few days before now, so the champion (trained now) is not stale in them.
BASE = (datetime.now(UTC) - timedelta(days=5)).replace(minute=0, second=0, microsecond=0)


@pytest.fixture(scope="module")
def world(tmp_path_factory, data_dir):
    """A store whose champion is churn v1, trained on month 1; the loaded model to score
    generated traffic with, as the server would."""
    root = tmp_path_factory.mktemp("monitor")
    home = root / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_PACK_HOME", str(home))
        mp.setenv("MLOPS_PACK_DATA_DIR", str(data_dir))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLOPS_PACK_PREDICTION_LOG_DIR", raising=False)
        mp.delenv("MLOPS_PACK_LABELS_DIR", raising=False)
        code, _ = run_cli(
            "retrain", "--spec", CHURN_SPEC, "--data", "churn/churn_month_01.csv",
            "--out", root / "retrain",
        )  # fmt: skip
        assert code == 0
        from mlops_pack.registry import CHAMPION, Registry
        from mlops_pack.steps.evaluate import fetch_model

        registry = Registry()
        champion = registry.alias("churn", CHAMPION)
        model, _ = fetch_model(_ctx(root), champion, root / "model")
        yield {"root": root, "home": home, "model": model, "registry": registry, "mp": mp}


def _ctx(root: Path):
    from mlops_pack.steps.context import StepContext

    return StepContext.load(CHURN_SPEC, root / "ctx")


def write_traffic(
    world, log_dir: Path, start: datetime, hours: int, rows_per_hour: int, seed: int, **knobs
):
    """Generated rows sent "through" the server's request parser, scored by the champion,
    logged as the server logs them; returns the frame (with its true labels) and the
    request ids, in log order."""
    from mlops_pack.model_io import predict
    from mlops_pack.serving.requests import RequestSchema
    from mlops_pack.spec import load_spec

    spec = load_spec(CHURN_SPEC)
    schema = RequestSchema(spec, 1000)
    frame = churn.frame(
        # The month numbers the customer ids: a distinct one per batch keeps keys unique.
        churn.ChurnConfig(rows=hours * rows_per_hour, month=seed, seed=seed, **knobs)
    )
    scores = predict(spec, world["model"], frame)
    names = [*schema.names, "customer_id"]
    body = frame[names].astype(object)
    rows = body.where(body.notna(), None).to_dict(orient="records")
    request_ids = []
    handles = {}
    for first in range(0, len(rows), ROWS_PER_REQUEST):
        batch = rows[first : first + ROWS_PER_REQUEST]
        ts = start + timedelta(seconds=3600 * first / rows_per_hour)
        parsed = schema.parse_rows(batch)
        request_id = f"r{seed}-{first}"
        record = {
            "ts": ts.isoformat(),
            "request_id": request_id,
            "version": "1",
            "slot": "stable",
            "latency_ms": 1.0,
            "rows": len(batch),
            "predictions": scores[first : first + ROWS_PER_REQUEST].tolist(),
            "flags": [],
            "inputs": parsed.logged_inputs(schema.names),
            "keys": parsed.keys,
        }
        day = log_dir / f"date={ts.date().isoformat()}"
        if day not in handles:
            day.mkdir(parents=True, exist_ok=True)
            handles[day] = (day / f"part-{seed}.jsonl").open("a", encoding="utf-8")
        handles[day].write(json.dumps(record, separators=(",", ":")) + "\n")
        request_ids.append(request_id)
    for handle in handles.values():
        handle.close()
    return frame, request_ids


def monitor(world, out: Path, log_dir: Path, labels_dir: Path, end: datetime, hours: float):
    code, result = run_cli(
        "monitor", "--spec", CHURN_SPEC, "--log-dir", log_dir, "--labels-dir", labels_dir,
        "--end", end.isoformat(), "--hours", str(hours), "--out", out,
    )  # fmt: skip
    assert code == 0, result
    return result


def test_stable_traffic_over_fifty_windows_at_most_one_false_alarm(world):
    root = world["root"] / "stable"
    logs, labels = root / "logs", root / "labels"
    windows = 50
    write_traffic(world, logs, BASE - timedelta(hours=windows), windows, 1000, seed=11)
    statuses = []
    for index in range(windows):
        end = BASE - timedelta(hours=windows - index - 1)
        result = monitor(world, root / f"w{index}", logs, labels, end, 1)
        assert result["window"]["rows"] == 1000, result["window"]
        assert result["skipped"] == []
        statuses.append(result["status"])
    alarms = [s for s in statuses if s != "healthy"]
    print(f"stable traffic: {len(alarms)} false alarms in {windows} windows")
    assert len(alarms) <= 1, statuses
    assert "insufficient_data" not in statuses
    # The record carries the figures the rule used, per feature.
    feature = result["features"]["tenure_months"]
    assert feature["distance"] < feature["threshold"] == 0.1
    assert 0.0 <= feature["p_value"] <= 1.0 and sum(feature["current_share"]) == pytest.approx(1)
    assert result["performance"] is None  # no labels arrived
    # The last report draws the newest 48 windows (the 47 before it and itself) over time.
    report = (root / f"w{windows - 1}" / "report.html").read_text()
    assert "Over time: the last 48 windows" in report and "Drift over time" in report


def test_covariate_drift_is_detected_in_the_first_window_after_onset(world):
    root = world["root"] / "covariate"
    logs, labels = root / "logs", root / "labels"
    write_traffic(world, logs, BASE - timedelta(hours=2), 1, 1000, seed=21)
    write_traffic(world, logs, BASE - timedelta(hours=1), 1, 1000, seed=22, covariate_drift=0.3)
    before = monitor(world, root / "before", logs, labels, BASE - timedelta(hours=1), 1)
    after = monitor(world, root / "after", logs, labels, BASE, 1)
    assert before["status"] == "healthy", before["alarms"]
    assert after["status"] == "drift", after
    alarm = next(a for a in after["alarms"] if a["kind"] == "data_drift")
    assert "support_calls" in alarm["features"]
    # Features the drift knob does not move stay below the threshold.
    assert not after["features"]["region"]["drifted"]
    assert not after["features"]["age"]["drifted"]
    # Every window is an event (healthy ones too), with its report stored on the event.
    events = {e["event_id"]: e for e in world["registry"].history("churn", "monitor")}
    assert events[before["event_id"]]["status"] == "healthy"
    event = events[after["event_id"]]
    assert event["status"] == "drift" and event["window_end"] == BASE.isoformat()
    assert event["report"] == "report.html"
    stored = world["registry"].download(f"runs:/{after['event_id']}/report.html", root / "dl")
    report = (root / "after" / "report.html").read_text()
    assert stored.read_text() == report
    prom = (root / "after" / "metrics.prom").read_text()
    assert 'mlops_monitor_alarm{kind="data_drift",model="churn"} 1.0' in prom
    assert 'mlops_monitor_feature_drifted{feature="support_calls",model="churn"} 1.0' in prom
    assert "<svg" in report and "support_calls" in report
    assert not re.search(r"""(src|href)=["']?https?:""", report), "fetches from a network"
    assert "<script" not in report
    # The previous window is drawn beside this one, with the threshold.
    assert "Over time: the last" in report and "threshold" in report
    figures = json.loads(event["figures"])
    assert "support_calls" in figures["drifted"] and figures["psi_threshold"] == 0.1
    assert figures["psi"]["support_calls"] >= 0.1


def _write_labels(path: Path, header: str, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")


def test_concept_drift_with_labels_is_decay(world):
    """The relation between features and label changes: the generator's concept drift at
    full strength plus 15% of labels that no longer follow the features. (Concept drift
    alone costs this champion only 0.02 to 0.035 ROC AUC, inside the default tolerance.)"""
    root = world["root"] / "concept"
    logs, labels = root / "logs", root / "labels"
    hours, per_hour = 1, 4000
    end = BASE
    stable, _ = write_traffic(world, logs, end - timedelta(hours=2), hours, per_hour, seed=31)
    drifted, _ = write_traffic(
        world, logs, end - timedelta(hours=1), hours, per_hour, seed=32,
        concept_drift=1.0, label_noise=0.15,
    )  # fmt: skip
    # Labels arrive the next day, joined on the spec's key (customer_id).
    arrived = labels / f"date={(end + timedelta(days=1)).date().isoformat()}"
    for name, frame in (("stable", stable), ("drifted", drifted)):
        _write_labels(
            arrived / f"{name}.csv",
            "customer_id,label",
            [f"{c},{y}" for c, y in zip(frame["customer_id"], frame["churned"], strict=True)],
        )
    healthy = monitor(world, root / "before", logs, labels, end - timedelta(hours=1), 1)
    decayed = monitor(world, root / "after", logs, labels, end, 1)
    assert healthy["status"] == "healthy", healthy["alarms"]
    assert healthy["performance"]["decayed"] is False
    assert healthy["window"]["labelled_rows"] == per_hour
    performance = decayed["performance"]
    assert decayed["status"] == "decay", decayed["alarms"]
    assert decayed["window"]["labelled_rows"] == per_hour
    assert performance["metric"] == "roc_auc"
    assert performance["ci_high"] < performance["reference"] - performance["tolerance"]
    assert decayed["alarms"][0]["kind"] == "decay"
    # Concept drift leaves the inputs alone: no data drift alarm.
    assert not any(f["drifted"] for f in decayed["features"].values())
    print(
        f"concept drift: roc_auc {performance['value']:.3f} "
        f"[{performance['ci_low']:.3f}, {performance['ci_high']:.3f}] vs reference "
        f"{performance['reference']:.3f}"
    )


def test_malformed_labels_and_a_torn_log_line_are_reported_and_skipped(world):
    root = world["root"] / "malformed"
    logs, labels = root / "logs", root / "labels"
    frame, request_ids = write_traffic(world, logs, BASE - timedelta(hours=1), 1, 1000, seed=41)
    part = next(logs.glob("date=*/part-*.jsonl"))
    with part.open("a", encoding="utf-8") as handle:  # a writer killed mid-record
        handle.write('{"ts": "' + (BASE - timedelta(minutes=1)).isoformat() + '", "request_')
    arrived = labels / f"date={BASE.date().isoformat()}"
    # By request id and row: 150 good labels around three bad lines.
    good = [f"{request_ids[0]},{row},{frame['churned'][row]}" for row in range(100)]
    good += [f"{request_ids[1]},{row},{frame['churned'][100 + row]}" for row in range(50)]
    _write_labels(
        arrived / "a.csv",
        "request_id,row,label",
        [*good[:70], "only,two", f"{request_ids[2]},0,maybe", *good[70:], f"{request_ids[2]},x,1"],
    )
    _write_labels(arrived / "b.csv", "id,outcome", ["x,1"])  # a header the feed does not know
    (arrived / "c.csv").write_bytes(b"request_id,row,label\n\xff\xfe,0,1\n")  # not UTF-8
    # By key: 100 more rows (of the 3rd and 4th requests), one key-line with a bad label.
    keyed = [f"{frame['customer_id'][i]},{frame['churned'][i]}" for i in range(200, 300)]
    _write_labels(arrived / "d.csv", "customer_id,label", [*keyed, "M999-000000001,2"])
    result = monitor(world, root / "out", logs, labels, BASE, 1)
    reasons = {(Path(s["file"]).name, s["line"]): s["reason"] for s in result["skipped"]}
    assert "torn line" in reasons[(part.name, 11)]
    assert reasons[("a.csv", 72)] == "2 fields, expected 3"
    assert "label 'maybe' is not one of" in reasons[("a.csv", 73)]
    assert "invalid literal" in reasons[("a.csv", 154)]
    assert "expected 'request_id,row,label' or 'customer_id,label'" in reasons[("b.csv", 1)]
    assert "not UTF-8" in reasons[("c.csv", None)]
    assert "is not one of" in reasons[("d.csv", 102)]
    assert result["skipped_total"] == 7
    # Every complete record and every good label counts.
    assert result["window"]["rows"] == 1000 and result["window"]["requests"] == 10
    assert result["window"]["labelled_rows"] == 250
    assert result["labels"] == {"files": 4, "records": 250}
    report = (root / "out" / "report.html").read_text()
    assert "torn line" in report


def test_a_champion_older_than_max_age_is_stale(world):
    root = world["root"] / "stale"
    result = monitor(
        world, root / "out", root / "logs", root / "labels",
        datetime.now(UTC) + timedelta(days=120), 24,
    )  # fmt: skip
    assert result["status"] == "stale"
    assert result["alarms"][0]["kind"] == "stale"
    assert result["alarms"][0]["age_days"] > 90 == result["alarms"][0]["max_age_days"]
    assert result["window"]["rows"] == 0


def test_bad_window_end_is_bad_input(world, tmp_path):
    code, result = run_cli("monitor", "--spec", CHURN_SPEC, "--end", "yesterday", "--out", tmp_path)
    assert code == 2 and "--end 'yesterday': expected an ISO-8601 time" in result["error"]
    naive = "2026-01-01T00:00:00"
    code, result = run_cli("monitor", "--spec", CHURN_SPEC, "--end", naive, "--out", tmp_path)
    assert code == 2
    assert f"--end '{naive}': expected an ISO-8601 time with a zone" in result["error"]
    # The labelled batch reads its window with the same parser and the same message.
    code, result = run_cli(
        "labelled-batch", "--spec", CHURN_SPEC, "--start", naive,
        "--end", "2026-01-01T06:00:00Z", "--out", tmp_path / "batch",
    )  # fmt: skip
    assert code == 2 and f"--start '{naive}': expected an ISO-8601" in result["error"]
    assert result["result"] == {"rule": "time", "field": "--start"}


def test_monitor_step_in_the_task_container(world, task_image):
    """The step as the monitor DAG runs it: hardened container, no network, the store and
    the logs mounted, the labels read-only."""
    root = world["root"] / "container"
    logs, labels = root / "logs", root / "labels"
    write_traffic(world, logs, BASE - timedelta(hours=1), 1, 1000, seed=51, covariate_drift=0.3)
    labels.mkdir(parents=True)
    work = root / "work"
    work.mkdir()
    home = world["home"]
    for path in (home, work):
        subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(path)], check=True)
    for path in (root, logs, labels, world["root"], home.parent):
        path.chmod(0o755)
    include = CHURN_SPEC.parents[1]
    done = subprocess.run(
        [
            "docker", "run", "--rm", "--network", "none", "--read-only",
            "--tmpfs", "/tmp:rw,noexec,nosuid", "--user", f"{NOBODY}:{NOBODY}",
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "-v", f"{include}:/opt/include:ro",
            "-v", f"{home}:{home}",
            "-v", f"{logs}:/logs:ro", "-v", f"{labels}:/labels:ro",
            "-v", f"{work}:/work",
            "-e", f"MLOPS_PACK_HOME={home}",
            task_image,
            "monitor", "--spec", "/opt/include/models/churn.yaml", "--log-dir", "/logs",
            "--labels-dir", "/labels", "--end", BASE.isoformat(), "--hours", "1",
            "--out", "/work",
        ],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads((work / "result.json").read_text())
    assert result["status"] == "drift" and result["exit_code"] == 0
    assert result["window"]["rows"] == 1000
    for name in ("monitor.json", "report.html", "metrics.prom"):
        assert (work / name).stat().st_size > 0
    assert "mlops_monitor_status" in (work / "metrics.prom").read_text()
    assert result["champion_version"] == "1"
    shutil.rmtree(work)
