"""Rollback moves champion back to previous (or a named version), recorded with a reason."""

from __future__ import annotations

from mlops_pack.errors import EXIT_BAD_INPUT, EXIT_OK
from support import CHURN_SPEC, promote_month_two, run_cli


def test_rollback_to_previous_and_to_a_named_version(store, registry, tmp_path):
    assert run_cli("retrain", "--spec", CHURN_SPEC, "--out", tmp_path / "r1")[0] == EXIT_OK
    code, _ = run_cli("rollback", "--spec", CHURN_SPEC, "--reason", "bad", "--out", tmp_path / "x")
    assert code == EXIT_BAD_INPUT  # nothing to roll back to yet
    assert promote_month_two(tmp_path / "r2") == EXIT_OK
    assert registry.alias("churn", "champion").version == "2"

    code, result = run_cli(
        "rollback",
        "--spec",
        CHURN_SPEC,
        "--reason",
        "complaints from sales",
        "--run-id",
        "rollback-1",
        "--out",
        tmp_path / "rb",
    )
    assert code == EXIT_OK, result
    assert result["result"]["outcome"] == "rolled_back"
    assert registry.alias("churn", "champion").version == "1"
    assert registry.alias("churn", "previous").version == "2"
    event = registry.history("churn", "rollback")[-1]
    assert (event["from_version"], event["to_version"]) == ("2", "1")
    assert event["reason"] == "complaints from sales" and event["dag_run_id"] == "rollback-1"

    code, result = run_cli(
        "rollback",
        "--spec",
        CHURN_SPEC,
        "--reason",
        "forward again",
        "--to-version",
        "2",
        "--out",
        tmp_path / "rb2",
    )
    assert code == EXIT_OK and registry.alias("churn", "champion").version == "2"
    code, result = run_cli(
        "rollback",
        "--spec",
        CHURN_SPEC,
        "--reason",
        "typo",
        "--to-version",
        "99",
        "--out",
        tmp_path / "rb3",
    )
    assert code == EXIT_BAD_INPUT and "does not exist" in result["error"]
