"""The comparison report: one self-contained HTML page per decision, stored with it.

Plots are drawn with matplotlib as inline SVG: no JavaScript, no fonts or scripts from a
network, a page that opens the same offline, inside Airflow, or years later from the
artifact store. (matplotlib is already in the task image through MLflow; a JavaScript
library embedded in every report would add megabytes per decision and run script in the
viewer's Airflow session.)
"""

from __future__ import annotations

import html
import io
from typing import Any

from mlops_pack.gate import quantile
from mlops_pack.records import DecisionRecord, EvaluationRecord
from mlops_pack.steps.cache_seed import seed_cache

COLORS = {"champion": "#7f7f7f", "challenger": "#1f77b4"}
STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222;max-width:1100px}
h1{font-size:1.4rem;margin:0 0 .3rem}
.verdict{display:inline-block;padding:.2rem .6rem;border-radius:4px;color:#fff;font-weight:700}
.promote{background:#2e7d32}.reject{background:#c62828}
.summary{font-size:1.05rem;margin:.5rem 0 1rem}
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.9rem}
td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}
tr.fail td{background:#fdecea}tr.pass td.v{color:#2e7d32}
tr.fail td.v{color:#c62828;font-weight:700}
.plots{display:flex;flex-wrap:wrap;gap:1rem}.plots figure{margin:0}
figcaption{font-size:.85rem;color:#555}
dl{display:grid;grid-template-columns:max-content auto;gap:.1rem 1rem}
dt{color:#555}
"""


def inline_svg(figure) -> str:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog and DOCTYPE: inline SVG


def new_figure(title: str, xlabel: str, ylabel: str):
    # The task image's font list: matplotlib rebuilt it in every container (0.3 s).
    seed_cache("MLOPS_PACK_MPL_CACHE_SEED", "MPLCONFIGDIR")
    import matplotlib

    matplotlib.use("Agg")
    # Text stays text in the SVG (searchable, selectable, smaller), in the viewer's font.
    matplotlib.rcParams["svg.fonttype"] = "none"
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(4.6, 3.4))
    axes.set_title(title, fontsize=10)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    return figure, axes


def _models(curves: dict[str, Any]) -> list[str]:
    return [m for m in ("champion", "challenger") if curves.get(m)]


def _line_plot(curves, key, x, y, title, xlabel, ylabel, diagonal=False) -> str:
    figure, axes = new_figure(title, xlabel, ylabel)
    for model in _models(curves):
        points = curves[model].get(key)
        if points:
            axes.plot(
                points[x],
                points[y],
                label=model,
                color=COLORS[model],
                marker="." if key == "calibration" else None,
            )
    if diagonal:
        axes.plot([0, 1], [0, 1], linestyle=":", color="#999")
    axes.legend(fontsize=8)
    return inline_svg(figure)


def _classification_plots(curves: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (
            "ROC curve on the holdout",
            _line_plot(
                curves,
                "roc",
                "fpr",
                "tpr",
                "ROC",
                "false positive rate",
                "true positive rate",
                diagonal=True,
            ),
        ),
        (
            "Precision-recall on the holdout",
            _line_plot(
                curves, "pr", "recall", "precision", "Precision-recall", "recall", "precision"
            ),
        ),
        (
            "Calibration: observed positive rate per bin of predicted probability",
            _line_plot(
                curves,
                "calibration",
                "predicted",
                "observed",
                "Calibration",
                "predicted probability",
                "observed rate",
                diagonal=True,
            ),
        ),
    ]


def _regression_plots(curves: dict[str, Any]) -> list[tuple[str, str]]:
    actual = curves["actual"]
    scatter, axes = new_figure("Predicted vs actual", "actual", "predicted")
    residuals, raxes = new_figure("Residuals (predicted - actual)", "actual", "residual")
    for model in _models(curves):
        predicted = curves[model]["predicted"]
        axes.scatter(actual, predicted, s=6, alpha=0.5, label=model, color=COLORS[model])
        raxes.scatter(
            actual,
            [p - a for p, a in zip(predicted, actual, strict=True)],
            s=6,
            alpha=0.5,
            label=model,
            color=COLORS[model],
        )
    low, high = min(actual), max(actual)
    axes.plot([low, high], [low, high], linestyle=":", color="#999")
    raxes.axhline(0, linestyle=":", color="#999")
    axes.legend(fontsize=8)
    raxes.legend(fontsize=8)
    n = len(actual)
    return [
        (f"Predicted vs actual ({n} holdout rows, sampled)", inline_svg(scatter)),
        (f"Residuals ({n} rows)", inline_svg(residuals)),
    ]


def _bootstrap_plot(
    decision: DecisionRecord, evaluation: EvaluationRecord
) -> tuple[str, str] | None:
    primary = next((c for c in decision.checks if c.kind == "primary"), None)
    delta = next((d for d in evaluation.deltas if primary and d.metric == primary.metric), None)
    if primary is None or delta is None or not delta.bootstrap:
        return None
    samples = sorted(delta.bootstrap)
    confidence = float(decision.policy.get("uncertainty", {}).get("confidence", 0.95))
    alpha = 1.0 - confidence
    low, high = quantile(samples, alpha / 2), quantile(samples, 1 - alpha / 2)
    figure, axes = new_figure(
        f"Bootstrap: improvement in {primary.metric}",
        "challenger - champion (positive is better)",
        "resamples",
    )
    axes.hist(samples, bins=40, color=COLORS["challenger"], alpha=0.7)
    axes.axvspan(
        low,
        high,
        color="#1f77b4",
        alpha=0.12,
        label=f"{confidence:.0%} interval [{low:+.4f}, {high:+.4f}]",
    )
    if primary.threshold is not None:
        axes.axvline(
            primary.threshold,
            color="#c62828",
            linestyle="--",
            label=f"threshold {primary.comparator} {primary.threshold:+.4f}",
        )
    if delta.improvement is not None:
        axes.axvline(delta.improvement, color="#222", label=f"observed {delta.improvement:+.4f}")
    axes.legend(fontsize=7)
    caption = (
        f"{len(samples)} paired bootstrap resamples of the primary metric's improvement; "
        "the gate uses the interval's lower bound"
    )
    return caption, inline_svg(figure)


def _slice_plot(evaluation: EvaluationRecord) -> tuple[str, str] | None:
    rows = [s for s in evaluation.slices if s.challenger is not None]
    if not rows:
        return None
    import numpy as np

    labels = [f"{s.column}={s.value} (n={s.rows})" for s in rows]
    figure, axes = new_figure(f"Per slice: {rows[0].metric}", "", rows[0].metric)
    figure.set_size_inches(max(4.6, 0.55 * len(rows) + 1.5), 3.6)
    x = np.arange(len(rows))
    axes.bar(
        x - 0.2, [s.champion or 0.0 for s in rows], 0.4, label="champion", color=COLORS["champion"]
    )
    axes.bar(
        x + 0.2, [s.challenger for s in rows], 0.4, label="challenger", color=COLORS["challenger"]
    )
    axes.set_xticks(x, labels, rotation=45, ha="right", fontsize=7)
    axes.legend(fontsize=8)
    return "Per-slice metric, champion and challenger", inline_svg(figure)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def _checks_table(decision: DecisionRecord) -> str:
    head = ("check", "value", "value is", "rule", "verdict", "detail")
    rows = ["<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for c in decision.checks:
        rule = (
            "" if c.threshold is None else f"{html.escape(c.comparator or '')} {_cell(c.threshold)}"
        )
        rows.append(
            f'<tr class="{c.verdict}"><td>{html.escape(c.name)}</td><td>{_cell(c.value)}</td>'
            f"<td>{html.escape(c.value_label)}</td><td>{rule}</td>"
            f'<td class="v">{c.verdict.upper()}</td><td>{html.escape(c.detail)}</td></tr>'
        )
    return f'<table class="checks">{"".join(rows)}</table>'


def render(decision: DecisionRecord, evaluation: EvaluationRecord) -> str:
    """The report as one HTML document (inline CSS and SVG only)."""
    curves = evaluation.curves or {}
    plots: list[tuple[str, str]] = []
    if curves.get("task") == "classification":
        plots += _classification_plots(curves)
    elif curves.get("task") == "regression":
        plots += _regression_plots(curves)
    plots += [p for p in (_bootstrap_plot(decision, evaluation), _slice_plot(evaluation)) if p]
    failed = [c.name for c in decision.checks if c.verdict == "fail"]
    model, version = html.escape(decision.model), html.escape(decision.challenger_version)
    empty = "<p>No curves recorded for this evaluation.</p>"
    facts = {
        "decision": decision.decision_id,
        "challenger": f"v{decision.challenger_version}",
        "champion": f"v{decision.champion_version}" if decision.champion_version else "none",
        "holdout": f"{decision.holdout_sha256[:16]} ({evaluation.holdout_rows} rows)",
        "spec": decision.spec_sha256[:16],
        "data": (decision.data_sha256 or "")[:16],
        "DAG run": decision.dag_run_id or "",
        "created": decision.created_at,
    }
    figures = "".join(
        f"<figure>{svg}<figcaption>{html.escape(caption)}</figcaption></figure>"
        for caption, svg in plots
    )
    failed_html = (
        f'<p class="failed">Failed checks: {html.escape(", ".join(failed))}</p>' if failed else ""
    )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{model}: {decision.verdict} v{version}</title>"
        f"<style>{STYLE}</style></head><body>"
        f"<h1>{model}: challenger v{version} "
        f'<span class="verdict {decision.verdict}">{decision.verdict.upper()}</span></h1>'
        f'<p class="summary">{html.escape(decision.summary)}</p>{failed_html}'
        f"<h2>Checks</h2>{_checks_table(decision)}"
        f'<h2>Plots</h2><div class="plots">{figures or empty}</div>'
        "<h2>Record</h2><dl>"
        + "".join(f"<dt>{k}</dt><dd>{html.escape(v)}</dd>" for k, v in facts.items())
        + "</dl></body></html>"
    )
