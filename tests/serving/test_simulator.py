"""``mlops-pack simulate`` against the real model server container, over real HTTP."""

from __future__ import annotations

import csv
import json
from datetime import date, timedelta

from mlops_pack.cli import main
from mlops_pack.datagen.traffic import Scenario, day_rows
from mlops_pack.serving.prediction_log import read_records

START = date(2026, 3, 1)


def _simulate(served, tmp_path, key: str, *args: str) -> int:
    (tmp_path / "key").write_text(key)
    return main(
        [
            "simulate",
            "--spec",
            str(served["spec"]),
            "--server-url",
            served["server"].url,
            "--prediction-key-file",
            str(tmp_path / "key"),
            "--labels-dir",
            str(tmp_path / "labels"),
            *args,
        ]
    )


def test_simulate_sends_days_of_traffic_and_writes_delayed_labels(served, tmp_path):
    labels, out = tmp_path / "labels", tmp_path / "out"
    code = _simulate(
        served,
        tmp_path,
        served["server"].secret("prediction_key"),
        "--days",
        "3",
        "--rows-per-day",
        "120",
        "--batch-rows",
        "50",
        "--start-date",
        START.isoformat(),
        "--label-delay-days",
        "2",
        "--onset-day",
        "1",
        "--covariate-drift",
        "0.6",
        "--out",
        str(out),
    )
    assert code == 0
    record = json.loads((out / "simulation.json").read_text())
    assert record["requests"] == 9 and record["rows"] == 360
    assert [d["drifting"] for d in record["days"]] == [False, True, True]

    # The server answered and logged every request under the simulator's request ids.
    logged = {
        r["request_id"]: r
        for r in read_records(served["home"] / "serving" / "churn" / "predictions")
        if r["request_id"].startswith(f"sim-{START.isoformat()[:7]}")
    }
    assert len(logged) == 9
    assert sum(len(r["predictions"]) for r in logged.values()) == 360

    # Labels of day D are in the feed under D+2, one line per row, equal to the truth.
    scenario = Scenario(days=3, rows_per_day=120, start=START, onset_day=1, covariate_drift=0.6)
    for day in range(3):
        stamp = START + timedelta(days=day)
        arrival = stamp + timedelta(days=2)
        files = list((labels / f"date={arrival.isoformat()}").glob("*.csv"))
        assert [f.name for f in files] == [f"sim-{stamp.isoformat()}.csv"]
        with files[0].open() as handle:
            lines = list(csv.reader(handle))
        assert lines[0] == ["request_id", "row", "label"]
        truth = day_rows(scenario, day)["churned"].tolist()
        assert [int(label) for _, _, label in lines[1:]] == truth
        for request_id, row, _ in lines[1:]:
            assert int(row) < len(logged[request_id]["predictions"])
    # The covariate knob reached the server: the drifted days score higher churn.
    means = [d["mean_prediction"] for d in record["days"]]
    assert min(means[1:]) > means[0] + 0.05, means
    assert not list(labels.rglob(".*"))  # nothing half-written left behind


def test_simulate_with_a_wrong_key_is_bad_input(served, tmp_path, capsys):
    code = _simulate(served, tmp_path, "not-the-key", "--days", "1", "--rows-per-day", "10")
    assert code == 2
    assert "HTTP 401" in capsys.readouterr().err
    assert not (tmp_path / "labels").exists()


def test_simulate_refuses_a_knob_out_of_range(served, tmp_path, capsys):
    code = _simulate(served, tmp_path, "unused", "--label-noise", "1.5")
    assert code == 2
    assert "--label-noise" in capsys.readouterr().err
