"""The holdout refresh is deliberate, recorded, re-scores the champion, and invalidates
decisions made on the old holdout."""

from __future__ import annotations

from mlops_pack.errors import EXIT_BAD_INPUT, EXIT_OK
from support import pinned_churn_spec, run_cli


def test_refresh_is_recorded_and_old_decisions_are_refused(store, registry, tmp_path):
    CHURN_SPEC = pinned_churn_spec(tmp_path)
    assert run_cli("retrain", "--spec", CHURN_SPEC, "--out", tmp_path / "r1")[0] == EXIT_OK
    old_pin = registry.model_tags("churn")["mlops.holdout_sha256"]
    lenient = '{"gate": {"mode": "non_inferiority", "margin": 0.2}}'
    month2 = "churn/churn_month_02.csv"
    code, _ = run_cli(
        "retrain",
        "--spec",
        CHURN_SPEC,
        "--data",
        month2,
        "--overrides",
        lenient,
        "--out",
        tmp_path / "r2",
    )
    assert code == EXIT_OK
    # A third challenger is gated on the old holdout, then the holdout is refreshed.
    assert (
        run_cli("train", "--spec", CHURN_SPEC, "--data", month2, "--out", tmp_path / "t3")[0] == 0
    )
    run_cli("evaluate", "--spec", CHURN_SPEC, "--challenger", "3", "--out", tmp_path / "e3")
    code, gated = run_cli(
        "gate",
        "--spec",
        CHURN_SPEC,
        "--overrides",
        lenient,
        "--evaluation",
        tmp_path / "e3" / "evaluation.json",
        "--out",
        tmp_path / "g3",
    )
    assert gated["result"]["verdict"] == "promote"

    noisy = "churn/churn_noisy.csv"
    assert (
        run_cli("validate", "--spec", CHURN_SPEC, "--data", noisy, "--out", tmp_path / "vh")[0] == 0
    )
    code, refreshed = run_cli(
        "refresh-holdout",
        "--spec",
        CHURN_SPEC,
        "--data",
        "churn/churn_noisy.csv",
        "--reason",
        "quarterly refresh",
        "--out",
        tmp_path / "h",
    )
    assert code == EXIT_OK, refreshed
    new_pin = registry.model_tags("churn")["mlops.holdout_sha256"]
    assert new_pin != old_pin == refreshed["result"]["old_holdout_sha256"]
    assert refreshed["result"]["champion_version"] == "2"
    assert 0.5 < refreshed["result"]["champion_metrics"]["roc_auc"] < 1.0
    events = registry.history("churn")
    refresh = next(e for e in events if e["kind"] == "holdout_refreshed")
    assert refresh["reason"] == "quarterly refresh" and refresh["holdout_sha256"] == new_pin
    assert any(e["kind"] == "champion_rescored" for e in events)

    # The decision made on the old holdout can no longer promote, nor be re-gated.
    code, promoted = run_cli(
        "promote",
        "--spec",
        CHURN_SPEC,
        "--decision",
        tmp_path / "g3" / "decision.json",
        "--out",
        tmp_path / "p3",
    )
    assert code == EXIT_BAD_INPUT and "holdout was refreshed" in promoted["error"]
    code, regated = run_cli(
        "gate",
        "--spec",
        CHURN_SPEC,
        "--evaluation",
        tmp_path / "e3" / "evaluation.json",
        "--out",
        tmp_path / "g3b",
    )
    assert code == EXIT_BAD_INPUT and "different holdouts" in regated["error"]
    assert registry.alias("churn", "champion").version == "2"
