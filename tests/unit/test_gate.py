"""Unit tests of the gate: ``mlops_pack.gate.decide`` and its helpers.

Every test builds its evaluation and policy with the small helpers below, so each one
states only what it is about: the metrics of the two models, the deltas (computed from the
metrics unless a test gives them), the bootstrap samples and the policy knobs under test.
"""

from __future__ import annotations

import math
import random
import re
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from mlops_pack.errors import HoldoutMismatchError
from mlops_pack.gate import decide, decision_table, quantile
from mlops_pack.metric_catalog import metric_info
from mlops_pack.records import (
    DecisionRecord,
    EvaluationRecord,
    MetricDelta,
    ModelScore,
    SliceScore,
    to_json,
)
from mlops_pack.spec import Budgets, Gate, Guardrail, Primary, Slices, Uncertainty
from mlops_pack.steps.metrics import paired_bootstrap
from mlops_pack.steps.metrics import score as metric_score

HOLDOUT = "a" * 64
OTHER_HOLDOUT = "b" * 64
SPEC_SHA = "c" * 64
DATA_SHA = "d" * 64
MODEL = "churn"

_UNSET: Any = object()


# Helpers ------------------------------------------------------------------------------


def score(
    version: str,
    metrics: dict[str, float | None],
    *,
    holdout: str = HOLDOUT,
    size_bytes: int = 1_000,
    latency_ms_p95: float = 5.0,
) -> ModelScore:
    return ModelScore(
        version=version,
        artifact_sha256="e" * 64,
        holdout_sha256=holdout,
        metrics=metrics,
        size_bytes=size_bytes,
        latency_ms_p50=latency_ms_p95 / 2,
        latency_ms_p95=latency_ms_p95,
        batch_rows_per_s=10_000.0,
    )


def _usable(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


def deltas_from(
    champion: dict[str, float | None],
    challenger: dict[str, float | None],
    bootstrap: dict[str, list[float]] | None = None,
) -> list[MetricDelta]:
    """What the evaluate step computes: challenger over champion, positive is better."""
    bootstrap = bootstrap or {}
    out = []
    for name in sorted(set(champion) & set(challenger)):
        higher = metric_info(name).higher_is_better
        new, old = challenger[name], champion[name]
        improvement = None
        if _usable(new) and _usable(old):
            improvement = (new - old) if higher else (old - new)
        out.append(
            MetricDelta(
                metric=name,
                higher_is_better=higher,
                improvement=improvement,
                bootstrap=sorted(bootstrap.get(name, [])),
            )
        )
    return out


def delta(
    metric: str, improvement: float | None, bootstrap: list[float] | None = None
) -> MetricDelta:
    return MetricDelta(
        metric=metric,
        higher_is_better=metric_info(metric).higher_is_better,
        improvement=improvement,
        bootstrap=sorted(bootstrap or []),
    )


def evaluation(
    challenger: dict[str, float | None],
    champion: dict[str, float | None] | None = _UNSET,
    *,
    deltas: list[MetricDelta] | None = None,
    bootstrap: dict[str, list[float]] | None = None,
    slices: list[SliceScore] | None = None,
    size_bytes: int = 1_000,
    latency_ms_p95: float = 5.0,
    holdout: str = HOLDOUT,
    champion_holdout: str = HOLDOUT,
    challenger_holdout: str = HOLDOUT,
) -> EvaluationRecord:
    """An evaluation of challenger v4 against champion v3 (``champion=None``: first run)."""
    if champion is _UNSET:
        champion = {"roc_auc": 0.80}
    champion_score = None if champion is None else score("3", champion, holdout=champion_holdout)
    if deltas is None:
        deltas = [] if champion is None else deltas_from(champion, challenger, bootstrap)
    return EvaluationRecord(
        model=MODEL,
        holdout_sha256=holdout,
        holdout_rows=5_000,
        spec_sha256=SPEC_SHA,
        data_sha256=DATA_SHA,
        champion=champion_score,
        challenger=score(
            "4",
            challenger,
            holdout=challenger_holdout,
            size_bytes=size_bytes,
            latency_ms_p95=latency_ms_p95,
        ),
        deltas=deltas,
        slices=slices or [],
        bootstrap_resamples=max((len(d.bootstrap) for d in deltas), default=0),
    )


def policy(
    metric: str = "roc_auc",
    *,
    mode: str = "superiority",
    margin: float = 0.0,
    margin_type: str = "absolute",
    uncertainty: bool = False,
    confidence: float = 0.95,
    **gate: Any,
) -> Gate:
    """A gate with the given primary; uncertainty is off unless a test is about it."""
    return Gate(
        primary=Primary(metric=metric, mode=mode, margin=margin, margin_type=margin_type),
        uncertainty=Uncertainty(enabled=uncertainty, confidence=confidence),
        **gate,
    )


def check(decision: DecisionRecord, name: str):
    matches = [c for c in decision.checks if c.name == name]
    names = [c.name for c in decision.checks]
    assert len(matches) == 1, f"expected one check {name!r}, got {names}"
    return matches[0]


def checks_of(decision: DecisionRecord, kind: str):
    return [c for c in decision.checks if c.kind == kind]


def primary_check(decision: DecisionRecord):
    (found,) = checks_of(decision, "primary")
    return found


def linspace(low: float, high: float, count: int = 1_000) -> list[float]:
    return [low + (high - low) * i / (count - 1) for i in range(count)]


# Primary: superiority and non-inferiority, absolute margins ------------------------------


@pytest.mark.parametrize(
    ("mode", "margin", "improvement", "verdict"),
    [
        # superiority: strictly better than the margin
        ("superiority", 0.0, 0.02, "promote"),
        ("superiority", 0.0, -0.01, "reject"),
        ("superiority", 0.0, 0.0, "reject"),
        ("superiority", 0.01, 0.015, "promote"),
        ("superiority", 0.01, 0.01, "reject"),  # on the margin is not better than it
        ("superiority", 0.01, 0.005, "reject"),
        # a negative superiority margin lets a slightly worse challenger through
        ("superiority", -0.01, -0.005, "promote"),
        ("superiority", -0.01, -0.01, "reject"),
        ("superiority", -0.01, -0.02, "reject"),
        # non-inferiority: worse by at most the margin, a tie passes
        ("non_inferiority", 0.0, 0.0, "promote"),
        ("non_inferiority", 0.0, -0.001, "reject"),
        ("non_inferiority", 0.01, 0.02, "promote"),
        ("non_inferiority", 0.01, -0.005, "promote"),
        ("non_inferiority", 0.01, -0.01, "promote"),  # on the margin passes
        ("non_inferiority", 0.01, -0.02, "reject"),
        # a negative non-inferiority margin demands an improvement of at least |margin|
        ("non_inferiority", -0.01, 0.005, "reject"),
        ("non_inferiority", -0.01, 0.01, "promote"),
        ("non_inferiority", -0.01, 0.02, "promote"),
    ],
)
def test_primary_modes_and_absolute_margins(mode, margin, improvement, verdict):
    record = evaluation(
        {"roc_auc": 0.80 + improvement}, {"roc_auc": 0.80}, deltas=[delta("roc_auc", improvement)]
    )
    decision = decide(record, policy(mode=mode, margin=margin))

    assert decision.verdict == verdict
    primary = primary_check(decision)
    assert primary.verdict == ("pass" if verdict == "promote" else "fail")
    assert primary.value == improvement
    assert primary.threshold == (margin if mode == "superiority" else -margin)
    assert primary.comparator == (">" if mode == "superiority" else ">=")
    assert primary.name == f"primary roc_auc ({mode.replace('_', '-')})"


def test_superiority_pass_and_fail_from_metrics():
    promote = decide(evaluation({"roc_auc": 0.83}, {"roc_auc": 0.80}), policy())
    reject = decide(evaluation({"roc_auc": 0.78}, {"roc_auc": 0.80}), policy())

    assert promote.verdict == "promote"
    assert primary_check(promote).value == pytest.approx(0.03)
    assert reject.verdict == "reject"
    assert primary_check(reject).value == pytest.approx(-0.02)


def test_lower_is_better_primary_uses_the_signed_improvement():
    # log_loss falls from 0.40 to 0.35: an improvement of +0.05 for the challenger
    better = decide(evaluation({"log_loss": 0.35}, {"log_loss": 0.40}), policy("log_loss"))
    worse = decide(evaluation({"log_loss": 0.45}, {"log_loss": 0.40}), policy("log_loss"))

    assert better.verdict == "promote"
    assert primary_check(better).value == pytest.approx(0.05)
    assert worse.verdict == "reject"
    assert primary_check(worse).value == pytest.approx(-0.05)


# Relative margins ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metric", "mode", "margin", "baseline", "improvement", "threshold", "verdict"),
    [
        # 5% of a champion AUC of 0.80 is 0.04
        ("roc_auc", "superiority", 0.05, 0.80, 0.05, 0.04, "promote"),
        ("roc_auc", "superiority", 0.05, 0.80, 0.03, 0.04, "reject"),
        ("roc_auc", "non_inferiority", 0.05, 0.80, -0.03, -0.04, "promote"),
        ("roc_auc", "non_inferiority", 0.05, 0.80, -0.05, -0.04, "reject"),
        # negative relative margins flip the allowance the same way as absolute ones
        ("roc_auc", "superiority", -0.05, 0.80, -0.03, -0.04, "promote"),
        ("roc_auc", "non_inferiority", -0.05, 0.80, 0.03, 0.04, "reject"),
        ("roc_auc", "non_inferiority", -0.05, 0.80, 0.05, 0.04, "promote"),
        # lower-is-better: 10% of a champion log loss of 0.50 is 0.05
        ("log_loss", "superiority", 0.10, 0.50, 0.06, 0.05, "promote"),
        ("log_loss", "superiority", 0.10, 0.50, 0.04, 0.05, "reject"),
        # the scale is |baseline|: a negative champion r2 of -0.5 still gives +0.05
        ("r2", "superiority", 0.10, -0.50, 0.06, 0.05, "promote"),
        ("r2", "superiority", 0.10, -0.50, 0.04, 0.05, "reject"),
    ],
)
def test_relative_margin_scales_with_the_champion_value(
    metric, mode, margin, baseline, improvement, threshold, verdict
):
    record = evaluation({metric: 0.0}, {metric: baseline}, deltas=[delta(metric, improvement)])
    decision = decide(record, policy(metric, mode=mode, margin=margin, margin_type="relative"))

    primary = primary_check(decision)
    assert primary.threshold == pytest.approx(threshold)
    assert decision.verdict == verdict


def test_relative_margin_with_zero_champion_baseline_collapses_to_zero_margin():
    """Documented behaviour: a relative margin is ``margin * |champion value|``, so a
    champion value of exactly 0 turns any relative margin into a zero margin. The gate
    does not fail (as it does for a missing or NaN baseline); it gates at margin 0.
    """
    # A champion AUC of 0.0 (a perfectly inverted scorer): "5% better" would be meaningless,
    # and the gate falls back to plain superiority, so any improvement at all passes.
    record = evaluation({"roc_auc": 0.001}, {"roc_auc": 0.0}, deltas=[delta("roc_auc", 0.001)])
    decision = decide(record, policy(margin=0.05, margin_type="relative"))
    assert primary_check(decision).threshold == 0.0
    assert decision.verdict == "promote"

    # A perfect champion on a lower-is-better metric (mae 0.0) with a relative
    # non-inferiority margin of 10%: the allowance is zero, so only a tie passes.
    tie = evaluation({"mae": 0.0}, {"mae": 0.0})
    worse = evaluation({"mae": 0.01}, {"mae": 0.0})
    gate = policy("mae", mode="non_inferiority", margin=0.10, margin_type="relative")
    assert primary_check(decide(tie, gate)).threshold == 0.0
    assert decide(tie, gate).verdict == "promote"
    assert decide(worse, gate).verdict == "reject"


@pytest.mark.parametrize("baseline", [None, math.nan, "absent"])
def test_relative_margin_without_a_champion_value_fails(baseline):
    champion = {"log_loss": 0.4} if baseline == "absent" else {"roc_auc": baseline}
    record = evaluation({"roc_auc": 0.9}, champion, deltas=[delta("roc_auc", 0.1)])
    decision = decide(record, policy(margin=0.01, margin_type="relative"))

    primary = primary_check(decision)
    assert decision.verdict == "reject"
    assert primary.verdict == "fail"
    assert primary.threshold is None
    assert "relative margin needs a champion roc_auc" in primary.detail


def test_absolute_margin_ignores_the_champion_value():
    record = evaluation({"roc_auc": 0.9}, {"roc_auc": None}, deltas=[delta("roc_auc", 0.02)])
    decision = decide(record, policy(margin=0.01))
    assert primary_check(decision).threshold == 0.01
    assert decision.verdict == "promote"


# Ties and uncertainty --------------------------------------------------------------------


def test_tie_superiority_at_zero_margin_rejects_and_non_inferiority_promotes():
    # Identical predictions: every bootstrap improvement is exactly zero.
    tie = evaluation(
        {"roc_auc": 0.8}, {"roc_auc": 0.8}, deltas=[delta("roc_auc", 0.0, [0.0] * 1_000)]
    )

    superiority = decide(tie, policy(uncertainty=True))
    assert superiority.verdict == "reject"
    assert primary_check(superiority).value == 0.0
    assert primary_check(superiority).verdict == "fail"

    non_inferiority = decide(tie, policy(mode="non_inferiority", uncertainty=True))
    assert non_inferiority.verdict == "promote"
    assert primary_check(non_inferiority).value == 0.0

    # the same without uncertainty, on the point estimate
    assert decide(tie, policy()).verdict == "reject"
    assert decide(tie, policy(mode="non_inferiority")).verdict == "promote"


def test_tie_from_the_real_paired_bootstrap_is_all_zeros():
    rng = np.random.default_rng(3)
    y = (rng.random(2_000) < 0.3).astype(float)
    p = np.clip(0.3 + 0.3 * (y - 0.3) + rng.normal(0, 0.2, 2_000), 0.01, 0.99)
    names = ["roc_auc", "log_loss"]
    samples = paired_bootstrap(
        names, y, p, p.copy(), 200, 0, {n: metric_info(n).higher_is_better for n in names}
    )
    assert all(np.all(samples[n] == 0.0) for n in names)

    auc = metric_score("roc_auc", y, p)
    record = evaluation(
        {"roc_auc": auc}, {"roc_auc": auc}, bootstrap={"roc_auc": samples["roc_auc"].tolist()}
    )
    assert decide(record, policy(uncertainty=True)).verdict == "reject"
    assert decide(record, policy(mode="non_inferiority", uncertainty=True)).verdict == "promote"


def test_uncertainty_gates_on_the_ci_lower_bound_not_the_point_estimate():
    # Point estimate +0.01, but the 95% interval reaches below zero.
    samples = linspace(-0.005, 0.025)
    record = evaluation(
        {"roc_auc": 0.81}, {"roc_auc": 0.80}, deltas=[delta("roc_auc", 0.01, samples)]
    )

    disabled = decide(record, policy(uncertainty=False))
    assert disabled.verdict == "promote"
    assert primary_check(disabled).value == 0.01
    assert "point estimate" in primary_check(disabled).detail

    enabled = decide(record, policy(uncertainty=True))
    lower = quantile(samples, 0.025)
    assert lower == pytest.approx(-0.005 + 0.03 * 0.025)
    assert enabled.verdict == "reject"
    assert primary_check(enabled).value == pytest.approx(lower)
    assert "95% CI" in primary_check(enabled).detail
    assert "lower bound" in primary_check(enabled).detail


def test_uncertainty_promotes_when_the_whole_interval_clears_the_margin():
    record = evaluation(
        {"roc_auc": 0.83}, {"roc_auc": 0.80}, deltas=[delta("roc_auc", 0.03, linspace(0.01, 0.05))]
    )
    decision = decide(record, policy(uncertainty=True))
    assert decision.verdict == "promote"
    assert primary_check(decision).value == pytest.approx(0.011)


def test_uncertainty_confidence_sets_which_quantile_is_gated():
    samples = linspace(-0.002, 0.038)  # 2.5% quantile -0.001, 10% quantile +0.002
    record = evaluation(
        {"roc_auc": 0.82}, {"roc_auc": 0.80}, deltas=[delta("roc_auc", 0.018, samples)]
    )

    at_95 = decide(record, policy(uncertainty=True, confidence=0.95))
    at_80 = decide(record, policy(uncertainty=True, confidence=0.80))
    assert primary_check(at_95).value == pytest.approx(-0.001)
    assert at_95.verdict == "reject"
    assert primary_check(at_80).value == pytest.approx(0.002)
    assert at_80.verdict == "promote"


def test_uncertainty_non_inferiority_gates_the_lower_bound_against_minus_margin():
    record = evaluation(
        {"roc_auc": 0.80}, {"roc_auc": 0.80}, deltas=[delta("roc_auc", 0.0, linspace(-0.02, 0.02))]
    )
    # lower bound is -0.019
    assert (
        decide(record, policy(mode="non_inferiority", margin=0.02, uncertainty=True)).verdict
        == "promote"
    )
    assert (
        decide(record, policy(mode="non_inferiority", margin=0.01, uncertainty=True)).verdict
        == "reject"
    )


def test_uncertainty_enabled_without_bootstrap_samples_fails():
    record = evaluation({"roc_auc": 0.9}, {"roc_auc": 0.8})  # deltas have no bootstrap
    decision = decide(record, policy(uncertainty=True))
    assert decision.verdict == "reject"
    assert "no bootstrap samples" in primary_check(decision).detail


# Missing and undefined metrics -------------------------------------------------------------


def test_missing_primary_metric_fails():
    record = evaluation({"log_loss": 0.3}, {"log_loss": 0.4, "roc_auc": 0.8})
    decision = decide(record, policy())
    primary = primary_check(decision)
    assert decision.verdict == "reject"
    assert primary.verdict == "fail"
    assert primary.value is None
    assert "missing" in primary.detail


def test_missing_guardrail_metric_fails():
    record = evaluation({"roc_auc": 0.85}, {"roc_auc": 0.80})  # no log_loss delta at all
    decision = decide(record, policy(guardrails=[Guardrail(metric="log_loss", tolerance=0.01)]))
    guard = check(decision, "guardrail log_loss")
    assert primary_check(decision).verdict == "pass"
    assert guard.verdict == "fail"
    assert guard.value is None
    assert decision.verdict == "reject"


def test_missing_floor_metric_fails():
    record = evaluation({"roc_auc": 0.85}, {"roc_auc": 0.80})
    decision = decide(record, policy(floors={"f1": 0.5}))
    floor = check(decision, "floor f1")
    assert floor.verdict == "fail"
    assert floor.detail == "f1 is missing for the challenger"
    assert decision.verdict == "reject"


@pytest.mark.parametrize("bad", [None, math.nan])
def test_undefined_primary_improvement_fails(bad):
    record = evaluation({"roc_auc": 0.85}, {"roc_auc": 0.80}, deltas=[delta("roc_auc", bad)])
    for gate in (policy(), policy(mode="non_inferiority", margin=0.5), policy(uncertainty=True)):
        decision = decide(record, gate)
        assert decision.verdict == "reject"
        assert primary_check(decision).verdict == "fail"
        assert ("missing" if bad is None else "NaN") in primary_check(decision).detail


@pytest.mark.parametrize("bad", [None, math.nan])
def test_undefined_challenger_metric_fails(bad):
    # A NaN or null challenger metric makes the delta undefined and fails its floor.
    record = evaluation({"roc_auc": bad}, {"roc_auc": 0.80})
    decision = decide(record, policy(floors={"roc_auc": 0.5}))
    assert decision.verdict == "reject"
    assert primary_check(decision).verdict == "fail"
    assert check(decision, "floor roc_auc").verdict == "fail"
    assert (
        check(decision, "floor roc_auc").detail
        == f"roc_auc is {'missing' if bad is None else 'NaN'} for the challenger"
    )


@pytest.mark.parametrize("bad", [None, math.nan])
def test_undefined_guardrail_improvement_fails(bad):
    record = evaluation(
        {"roc_auc": 0.85, "brier": 0.1},
        {"roc_auc": 0.80, "brier": 0.1},
        deltas=[delta("roc_auc", 0.05), delta("brier", bad)],
    )
    decision = decide(record, policy(guardrails=[Guardrail(metric="brier", tolerance=1.0)]))
    assert check(decision, "guardrail brier").verdict == "fail"
    assert decision.verdict == "reject"


# Floors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metric", "bound", "value", "verdict", "comparator"),
    [
        ("roc_auc", 0.70, 0.71, "pass", ">="),
        ("roc_auc", 0.70, 0.70, "pass", ">="),
        ("roc_auc", 0.70, 0.69, "fail", ">="),
        ("log_loss", 0.50, 0.45, "pass", "<="),
        ("log_loss", 0.50, 0.50, "pass", "<="),
        ("log_loss", 0.50, 0.55, "fail", "<="),
        ("rmse", 10.0, 12.0, "fail", "<="),
        ("r2", 0.0, -0.1, "fail", ">="),
    ],
)
def test_floors_follow_the_metric_direction(metric, bound, value, verdict, comparator):
    metrics = {"roc_auc": 0.85, metric: value}
    record = evaluation(metrics, {"roc_auc": 0.80}, deltas=[delta("roc_auc", 0.05)])
    decision = decide(record, policy(floors={metric: bound}))

    floor = check(decision, f"floor {metric}")
    assert floor.kind == "floor"
    assert floor.verdict == verdict
    assert floor.comparator == comparator
    assert floor.threshold == bound
    assert floor.value == value
    # the primary passes, so the floor alone decides
    assert decision.verdict == ("promote" if verdict == "pass" else "reject")


# Guardrails --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tolerance", "tolerance_type", "improvement", "allowed", "verdict"),
    [
        ("0.01", "absolute", 0.02, -0.01, "pass"),  # the guardrail metric got better
        ("0.01", "absolute", 0.0, -0.01, "pass"),
        ("0.01", "absolute", -0.005, -0.01, "pass"),
        ("0.01", "absolute", -0.01, -0.01, "pass"),
        ("0.01", "absolute", -0.02, -0.01, "fail"),
        ("0", "absolute", -0.0001, 0.0, "fail"),
        # relative: 5% of a champion log loss of 0.40 is 0.02
        ("0.05", "relative", -0.015, -0.02, "pass"),
        ("0.05", "relative", -0.025, -0.02, "fail"),
    ],
)
def test_guardrails(tolerance, tolerance_type, improvement, allowed, verdict):
    record = evaluation(
        {"roc_auc": 0.85, "log_loss": 0.40 - improvement},
        {"roc_auc": 0.80, "log_loss": 0.40},
        deltas=[delta("roc_auc", 0.05), delta("log_loss", improvement)],
    )
    guard = Guardrail(metric="log_loss", tolerance=float(tolerance), tolerance_type=tolerance_type)
    decision = decide(record, policy(guardrails=[guard]))

    found = check(decision, "guardrail log_loss")
    assert found.kind == "guardrail"
    assert found.value == improvement
    assert found.threshold == pytest.approx(allowed)
    assert found.comparator == ">="
    assert found.verdict == verdict
    assert decision.verdict == ("promote" if verdict == "pass" else "reject")


def test_relative_guardrail_without_a_champion_value_fails():
    record = evaluation(
        {"roc_auc": 0.85, "log_loss": 0.3},
        {"roc_auc": 0.80},
        deltas=[delta("roc_auc", 0.05), delta("log_loss", 0.1)],
    )
    guard = Guardrail(metric="log_loss", tolerance=0.05, tolerance_type="relative")
    decision = decide(record, policy(guardrails=[guard]))
    found = check(decision, "guardrail log_loss")
    assert found.verdict == "fail"
    assert found.threshold is None


def test_relative_guardrail_with_zero_champion_value_allows_no_regression():
    # brier 0.0 for the champion: 50% of zero is zero, so only a tie or better passes
    guard = Guardrail(metric="brier", tolerance=0.5, tolerance_type="relative")
    for improvement, verdict in [(0.0, "pass"), (-0.001, "fail")]:
        record = evaluation(
            {"roc_auc": 0.85, "brier": -improvement}, {"roc_auc": 0.80, "brier": 0.0}
        )
        found = check(decide(record, policy(guardrails=[guard])), "guardrail brier")
        assert found.threshold == 0.0
        assert found.verdict == verdict


def test_every_guardrail_is_checked():
    record = evaluation(
        {"roc_auc": 0.85, "log_loss": 0.5, "brier": 0.2},
        {"roc_auc": 0.80, "log_loss": 0.4, "brier": 0.2},
    )
    guards = [Guardrail(metric="log_loss", tolerance=0.01), Guardrail(metric="brier")]
    decision = decide(record, policy(guardrails=guards))
    assert [c.name for c in checks_of(decision, "guardrail")] == [
        "guardrail log_loss",
        "guardrail brier",
    ]
    assert check(decision, "guardrail log_loss").verdict == "fail"
    assert check(decision, "guardrail brier").verdict == "pass"
    assert decision.verdict == "reject"


# Slices ------------------------------------------------------------------------------------


def slice_score(
    value: str,
    rows: int,
    champion: float | None,
    challenger: float | None,
    *,
    column: str = "region",
    metric: str = "roc_auc",
) -> SliceScore:
    return SliceScore(
        column=column,
        value=value,
        rows=rows,
        metric=metric,
        champion=champion,
        challenger=challenger,
    )


SLICES = Slices(columns=["region"], tolerance=0.03, min_size=300)


def slice_decision(*items: SliceScore, slices: Slices = SLICES, **kwargs: Any) -> DecisionRecord:
    record = evaluation({"roc_auc": 0.85}, {"roc_auc": 0.80}, slices=list(items), **kwargs)
    return decide(record, policy(slices=slices))


def test_slice_below_min_size_is_skipped():
    decision = slice_decision(slice_score("north", 299, 0.90, 0.50))
    found = check(decision, "slice region=north")
    assert found.verdict == "skip"
    assert found.value == 299.0
    assert found.threshold == 300.0
    assert decision.verdict == "promote"


def test_slice_of_exactly_min_size_is_checked():
    decision = slice_decision(slice_score("north", 300, 0.90, 0.50))
    found = check(decision, "slice region=north")
    assert found.verdict == "fail"
    assert found.value == pytest.approx(-0.40)
    assert decision.verdict == "reject"


@pytest.mark.parametrize(("champion", "challenger"), [(None, 0.7), (0.7, None), (None, None)])
def test_undefined_slice_metric_is_skipped(champion, challenger):
    decision = slice_decision(slice_score("north", 1_000, champion, challenger))
    found = check(decision, "slice region=north")
    assert found.verdict == "skip"
    assert "undefined" in found.detail
    assert decision.verdict == "promote"


def test_slice_regression_beyond_tolerance_fails():
    decision = slice_decision(
        slice_score("north", 1_000, 0.80, 0.76),  # -0.04, beyond the 0.03 tolerance
        slice_score("south", 1_000, 0.80, 0.78),  # -0.02, within it
        slice_score("east", 1_000, 0.80, 0.83),
    )
    north = check(decision, "slice region=north")
    assert north.verdict == "fail"
    assert north.value == pytest.approx(-0.04)
    assert north.threshold == -0.03
    assert check(decision, "slice region=south").verdict == "pass"
    assert check(decision, "slice region=east").verdict == "pass"
    assert decision.verdict == "reject"
    assert "slice region=north" in decision.summary


def test_slice_on_a_lower_is_better_metric():
    slices = Slices(columns=["region"], metric="log_loss", tolerance=0.03, min_size=300)
    decision = slice_decision(
        slice_score("north", 1_000, 0.40, 0.45, metric="log_loss"),  # worse by 0.05
        slice_score("south", 1_000, 0.40, 0.30, metric="log_loss"),  # better by 0.10
        slice_score("east", 1_000, 0.70, 0.10, metric="roc_auc"),  # another metric: ignored
        slices=slices,
    )
    assert check(decision, "slice region=north").value == pytest.approx(-0.05)
    assert check(decision, "slice region=north").verdict == "fail"
    assert check(decision, "slice region=south").value == pytest.approx(0.10)
    assert check(decision, "slice region=south").verdict == "pass"
    assert len(checks_of(decision, "slice")) == 2


def test_empty_slice_list_adds_no_checks():
    decision = slice_decision()
    assert checks_of(decision, "slice") == []
    assert decision.verdict == "promote"


def test_slices_of_unconfigured_columns_are_ignored():
    decision = slice_decision(slice_score("gold", 1_000, 0.9, 0.1, column="plan"))
    assert checks_of(decision, "slice") == []
    assert decision.verdict == "promote"

    no_columns = slice_decision(slice_score("north", 1_000, 0.9, 0.1), slices=Slices())
    assert checks_of(no_columns, "slice") == []
    assert no_columns.verdict == "promote"


# Budgets -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size_bytes", "verdict"), [(999, "pass"), (1_000, "pass"), (1_001, "fail")]
)
def test_size_budget(size_bytes, verdict):
    record = evaluation({"roc_auc": 0.85}, size_bytes=size_bytes)
    decision = decide(record, policy(budgets=Budgets(max_model_bytes=1_000)))
    found = check(decision, "model size")
    assert found.kind == "budget"
    assert found.verdict == verdict
    assert found.value == float(size_bytes)
    assert found.comparator == "<="
    assert decision.verdict == ("promote" if verdict == "pass" else "reject")


@pytest.mark.parametrize(
    ("latency", "verdict"), [(100.0, "pass"), (250.0, "pass"), (250.5, "fail"), (math.nan, "fail")]
)
def test_latency_budget(latency, verdict):
    record = evaluation({"roc_auc": 0.85}, latency_ms_p95=latency)
    decision = decide(record, policy(budgets=Budgets(max_latency_ms_p95=250)))
    found = check(decision, "latency p95")
    assert found.verdict == verdict
    assert found.threshold == 250.0
    assert decision.verdict == ("promote" if verdict == "pass" else "reject")


def test_no_budgets_configured_means_no_budget_checks():
    record = evaluation({"roc_auc": 0.85}, size_bytes=10**12, latency_ms_p95=1e6)
    decision = decide(record, policy())
    assert checks_of(decision, "budget") == []
    assert decision.verdict == "promote"


# First run -----------------------------------------------------------------------------------


def test_first_run_promote_promotes_when_floors_pass():
    record = evaluation({"roc_auc": 0.75}, None)
    decision = decide(record, policy(first_run="promote", floors={"roc_auc": 0.70}))
    assert decision.verdict == "promote"
    assert decision.champion_version is None
    assert check(decision, "first run").verdict == "pass"
    assert check(decision, "floor roc_auc").verdict == "pass"
    # no champion: nothing to compare, so no primary, guardrail or slice checks
    assert {c.kind for c in decision.checks} == {"holdout", "floor", "first_run"}
    assert decision.summary.startswith("PROMOTE churn v4 over no champion")
    assert "first model for this spec" in decision.summary


def test_first_run_promote_rejects_when_a_floor_fails():
    record = evaluation({"roc_auc": 0.65}, None)
    decision = decide(record, policy(first_run="promote", floors={"roc_auc": 0.70}))
    assert decision.verdict == "reject"
    assert check(decision, "first run").verdict == "pass"
    assert check(decision, "floor roc_auc").verdict == "fail"
    assert decision.summary.startswith("REJECT churn v4 (champion stays no champion)")
    assert "floor roc_auc" in decision.summary


def test_first_run_promote_rejects_when_a_budget_fails():
    record = evaluation({"roc_auc": 0.75}, None, size_bytes=2_000)
    decision = decide(record, policy(budgets=Budgets(max_model_bytes=1_000)))
    assert decision.verdict == "reject"
    assert "model size" in decision.summary


def test_first_run_reject():
    record = evaluation({"roc_auc": 0.99}, None)
    decision = decide(record, policy(first_run="reject", floors={"roc_auc": 0.70}))
    assert decision.verdict == "reject"
    found = check(decision, "first run")
    assert found.verdict == "fail"
    assert "'reject'" in found.detail
    assert "first run" in decision.summary


def test_first_run_ignores_guardrails_and_slices():
    record = evaluation({"roc_auc": 0.75}, None, slices=[slice_score("north", 1_000, None, 0.1)])
    gate = policy(guardrails=[Guardrail(metric="log_loss")], slices=SLICES)
    decision = decide(record, gate)
    assert decision.verdict == "promote"
    assert checks_of(decision, "guardrail") == []
    assert checks_of(decision, "slice") == []


# Holdouts ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "pinned", "culprit"),
    [
        ({"challenger_holdout": OTHER_HOLDOUT}, None, "challenger"),
        ({"champion_holdout": OTHER_HOLDOUT}, None, "champion"),
        ({}, OTHER_HOLDOUT, "pinned holdout"),
        ({"holdout": OTHER_HOLDOUT}, None, "evaluation"),
    ],
)
def test_holdout_mismatch_raises(kwargs, pinned, culprit):
    record = evaluation({"roc_auc": 0.85}, **kwargs)
    with pytest.raises(HoldoutMismatchError, match="different holdouts") as caught:
        decide(record, policy(), pinned_holdout_sha256=pinned)
    hashes = caught.value.payload["holdouts"]
    assert hashes[culprit] == OTHER_HOLDOUT
    assert len(set(hashes.values())) == 2
    assert caught.value.exit_code == 2  # bad input: never retried


def test_first_run_challenger_on_another_holdout_raises():
    record = evaluation({"roc_auc": 0.85}, None, challenger_holdout=OTHER_HOLDOUT)
    with pytest.raises(HoldoutMismatchError):
        decide(record, policy())


def test_matching_pinned_holdout_passes():
    decision = decide(evaluation({"roc_auc": 0.85}), policy(), pinned_holdout_sha256=HOLDOUT)
    found = check(decision, "shared holdout")
    assert found.kind == "holdout"
    assert found.verdict == "pass"
    assert HOLDOUT[:12] in found.detail


# The decision record ----------------------------------------------------------------------------


def full_policy() -> Gate:
    return policy(
        uncertainty=True,
        guardrails=[Guardrail(metric="log_loss", tolerance=0.01), Guardrail(metric="brier")],
        floors={"roc_auc": 0.70, "log_loss": 0.6},
        slices=SLICES,
        budgets=Budgets(max_model_bytes=10_000, max_latency_ms_p95=250),
    )


def full_evaluation(challenger_auc: float = 0.85) -> EvaluationRecord:
    return evaluation(
        {"roc_auc": challenger_auc, "log_loss": 0.38, "brier": 0.12},
        {"roc_auc": 0.80, "log_loss": 0.40, "brier": 0.13},
        bootstrap={"roc_auc": linspace(challenger_auc - 0.82, challenger_auc - 0.78)},
        slices=[
            slice_score("north", 1_000, 0.80, 0.84),
            slice_score("south", 100, 0.8, 0.2),
            slice_score("east", 1_000, None, 0.5),
        ],
    )


def test_decision_record_carries_provenance():
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    gate = full_policy()
    decision = decide(
        full_evaluation(),
        gate,
        pinned_holdout_sha256=HOLDOUT,
        dag_run_id="manual__2026-01-02",
        reason="monthly retrain",
        now=now,
    )

    assert decision.verdict == "promote"
    assert decision.schema_ == "mlops_pack.decision/1"
    assert decision.model == MODEL
    assert decision.champion_version == "3"
    assert decision.challenger_version == "4"
    assert decision.holdout_sha256 == HOLDOUT
    assert decision.spec_sha256 == SPEC_SHA
    assert decision.data_sha256 == DATA_SHA
    assert decision.dag_run_id == "manual__2026-01-02"
    assert decision.reason == "monthly retrain"
    assert decision.created_at == now.isoformat()
    assert decision.approval_required is False
    assert decision.approver is None
    assert decision.policy == gate.model_dump(mode="json")
    assert re.fullmatch(r"[0-9a-f]{32}", decision.decision_id)
    # a fresh id per decision, even for the same inputs
    assert decide(full_evaluation(), gate).decision_id != decision.decision_id


def test_decision_record_defaults_and_approval():
    decision = decide(evaluation({"roc_auc": 0.85}), policy(approval={"required": True}))
    assert decision.dag_run_id is None
    assert decision.reason == ""
    assert decision.approval_required is True
    created = datetime.fromisoformat(decision.created_at)
    assert created.tzinfo is not None
    assert abs((datetime.now(UTC) - created).total_seconds()) < 60


def test_every_check_has_a_verdict_and_the_record_round_trips():
    for auc in (0.85, 0.79):
        decision = decide(full_evaluation(auc), full_policy())
        kinds = {c.kind for c in decision.checks}
        assert kinds == {"holdout", "floor", "budget", "primary", "guardrail", "slice"}
        assert all(c.verdict in {"pass", "fail", "skip"} for c in decision.checks)
        failed = any(c.verdict == "fail" for c in decision.checks)
        assert decision.verdict == ("reject" if failed else "promote")
        assert DecisionRecord.model_validate_json(to_json(decision)) == decision


def test_skipped_checks_do_not_count_in_the_summary():
    decision = decide(full_evaluation(), full_policy())
    skipped = [c for c in decision.checks if c.verdict == "skip"]
    assert [c.name for c in skipped] == ["slice region=south", "slice region=east"]
    counted = len(decision.checks) - len(skipped)
    assert f"{counted}/{counted} checks passed" in decision.summary


def test_promote_summary_names_the_primary():
    decision = decide(full_evaluation(), full_policy())
    assert decision.summary.startswith("PROMOTE churn v4 over v3: ")
    assert "primary roc_auc (superiority)" in decision.summary
    assert "\n" not in decision.summary


@pytest.mark.parametrize(
    ("change", "failed_name"),
    [
        ({"challenger_auc": 0.79}, "primary roc_auc (superiority)"),
        ({"floors": {"roc_auc": 0.9}}, "floor roc_auc"),
        ({"guardrail": 0.0}, "guardrail log_loss"),
        ({"budget": 10}, "model size"),
        ({"slice": 0.5}, "slice region=north"),
    ],
)
def test_reject_summary_names_the_failed_check(change, failed_name):
    record = evaluation(
        {"roc_auc": change.get("challenger_auc", 0.85), "log_loss": 0.405},
        {"roc_auc": 0.80, "log_loss": 0.40},
        slices=[slice_score("north", 1_000, 0.80, change.get("slice", 0.80))],
    )
    gate = policy(
        floors=change.get("floors", {}),
        guardrails=[Guardrail(metric="log_loss", tolerance=change.get("guardrail", 0.01))],
        slices=SLICES,
        budgets=Budgets(max_model_bytes=change.get("budget", 10_000)),
    )
    decision = decide(record, gate)

    assert decision.verdict == "reject"
    assert [c.name for c in decision.checks if c.verdict == "fail"] == [failed_name]
    assert decision.summary.startswith("REJECT churn v4 (champion stays v3): ")
    assert failed_name in decision.summary
    assert "\n" not in decision.summary


def test_reject_summary_lists_three_failures_and_counts_the_rest():
    record = evaluation(
        {"roc_auc": 0.5, "log_loss": 0.9, "brier": 0.4},
        {"roc_auc": 0.8, "log_loss": 0.4, "brier": 0.1},
        size_bytes=10**9,
    )
    gate = policy(
        floors={"roc_auc": 0.7, "log_loss": 0.6},
        guardrails=[Guardrail(metric="log_loss"), Guardrail(metric="brier")],
        budgets=Budgets(max_model_bytes=1_000),
    )
    decision = decide(record, gate)
    failed = [c.name for c in decision.checks if c.verdict == "fail"]
    assert len(failed) == 6
    for name in failed[:3]:
        assert name in decision.summary
    assert decision.summary.endswith("(+3 more)")


# quantile and decision_table -------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 3, 10, 999, 1_000])
def test_quantile_matches_numpy_linear_percentile(size):
    rng = random.Random(size)
    values = sorted(rng.gauss(0, 1) for _ in range(size))
    qs = [0.0, 0.001, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.975, 0.999, 1.0]
    qs += [rng.random() for _ in range(20)]
    for q in qs:
        expected = float(np.percentile(values, 100 * q, method="linear"))
        assert quantile(values, q) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_quantile_endpoints_and_empty_input():
    assert quantile([1.0, 2.0, 4.0], 0.0) == 1.0
    assert quantile([1.0, 2.0, 4.0], 1.0) == 4.0
    assert quantile([1.0, 2.0, 4.0], 0.75) == 3.0
    assert quantile([7.0], 0.3) == 7.0
    assert math.isnan(quantile([], 0.5))


def test_decision_table_lists_every_check():
    for auc in (0.85, 0.79):
        decision = decide(full_evaluation(auc), full_policy())
        table = decision_table(decision)
        lines = table.splitlines()
        assert lines[0].split() == ["check", "value", "value", "is", "rule", "verdict"]
        assert set(lines[1]) <= {"-", " "}
        for c in decision.checks:
            row = next(line for line in lines if line.startswith(c.name))
            assert row.rstrip().endswith(c.verdict.upper())
        assert lines[-1] == decision.summary
        assert len(lines) == len(decision.checks) + 4


def test_unsorted_bootstrap_samples_are_sorted_before_the_bound_is_taken():
    unsorted = [0.02, -0.05, 0.01, 0.015]
    record = evaluation(
        {"roc_auc": 0.81},
        {"roc_auc": 0.80},
        deltas=[
            MetricDelta(
                metric="roc_auc", higher_is_better=True, improvement=0.01, bootstrap=unsorted
            )
        ],
    )
    decision = decide(record, policy(uncertainty=True))
    primary = next(c for c in decision.checks if c.kind == "primary")
    assert primary.value == pytest.approx(quantile(sorted(unsorted), 0.025))
    assert decision.verdict == "reject"
