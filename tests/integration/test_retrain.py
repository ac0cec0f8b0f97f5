"""Whole in-process retrains on real files and a real MLflow store."""

from __future__ import annotations

import json

from mlops_pack.errors import EXIT_OK, EXIT_REJECTED
from mlops_pack.registry import CHAMPION, PREVIOUS
from support import CHURN_SPEC, DIABETES_SPEC, run_cli


def _data_sha256(out) -> str:
    """The sha256 of the batch a run trained on."""
    return json.loads((out / "train.json").read_text())["data_sha256"]


def test_churn_twice_then_a_worse_challenger_is_rejected(store, registry, tmp_path):
    code, first = run_cli(
        "retrain", "--spec", CHURN_SPEC, "--out", tmp_path / "r1", "--run-id", "run-1"
    )
    assert code == EXIT_OK, first
    assert first["result"]["verdict"] == "promote"
    assert registry.alias("churn", CHAMPION).version == "1"
    train1 = json.loads((tmp_path / "r1" / "train.json").read_text())
    # Out of time: a fifth of month 1 held out, the rest trained on, nothing else lost.
    assert train1["holdout"]["strategy"] == "out_of_time"
    assert (train1["holdout_rows"], train1["train_rows"]) == (1_600, 6_400)
    assert train1["holdout_rows_excluded"] == 0
    # What train and evaluate record on the version's run (each in one request).
    run = registry.client.get_run(registry.version("churn", "1").run_id).data
    assert run.params["param.max_iter"] == "150" and run.params["seed"] == "42"
    assert run.tags["mlops.version.scikit-learn"]
    assert run.metrics["train_rows"] == 6_400 and run.metrics["holdout_rows"] == 1_600
    assert 0.5 < run.metrics["holdout_roc_auc"] <= 1.0

    code, second = run_cli(
        "retrain",
        "--spec",
        CHURN_SPEC,
        "--data",
        "churn/churn_month_02.csv",
        "--out",
        tmp_path / "r2",
    )
    assert code in (EXIT_OK, EXIT_REJECTED), second
    evaluation = json.loads((tmp_path / "r2" / "evaluation.json").read_text())
    assert evaluation["champion"]["version"] == "1"
    # Both scored on v2's own holdout: the newest rows of month 2.
    pin = registry.version("churn", "2").tags["mlops.holdout_sha256"]
    assert evaluation["holdout_sha256"] == pin
    assert evaluation["holdout"]["source_data_sha256"] == _data_sha256(tmp_path / "r2")
    assert (
        evaluation["champion"]["holdout_sha256"]
        == evaluation["challenger"]["holdout_sha256"]
        == pin
    )
    assert (
        len(next(d for d in evaluation["deltas"] if d["metric"] == "roc_auc")["bootstrap"]) == 1000
    )
    champion_after_second = registry.alias("churn", CHAMPION).version
    assert champion_after_second == ("2" if code == EXIT_OK else "1")

    code, third = run_cli(
        "retrain", "--spec", CHURN_SPEC, "--data", "churn/churn_noisy.csv", "--out", tmp_path / "r3"
    )
    assert code == EXIT_REJECTED, third
    decision = third["result"]["decision"]
    assert decision["verdict"] == "reject"
    assert decision["summary"].startswith("REJECT churn v3")
    assert any(
        c["kind"] in ("primary", "floor") and c["verdict"] == "fail" for c in decision["checks"]
    )
    assert registry.alias("churn", CHAMPION).version == champion_after_second
    assert registry.version("churn", "3").tags["mlops.verdict"] == "reject"
    kinds = [e["kind"] for e in registry.history("churn")]
    assert kinds.count("decision") == 3
    assert kinds.count("promotion") == (2 if champion_after_second == "2" else 1)
    if champion_after_second == "2":
        assert registry.alias("churn", PREVIOUS).version == "1"


def test_regression_example_runs_and_a_tie_is_not_promoted(store, registry, tmp_path):
    code, first = run_cli("retrain", "--spec", DIABETES_SPEC, "--out", tmp_path / "r1")
    assert code == EXIT_OK, first
    rmse = first["result"]["decision"]
    assert rmse["verdict"] == "promote"
    evaluation = json.loads((tmp_path / "r1" / "evaluation.json").read_text())
    assert 0.3 < evaluation["challenger"]["metrics"]["r2"] < 0.8
    # Same data, same seed: an identical model. Under superiority a tie must not promote.
    code, second = run_cli("retrain", "--spec", DIABETES_SPEC, "--out", tmp_path / "r2")
    assert code == EXIT_REJECTED, second
    primary = next(c for c in second["result"]["decision"]["checks"] if c["kind"] == "primary")
    assert primary["value"] == 0.0 and primary["verdict"] == "fail"
    assert registry.alias("diabetes", CHAMPION).version == "1"


def test_step_by_step_cli_matches_the_pipeline(store, registry, tmp_path):
    """The separate step commands (what containers run) hand off through files and MLflow."""
    spec = CHURN_SPEC
    assert run_cli("validate", "--spec", spec, "--out", tmp_path / "v")[0] == EXIT_OK
    code, trained = run_cli("train", "--spec", spec, "--out", tmp_path / "t")
    assert code == EXIT_OK, trained
    code, evaluated = run_cli(
        "evaluate",
        "--spec",
        spec,
        "--train-result",
        tmp_path / "t" / "train.json",
        "--out",
        tmp_path / "e",
    )
    assert code == EXIT_OK and evaluated["result"]["champion"] is None
    code, gated = run_cli(
        "gate",
        "--spec",
        spec,
        "--evaluation",
        tmp_path / "e" / "evaluation.json",
        "--out",
        tmp_path / "g",
    )
    assert code == EXIT_OK and gated["result"]["verdict"] == "promote"
    decision = tmp_path / "g" / "decision.json"
    code, promoted = run_cli(
        "promote", "--spec", spec, "--decision", decision, "--out", tmp_path / "p"
    )
    assert code == EXIT_OK and promoted["result"]["outcome"] == "promoted"
    # A retried promotion is a no-op, and the history holds one promotion event.
    code, again = run_cli(
        "promote", "--spec", spec, "--decision", decision, "--out", tmp_path / "p2"
    )
    assert code == EXIT_OK and again["result"]["outcome"] == "noop"
    assert [e["kind"] for e in registry.history("churn")].count("promotion") == 1


def test_training_on_unvalidated_data_is_refused(store, registry, tmp_path):
    code, result = run_cli("train", "--spec", CHURN_SPEC, "--out", tmp_path / "t")
    assert code == 2
    assert "has not passed validation" in result["error"]
    assert registry.client.search_model_versions("name='churn'") == []
