"""The comparison report stored with each decision, and what the Models page reads.

Classification: the real pipeline (in-process) promotes month 1 and rejects month 2
under a margin no challenger meets; the report on the challenger's run shows the
verdict, the failed checks and the plots. Regression: a real Ridge and a real
DecisionTree on the diabetes data, drawn by the same renderer.
"""

from __future__ import annotations

import html
import json
import re

from mlops_pack.errors import EXIT_OK, EXIT_REJECTED
from mlops_pack.records import DecisionRecord, EvaluationRecord
from support import churn_spec_copy, run_cli


def _unserved(raw: dict) -> None:
    raw.pop("serving", None)


def test_rejected_decision_has_its_report_and_shows_on_the_models_page(store, tmp_path):
    from mlops_pack.overview import HistoryIndex, describe, summary
    from mlops_pack.registry import Registry

    spec = churn_spec_copy(tmp_path, _unserved)
    assert run_cli("retrain", "--spec", spec, "--out", tmp_path / "r1")[0] == EXIT_OK
    strict = json.dumps({"gate": {"margin": 0.2}})  # superiority by 0.2 AUC: rejected
    code, _ = run_cli(
        "retrain", "--spec", spec, "--data", "churn/churn_month_02.csv",
        "--overrides", strict, "--out", tmp_path / "r2",
    )  # fmt: skip
    assert code == EXIT_REJECTED
    decision = DecisionRecord.model_validate_json((tmp_path / "r2/decision.json").read_text())
    failed = [c.name for c in decision.checks if c.verdict == "fail"]
    assert decision.verdict == "reject" and failed

    # Stored with the decision on the challenger's run, and named by the decision event.
    registry = Registry()
    events = registry.history("churn", "decision")
    assert events[-1]["report"] == f"decisions/{decision.decision_id}/report.html"
    run_id = registry.version("churn", decision.challenger_version).run_id
    stored = registry.download(f"runs:/{run_id}/{events[-1]['report']}", tmp_path / "dl")
    report = stored.read_text()
    assert report == (tmp_path / "r2" / "report.html").read_text()

    text = re.sub(r"<[^>]+>", " ", report)
    assert "REJECT" in text and html.escape(decision.summary) in report
    assert "Failed checks: " + ", ".join(failed) in text
    for check in decision.checks:
        assert check.name in text
    # ROC, precision-recall, calibration, the bootstrap with its interval, the slices.
    assert report.count("<svg") == 5
    for caption in ("ROC", "Precision-recall", "Calibration", "paired bootstrap", "Per-slice"):
        assert caption in report, caption
    assert "threshold &gt; +0.2000" in report  # the bootstrap plot marks the rule
    # Self-contained: nothing to run and nothing to fetch (SVG namespaces are names only).
    for fetching in ("<script", "<link", " src=", 'href="http', "url(http", "@import"):
        assert fetching not in report, fetching

    # The evaluation kept the curve points the report was drawn from.
    evaluation = EvaluationRecord.model_validate_json(
        (tmp_path / "r2" / "evaluation.json").read_text()
    )
    assert set(evaluation.curves) == {"task", "champion", "challenger"}
    assert len(evaluation.curves["challenger"]["roc"]["fpr"]) <= 200

    # What the Models page shows, from the same store.
    index = HistoryIndex(registry)
    history = index.events(["churn"])["churn"]
    row = summary("churn", history)
    assert row["champion"] == "1" and row["previous"] is None
    assert row["decision"]["verdict"] == "reject"
    assert row["decision"]["decision_id"] == decision.decision_id
    assert row["monitor"] is None
    assert describe(row["decision"]).startswith(f"REJECT v{decision.challenger_version} vs v1")
    # A new event of a kind the page does not know shows up on the next check, generically.
    registry.append_event("churn", "escalation", {"reason": "3 retrains did not help"})
    index.refresh()
    newest = index.events(["churn"])["churn"][-1]
    assert newest["kind"] == "escalation"
    assert describe(newest) == "reason=3 retrains did not help"


def test_regression_report_plots_predicted_against_actual(tmp_path):
    import numpy as np
    from mlops_pack.gate import decide
    from mlops_pack.records import MetricDelta, ModelScore
    from mlops_pack.spec import load_spec
    from mlops_pack.steps.comparison_report import render
    from mlops_pack.steps.curves import curves
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge
    from sklearn.tree import DecisionTreeRegressor
    from support import DIABETES_SPEC

    spec = load_spec(DIABETES_SPEC)
    x, y = load_diabetes(return_X_y=True)
    champion = DecisionTreeRegressor(max_depth=3, random_state=0).fit(x[:300], y[:300])
    challenger = Ridge(alpha=0.1).fit(x[:300], y[:300])
    old, new = champion.predict(x[300:]), challenger.predict(x[300:])
    rmse = {m: float(np.sqrt(np.mean((p - y[300:]) ** 2))) for m, p in (("old", old), ("new", new))}

    def score(version: str, value: float) -> ModelScore:
        return ModelScore(
            version=version, artifact_sha256="a", holdout_sha256="h" * 64,
            metrics={"rmse": value, "mae": value, "r2": 0.4}, size_bytes=1,
            latency_ms_p50=1, latency_ms_p95=1, batch_rows_per_s=1,
        )  # fmt: skip

    rng = np.random.default_rng(0)
    draws = sorted(rmse["old"] - rmse["new"] + rng.normal(0, 1, 1000))
    evaluation = EvaluationRecord(
        model=spec.name, holdout_sha256="h" * 64, holdout_rows=len(y) - 300,
        spec_sha256=spec.sha256(), champion=score("1", rmse["old"]),
        challenger=score("2", rmse["new"]),
        deltas=[MetricDelta(metric="rmse", higher_is_better=False,
                            improvement=rmse["old"] - rmse["new"], bootstrap=draws)],
        curves=curves(spec, y[300:], new, old), bootstrap_resamples=1000,
    )  # fmt: skip
    decision = decide(evaluation, spec.gate, pinned_holdout_sha256="h" * 64)
    report = render(decision, evaluation)
    (tmp_path / "report.html").write_text(report)
    assert decision.verdict.upper() in report and html.escape(decision.summary) in report
    assert "Predicted vs actual (142 holdout rows, sampled)" in report
    assert "Residuals (142 rows)" in report and "Bootstrap: improvement in rmse" in report
    assert "ROC" not in report
    assert report.count("<svg") == 3
