"""The gate: a pure function from (evaluation, policy) to a decision record.

No I/O, no numpy: the same function runs in a step container, in-process, and in a unit
test, and the decision it returns lists every check with its value, threshold and verdict.

Sign convention: every comparison uses the *improvement* of the challenger over the
champion, positive when the challenger is better whatever the metric's direction.
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime

from mlops_pack.errors import HoldoutMismatchError
from mlops_pack.metric_catalog import metric_info
from mlops_pack.records import Check, DecisionRecord, EvaluationRecord, MetricDelta, ModelScore
from mlops_pack.spec import Gate


def quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated quantile of an already sorted list (numpy's default method)."""
    if not sorted_values:
        return math.nan
    position = q * (len(sorted_values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    fraction = position - low
    return sorted_values[low] * (1 - fraction) + sorted_values[high] * fraction


def _usable(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


# What a check's value is (Check.value_label): the same words in records and tables.
POINT = "point"
DELTA = "delta, point"
ROWS = "rows"
BYTES = "bytes"


def _ci_lower(confidence: float) -> str:
    return f"delta, CI lower {confidence * 100:g}%"


def _fmt(value: float | None) -> str:
    return "missing" if value is None else ("NaN" if math.isnan(value) else f"{value:+.4f}")


def check_holdouts(evaluation: EvaluationRecord, pinned_sha256: str | None) -> Check:
    """Refuse to compare metrics that came from different data."""
    hashes = {
        "evaluation": evaluation.holdout_sha256,
        "challenger": evaluation.challenger.holdout_sha256,
    }
    if evaluation.champion is not None:
        hashes["champion"] = evaluation.champion.holdout_sha256
    if pinned_sha256 is not None:
        hashes["pinned holdout"] = pinned_sha256
    if len(set(hashes.values())) != 1:
        listing = ", ".join(f"{k}={v[:12]}" for k, v in hashes.items())
        raise HoldoutMismatchError(
            f"model {evaluation.model}: refusing to compare metrics computed on different "
            f"holdouts ({listing}); re-run the evaluation on the pinned holdout",
            {"holdouts": hashes},
        )
    return Check(
        name="shared holdout",
        kind="holdout",
        verdict="pass",
        detail=f"all scores on holdout {evaluation.holdout_sha256[:12]}",
    )


def _floor_checks(policy: Gate, challenger: ModelScore) -> list[Check]:
    checks = []
    for metric, bound in sorted(policy.floors.items()):
        higher = metric_info(metric).higher_is_better
        value = challenger.metrics.get(metric)
        comparator = ">=" if higher else "<="
        if not _usable(value):
            verdict, detail = "fail", f"{metric} is {_fmt(value)} for the challenger"
        else:
            ok = value >= bound if higher else value <= bound
            verdict, detail = ("pass" if ok else "fail"), ""
        checks.append(
            Check(
                name=f"floor {metric}",
                kind="floor",
                metric=metric,
                value=value,
                value_label=POINT,
                threshold=bound,
                comparator=comparator,
                verdict=verdict,
                detail=detail,
            )
        )
    return checks


def _budget_checks(policy: Gate, challenger: ModelScore) -> list[Check]:
    checks = []
    budgets = policy.budgets
    if budgets.max_model_bytes is not None:
        ok = challenger.size_bytes <= budgets.max_model_bytes
        checks.append(
            Check(
                name="model size",
                kind="budget",
                value=float(challenger.size_bytes),
                value_label=BYTES,
                threshold=float(budgets.max_model_bytes),
                comparator="<=",
                verdict="pass" if ok else "fail",
                detail="bytes",
            )
        )
    if budgets.max_latency_ms_p95 is not None:
        value = challenger.latency_ms_p95
        ok = _usable(value) and value <= budgets.max_latency_ms_p95
        checks.append(
            Check(
                name="latency p95",
                kind="budget",
                value=value,
                value_label="ms, p95",
                threshold=budgets.max_latency_ms_p95,
                comparator="<=",
                verdict="pass" if ok else "fail",
                detail="ms, single-row predict",
            )
        )
    return checks


def _margin(value: float, margin_type: str, baseline: float | None) -> float:
    if margin_type == "relative":
        return value * abs(baseline) if _usable(baseline) else math.nan
    return value


def _primary_check(
    policy: Gate, evaluation: EvaluationRecord, deltas: dict[str, MetricDelta]
) -> Check:
    primary = policy.primary
    metric = primary.metric
    delta = deltas.get(metric)
    baseline = evaluation.champion.metrics.get(metric) if evaluation.champion else None
    margin = _margin(primary.margin, primary.margin_type, baseline)
    # Superiority: the challenger must be better by more than the margin. Non-inferiority:
    # it may be worse by at most the margin (a tie passes).
    threshold = margin if primary.mode == "superiority" else -margin
    comparator = ">" if primary.mode == "superiority" else ">="
    name = f"primary {metric} ({primary.mode.replace('_', '-')})"
    if delta is None or not _usable(delta.improvement):
        shown = "missing" if delta is None else _fmt(delta.improvement)
        return Check(
            name=name,
            kind="primary",
            metric=metric,
            threshold=None if math.isnan(threshold) else threshold,
            comparator=comparator,
            verdict="fail",
            detail=f"improvement in {metric} is {shown}",
        )
    if math.isnan(threshold):
        return Check(
            name=name,
            kind="primary",
            metric=metric,
            value=delta.improvement,
            value_label=DELTA,
            comparator=comparator,
            verdict="fail",
            detail=f"relative margin needs a champion {metric}, which is {_fmt(baseline)}",
        )
    unc = policy.uncertainty
    if unc.enabled:
        if not delta.bootstrap:
            return Check(
                name=name,
                kind="primary",
                metric=metric,
                value=delta.improvement,
                value_label=DELTA,
                threshold=threshold,
                comparator=comparator,
                verdict="fail",
                detail="uncertainty is enabled but the evaluation has no bootstrap samples",
            )
        alpha = 1.0 - unc.confidence
        samples = sorted(delta.bootstrap)  # records from elsewhere may not be sorted
        statistic = quantile(samples, alpha / 2)
        upper = quantile(samples, 1 - alpha / 2)
        detail = (
            f"improvement {delta.improvement:+.4f}, {unc.confidence:.0%} CI "
            f"[{statistic:+.4f}, {upper:+.4f}]; gated on the lower bound"
        )
        label = _ci_lower(unc.confidence)
    else:
        statistic = delta.improvement
        detail = f"improvement {delta.improvement:+.4f} (point estimate)"
        label = DELTA
    ok = statistic > threshold if primary.mode == "superiority" else statistic >= threshold
    return Check(
        name=name,
        kind="primary",
        metric=metric,
        value=statistic,
        value_label=label,
        threshold=threshold,
        comparator=comparator,
        verdict="pass" if ok and _usable(statistic) else "fail",
        detail=detail,
    )


def _guardrail_checks(
    policy: Gate, evaluation: EvaluationRecord, deltas: dict[str, MetricDelta]
) -> list[Check]:
    checks = []
    for guard in policy.guardrails:
        delta = deltas.get(guard.metric)
        baseline = evaluation.champion.metrics.get(guard.metric) if evaluation.champion else None
        allowed = -_margin(guard.tolerance, guard.tolerance_type, baseline)
        name = f"guardrail {guard.metric}"
        improvement = delta.improvement if delta else None
        if not _usable(improvement) or math.isnan(allowed):
            checks.append(
                Check(
                    name=name,
                    kind="guardrail",
                    metric=guard.metric,
                    value=improvement,
                    value_label=DELTA,
                    threshold=None if math.isnan(allowed) else allowed,
                    comparator=">=",
                    verdict="fail",
                    detail=(
                        f"improvement is {_fmt(improvement)}"
                        if not _usable(improvement)
                        else f"relative tolerance needs a champion {guard.metric}, "
                        f"which is {_fmt(baseline)}"
                    ),
                )
            )
            continue
        ok = improvement >= allowed
        checks.append(
            Check(
                name=name,
                kind="guardrail",
                metric=guard.metric,
                value=improvement,
                value_label=DELTA,
                threshold=allowed,
                comparator=">=",
                verdict="pass" if ok else "fail",
                detail="may not regress beyond the tolerance",
            )
        )
    return checks


def _backtest_checks(policy: Gate, evaluation: EvaluationRecord) -> list[Check]:
    rule = policy.backtest
    if not rule.enabled:
        return []
    scores = evaluation.backtest
    if scores is None:
        return [
            Check(
                name="backtest",
                kind="backtest",
                verdict="skip",
                detail="no older holdout to backtest on (the champion has none of its own)",
            )
        ]
    name = f"backtest {scores.metric}"
    better = metric_info(scores.metric).higher_is_better
    if not (_usable(scores.challenger) and _usable(scores.champion)):
        missing = "a model has no usable score on the older holdout"
        return [
            Check(name=name, kind="backtest", metric=scores.metric, verdict="fail", detail=missing)
        ]
    improvement = scores.challenger - scores.champion
    improvement = improvement if better else -improvement
    return [
        Check(
            name=name,
            kind="backtest",
            metric=scores.metric,
            value=improvement,
            threshold=-rule.tolerance,
            comparator=">=",
            value_label=DELTA,
            verdict="pass" if improvement >= -rule.tolerance else "fail",
            detail=f"on {scores.source} ({scores.rows} rows, {scores.holdout_sha256[:12]})",
        )
    ]


def _slice_checks(policy: Gate, evaluation: EvaluationRecord) -> list[Check]:
    slices = policy.slices
    if not slices.columns:
        return []
    metric = slices.metric or policy.primary.metric
    higher = metric_info(metric).higher_is_better
    checks = []
    for item in evaluation.slices:
        if item.column not in slices.columns or item.metric != metric:
            continue
        name = f"slice {item.column}={item.value}"
        if item.rows < slices.min_size:
            checks.append(
                Check(
                    name=name,
                    kind="slice",
                    metric=metric,
                    value=float(item.rows),
                    value_label=ROWS,
                    threshold=float(slices.min_size),
                    comparator=">=",
                    verdict="skip",
                    detail=f"only {item.rows} rows; below min_size {slices.min_size}",
                )
            )
            continue
        if not (_usable(item.champion) and _usable(item.challenger)):
            checks.append(
                Check(
                    name=name,
                    kind="slice",
                    metric=metric,
                    verdict="skip",
                    detail=f"{metric} undefined on this slice (e.g. a single class)",
                )
            )
            continue
        improvement = item.challenger - item.champion if higher else item.champion - item.challenger
        ok = improvement >= -slices.tolerance
        checks.append(
            Check(
                name=name,
                kind="slice",
                metric=metric,
                value=improvement,
                value_label=DELTA,
                threshold=-slices.tolerance,
                comparator=">=",
                verdict="pass" if ok else "fail",
                detail=f"{item.rows} rows",
            )
        )
    return checks


def _reason(check: Check) -> str:
    """One failed check in words: the value against its rule, or why there is no value."""
    if check.value is None or check.threshold is None or check.kind in ("first_run", "holdout"):
        return f"{check.name}: {check.detail}"
    return f"{check.name}: {_fmt(check.value)} fails {check.comparator} {_fmt(check.threshold)}"


def _summary(model: str, verdict: str, evaluation: EvaluationRecord, checks: list[Check]) -> str:
    challenger = f"v{evaluation.challenger.version}"
    champion = f"v{evaluation.champion.version}" if evaluation.champion else "no champion"
    failed = [c for c in checks if c.verdict == "fail"]
    counted = [c for c in checks if c.verdict != "skip"]
    if verdict == "promote":
        primary = next((c for c in checks if c.kind == "primary"), None)
        why = f"; {primary.name}: {primary.detail}" if primary else "; first model for this spec"
        passed = f"{len(counted)}/{len(counted)} checks passed"
        return f"PROMOTE {model} {challenger} over {champion}: {passed}{why}"
    reasons = "; ".join(_reason(c) for c in failed[:3])
    more = f" (+{len(failed) - 3} more)" if len(failed) > 3 else ""
    return f"REJECT {model} {challenger} (champion stays {champion}): {reasons}{more}"


def decide(
    evaluation: EvaluationRecord,
    policy: Gate,
    *,
    pinned_holdout_sha256: str | None = None,
    dag_run_id: str | None = None,
    reason: str = "",
    now: datetime | None = None,
) -> DecisionRecord:
    """Apply the policy to the evaluation and return the full decision record."""
    checks = [check_holdouts(evaluation, pinned_holdout_sha256)]
    checks += _floor_checks(policy, evaluation.challenger)
    checks += _budget_checks(policy, evaluation.challenger)
    deltas = {d.metric: d for d in evaluation.deltas}
    if evaluation.champion is None:
        ok = policy.first_run == "promote"
        checks.append(
            Check(
                name="first run",
                kind="first_run",
                verdict="pass" if ok else "fail",
                detail=f"no champion yet; first_run policy is {policy.first_run!r}",
            )
        )
    else:
        checks.append(_primary_check(policy, evaluation, deltas))
        checks += _guardrail_checks(policy, evaluation, deltas)
        checks += _slice_checks(policy, evaluation)
        checks += _backtest_checks(policy, evaluation)
    verdict = "reject" if any(c.verdict == "fail" for c in checks) else "promote"
    return DecisionRecord(
        decision_id=uuid.uuid4().hex,
        model=evaluation.model,
        verdict=verdict,
        summary=_summary(evaluation.model, verdict, evaluation, checks),
        checks=checks,
        champion_version=evaluation.champion.version if evaluation.champion else None,
        challenger_version=evaluation.challenger.version,
        holdout_sha256=evaluation.holdout_sha256,
        holdout=evaluation.holdout,
        spec_sha256=evaluation.spec_sha256,
        data_sha256=evaluation.data_sha256,
        dag_run_id=dag_run_id,
        approval_required=policy.approval.required,
        policy=policy.model_dump(mode="json"),
        reason=reason,
        created_at=(now or datetime.now(UTC)).isoformat(),
    )


def _cell(value: float, label: str) -> str:
    value += 0.0  # -0.0 (a zero tolerance, negated) prints as 0
    if label in (ROWS, BYTES):
        return f"{value:,.0f}"
    return f"{value:+.4f}" if label.startswith("delta") else f"{value:.4f}"


def decision_table(decision: DecisionRecord, *, summary: bool = True) -> str:
    """A fixed-width table of every check, for terminals and task logs.

    The ``value is`` column says what each number is (a CI bound of the improvement, a
    point estimate, a row count, ...): checks compare different kinds of numbers.
    ``summary=False`` leaves out the closing summary line (it starts with the verdict), for
    output that already led with it.
    """
    rows = [("check", "value", "value is", "rule", "verdict")]
    for c in decision.checks:
        value = "" if c.value is None else _cell(c.value, c.value_label)
        rule = "" if c.threshold is None else f"{c.comparator} {_cell(c.threshold, c.value_label)}"
        label = c.value_label if c.value is not None else ""
        rows.append((c.name, value, label, rule, c.verdict.upper()))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join([*lines, "", decision.summary] if summary else lines)
