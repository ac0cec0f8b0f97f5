"""The documented extension point: a custom metric from an in-house module, end to end."""

from __future__ import annotations

import json
import shutil
import sys

import yaml
from mlops_pack.errors import EXIT_OK, EXIT_REJECTED
from support import CHURN_SPEC, ROOT, run_cli


def test_custom_metric_reaches_spec_evaluation_and_gate(store, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "include" / "extensions"))
    monkeypatch.setenv("MLOPS_PACK_EXTENSIONS", "churn_extras")
    include = tmp_path / "include"
    shutil.copytree(ROOT / "include" / "expectations", include / "expectations")
    spec = yaml.safe_load(CHURN_SPEC.read_text())
    spec["metrics"].append("top_decile_lift")
    spec["gate"]["guardrails"].append({"metric": "top_decile_lift", "tolerance": 0.5})
    (include / "models").mkdir()
    path = include / "models" / "churn.yaml"
    path.write_text(yaml.safe_dump(spec))

    assert run_cli("retrain", "--spec", path, "--out", tmp_path / "r1")[0] == EXIT_OK
    code, second = run_cli(
        "retrain", "--spec", path, "--data", "churn/churn_month_02.csv", "--out", tmp_path / "r2"
    )
    assert code in (EXIT_OK, EXIT_REJECTED), second
    evaluation = json.loads((tmp_path / "r2" / "evaluation.json").read_text())
    lift = evaluation["challenger"]["metrics"]["top_decile_lift"]
    assert 1.5 < lift < 5.0  # the top decile churns several times more than average
    delta = next(d for d in evaluation["deltas"] if d["metric"] == "top_decile_lift")
    assert len(delta["bootstrap"]) == 1000
    checks = {c["name"] for c in second["result"]["decision"]["checks"]}
    assert "guardrail top_decile_lift" in checks
    assert "churn_extras" in sys.modules
