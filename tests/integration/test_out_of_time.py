"""Out-of-time holdouts and training windows, through the CLI on real files and MLflow.

The drift scenario is the one that made the pinned holdout unfit as a default: a
champion trained on month 1, a challenger on month 6 after concept drift. Judged on rows
of the newest batch, the challenger that is better on the drifted world is promoted.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from mlops_pack.datagen import churn
from mlops_pack.hashing import sha256_file
from support import CHURN_SPEC, churn_spec_copy, run_cli

ROWS = 12_000


def _auc_on(registry, version: str, frame: pd.DataFrame) -> float:
    from mlops_pack.model_io import MODEL_FILE, load_model, predict
    from mlops_pack.spec import load_spec
    from sklearn.metrics import roc_auc_score

    spec = load_spec(CHURN_SPEC)
    found = registry.version("churn", version)
    with tempfile.TemporaryDirectory() as tmp:
        local = registry.download(f"{found.source}/{MODEL_FILE}", Path(tmp))
        model = load_model(local, found.tags["mlops.artifact_sha256"])
        scores = predict(spec, model, frame)
    return float(roc_auc_score(frame["churned"] == 1, scores))


def test_concept_drift_challenger_is_promoted_on_the_newest_rows(store, data_dir, registry):
    drifted = data_dir / "churn" / "churn_month_06_concept.csv"
    churn.write(churn.ChurnConfig(rows=ROWS, month=6, concept_drift=1.0), drifted)
    first = data_dir / "churn" / "churn_month_01_small.csv"
    churn.write(churn.ChurnConfig(rows=ROWS, month=1), first)
    out = store.parent
    code, result = run_cli("retrain", "--spec", CHURN_SPEC, "--data", first, "--out", out / "r1")
    assert code == 0, result
    code, result = run_cli("retrain", "--spec", CHURN_SPEC, "--data", drifted, "--out", out / "r2")
    decision = result["result"]["decision"]
    assert code == 0, decision["summary"]
    assert decision["verdict"] == "promote" and decision["challenger_version"] == "2"
    holdout = decision["holdout"]
    assert holdout["strategy"] == "out_of_time"
    assert holdout["source_data_sha256"] == sha256_file(drifted)
    assert holdout["rows"] == round(0.2 * ROWS)
    evaluation = json.loads((out / "r2" / "evaluation.json").read_text())
    assert evaluation["champion"]["holdout_sha256"] == evaluation["challenger"]["holdout_sha256"]
    assert evaluation["holdout_sha256"] == decision["holdout_sha256"]
    # The promoted model is the better one on a fresh sample of the drifted month.
    fresh = churn.frame(churn.ChurnConfig(rows=20_000, month=7, concept_drift=1.0))
    assert _auc_on(registry, "2", fresh) > _auc_on(registry, "1", fresh) + 0.02
    assert registry.alias("churn", "champion").version == "2"


def _timed(frame: pd.DataFrame, start: str) -> pd.DataFrame:
    """The batch with an observed_at column, one minute apart, oldest first."""
    times = pd.date_range(start, periods=len(frame), freq="min", tz="UTC")
    return frame.assign(observed_at=times.strftime("%Y-%m-%dT%H:%M:%SZ"))


def _window_spec(tmp_path: Path, batches: int = 2, retention: dict | None = None) -> Path:
    def edit(raw):
        raw["columns"].append({"name": "observed_at", "type": "categorical", "role": "id"})
        raw["holdout"] = {"strategy": "out_of_time", "fraction": 0.2, "time_column": "observed_at"}
        raw["training"] = {"window": {"batches": batches}}
        raw["validation"]["min_rows"] = 100
        raw["gate"]["floors"] = {}  # small batches; the gate is not under test here
        if retention:
            raw["retention"] = retention

    return churn_spec_copy(tmp_path / f"w{batches}", edit)


def _write(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def test_window_time_cut_and_holdout_keys_never_train(store, data_dir, tmp_path, registry):
    spec = _window_spec(tmp_path)
    month1 = _timed(churn.frame(churn.ChurnConfig(rows=3_000, month=1)), "2026-01-01")
    month2 = _timed(churn.frame(churn.ChurnConfig(rows=3_000, month=2)), "2026-02-01")
    # 40 customers of month 1 come back in month 2, at its very end: in the holdout.
    month2.loc[month2.index[-40:], "customer_id"] = month1["customer_id"].iloc[:40].to_numpy()
    first = _write(month1, data_dir / "timed" / "m1.csv")
    second = _write(month2, data_dir / "timed" / "m2.csv")
    code, result = run_cli("retrain", "--spec", spec, "--data", first, "--out", tmp_path / "r1")
    assert code == 0, result
    code, result = run_cli("retrain", "--spec", spec, "--data", second, "--out", tmp_path / "r2")
    assert code in (0, 3), result  # promoted or not: the rows it trained on are the point
    trained = json.loads((tmp_path / "r2" / "train.json").read_text())
    assert trained["window"] == [sha256_file(second), sha256_file(first)]
    start = pd.Timestamp("2026-02-01", tz="UTC")
    latest = [start + pd.Timedelta(minutes=m) for m in (2_400, 2_999)]
    assert trained["holdout"]["time_range"] == [str(t) for t in latest]
    assert trained["holdout_rows"] == 600
    # month 2 minus its 600 latest rows, plus month 1 minus the 40 returning customers
    assert trained["holdout_rows_excluded"] == 40
    assert trained["train_rows"] == (3_000 - 600) + (3_000 - 40)
    decision = json.loads((tmp_path / "r2" / "decision.json").read_text())
    assert decision["holdout"]["time_range"] == trained["holdout"]["time_range"]


@pytest.mark.parametrize(
    ("case", "rule"),
    [
        ("unparsable_time", "holdout.time_column"),
        ("missing_time", "columns: missing ['observed_at']"),
        ("too_small", "holdout.min_rows"),
    ],
)
def test_bad_out_of_time_batches_register_nothing(store, data_dir, tmp_path, registry, case, rule):
    spec = _window_spec(tmp_path, batches=1)
    frame = _timed(churn.frame(churn.ChurnConfig(rows=3_000, month=1)), "2026-01-01")
    if case == "unparsable_time":
        frame.loc[frame.index[7], "observed_at"] = "last tuesday"
    elif case == "missing_time":
        frame = frame.drop(columns="observed_at")
    else:
        frame = frame.head(300)  # 60 holdout rows < holdout.min_rows (100)
    batch = _write(frame, data_dir / "bad" / f"{case}.csv")
    code, result = run_cli("retrain", "--spec", spec, "--data", batch, "--out", tmp_path / "r")
    assert code == 2, result
    assert rule in result["error"] and str(batch) in result["error"]
    from mlflow.exceptions import MlflowException

    try:
        versions = registry.client.search_model_versions("name = 'churn'")
    except MlflowException:
        versions = []
    assert versions == []


def _small(**sections):
    """A spec edit for 2,000-row batches, plus the given top-level sections."""

    def edit(raw):
        raw["validation"]["min_rows"] = 100
        raw["gate"]["floors"] = {}
        raw.update(sections)

    return edit


def test_window_over_a_pruned_batch_is_refused(store, data_dir, tmp_path, registry):
    """A window that needs a batch the retention policy pruned refuses to train."""
    small = {m: churn.frame(churn.ChurnConfig(rows=2_000, month=m)) for m in (1, 2, 3, 4)}
    paths = {m: _write(small[m], data_dir / "win" / f"m{m}.csv") for m in small}
    narrow = churn_spec_copy(tmp_path / "narrow", _small(retention={"batches": 1}))
    code, result = run_cli("retrain", "--spec", narrow, "--data", paths[1], "--out", tmp_path / "a")
    assert code == 0, result
    for month in (2, 3):  # two more versions, neither promoted: month 2's is not live
        for step in ("validate", "train"):
            code, result = run_cli(
                step, "--spec", narrow, "--data", paths[month], "--out", tmp_path / f"{step}{month}"
            )
            assert code == 0, result
    code, _ = run_cli("data", "prune", "--spec", narrow, "--apply")
    assert code == 0
    from mlops_pack.spec import load_spec
    from mlops_pack.steps import retention

    pruned = [b.sha256 for b in retention.inventory(registry, "churn") if b.pruned_at]
    assert pruned == [sha256_file(paths[2])]
    wide = churn_spec_copy(tmp_path / "wide", _small(training={"window": {"batches": 4}}))
    assert load_spec(wide).training.window.batches == 4
    versions_before = len(registry.client.search_model_versions("name = 'churn'"))
    code, result = run_cli("validate", "--spec", wide, "--data", paths[4], "--out", tmp_path / "v")
    assert code == 0, result
    code, result = run_cli("train", "--spec", wide, "--data", paths[4], "--out", tmp_path / "t")
    assert code == 2, result
    assert "training.window" in result["error"] and sha256_file(paths[2])[:12] in result["error"]
    assert len(registry.client.search_model_versions("name = 'churn'")) == versions_before


def test_backtest_catches_a_challenger_that_only_fits_the_newest_month(
    store, data_dir, tmp_path, registry
):
    """With the backtest on, v2 (trained after concept drift) must also hold up on the
    rows v1 was promoted on; it does not, so it is rejected with the backtest named."""

    def edit(raw):
        raw["gate"]["backtest"] = {"enabled": True, "tolerance": 0.0}

    spec = churn_spec_copy(tmp_path, edit)
    first = data_dir / "churn" / "bt_month_01.csv"
    drifted = data_dir / "churn" / "bt_month_06_concept.csv"
    churn.write(churn.ChurnConfig(rows=8_000, month=1), first)
    churn.write(churn.ChurnConfig(rows=8_000, month=6, concept_drift=1.0), drifted)
    code, result = run_cli("retrain", "--spec", spec, "--data", first, "--out", tmp_path / "r1")
    assert code == 0, result
    code, result = run_cli("retrain", "--spec", spec, "--data", drifted, "--out", tmp_path / "r2")
    decision = result["result"]["decision"]
    check = next(c for c in decision["checks"] if c["kind"] == "backtest")
    assert check["verdict"] == "fail" and check["value"] < 0, check
    assert "the champion's own holdout (v1)" in check["detail"]
    assert code == 3 and decision["verdict"] == "reject"
    evaluation = json.loads((tmp_path / "r2" / "evaluation.json").read_text())
    v1_holdout = registry.version("churn", "1").tags["mlops.holdout_sha256"]
    assert evaluation["backtest"]["holdout_sha256"] == v1_holdout
    assert registry.version("churn", "2").tags["mlops.backtest_version"] == "1"
