"""The decision table says what each number is, on decisions the real pipeline made."""

from __future__ import annotations

import json
import re

import yaml
from mlops_pack.errors import EXIT_OK, EXIT_REJECTED
from mlops_pack.gate import decision_table
from mlops_pack.records import DecisionRecord
from support import CHURN_SPEC, ROOT, run_cli


def _rows(table: str) -> dict[str, dict[str, str]]:
    """Cells by column, cut at the header's column starts (cells may contain spaces)."""
    lines = table.splitlines()
    header = lines[0]
    names = ["check", "value", "value is", "rule", "verdict"]
    starts = [header.index(name) if name != "value" else header.index("value ") for name in names]
    assert starts == sorted(starts), header
    out = {}
    for line in lines[2 : lines.index("")]:
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        out[cells[0]] = dict(zip(names, cells, strict=True))
    return out


def test_decision_table_labels_every_value(store, tmp_path):
    include = tmp_path / "include"
    (include / "models").mkdir(parents=True)
    (include / "expectations").symlink_to(ROOT / "include" / "expectations")
    spec = yaml.safe_load(CHURN_SPEC.read_text())
    spec.pop("serving")
    # Region slices (~400 holdout rows each) fall below this size and are skipped.
    spec["gate"]["slices"]["min_size"] = 500
    path = include / "models" / "churn.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert run_cli("retrain", "--spec", path, "--out", tmp_path / "r1")[0] == EXIT_OK
    code, _ = run_cli(
        "retrain", "--spec", path, "--data", "churn/churn_month_02.csv", "--out", tmp_path / "r2"
    )
    assert code in (EXIT_OK, EXIT_REJECTED)
    decision = DecisionRecord.model_validate_json((tmp_path / "r2" / "decision.json").read_text())
    rows = _rows(decision_table(decision))

    by_kind: dict[str, list] = {}
    for check in decision.checks:
        by_kind.setdefault(check.kind, []).append(check)
        assert rows[check.name]["verdict"] == check.verdict.upper()
    primary = rows[by_kind["primary"][0].name]
    assert primary["value is"] == "delta, CI lower 95%"
    assert re.fullmatch(r"[+-]\d\.\d{4}", primary["value"]), primary
    assert {rows[c.name]["value is"] for c in by_kind["guardrail"]} == {"delta, point"}
    assert {rows[c.name]["value is"] for c in by_kind["floor"]} == {"point"}
    assert rows["model size"]["value is"] == "bytes"
    assert rows["latency p95"]["value is"] == "ms, p95"
    skipped = [c for c in by_kind["slice"] if c.verdict == "skip"]
    compared = [c for c in by_kind["slice"] if c.verdict != "skip"]
    assert skipped and compared, by_kind["slice"]
    for check in skipped:  # a row count is shown as one, never as a metric value
        row = rows[check.name]
        assert row["value is"] == "rows"
        assert row["value"] == f"{int(check.value):,}" and row["rule"] == ">= 500", row
    assert {rows[c.name]["value is"] for c in compared} == {"delta, point"}
    assert rows["shared holdout"]["value is"] == ""  # no number, no label

    # The label follows the policy the gate applied: a run at 90% confidence says so.
    evaluation = tmp_path / "r2" / "evaluation.json"
    overrides = json.dumps({"gate": {"confidence": 0.9}})
    args = ("gate", "--spec", path, "--evaluation", evaluation, "--overrides", overrides)
    code, result = run_cli(*args, "--out", tmp_path / "g")
    assert code in (EXIT_OK, EXIT_REJECTED), result
    again = DecisionRecord.model_validate_json((tmp_path / "g" / "decision.json").read_text())
    rows = _rows(decision_table(again))
    assert rows[by_kind["primary"][0].name]["value is"] == "delta, CI lower 90%"
