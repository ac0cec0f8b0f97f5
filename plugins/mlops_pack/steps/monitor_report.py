"""The monitor's outputs for people and for Prometheus.

The HTML report is one self-contained file. The window's own charts are small inline SVG
drawn here (bars of current vs reference shares per bin, a PSI bar against its threshold,
the metric's interval against the reference band): a few kilobytes per feature, no
plotting library needed. The charts over time (the last windows' drift scores and metric,
with the thresholds drawn) are matplotlib figures inlined as SVG, as in the comparison
report: no script, nothing fetched from a network.

Metrics are written with prometheus_client's own registry and ``write_to_textfile``
(atomic), in the text format the node exporter's textfile collector and Pushgateway read.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

STATUS_COLOUR = {
    "healthy": "#2e7d32",
    "insufficient_data": "#757575",
    "stale": "#ef6c00",
    "drift": "#c62828",
    "decay": "#6a1b9a",
}
REFERENCE, CURRENT = "#90a4ae", "#1565c0"


def write_metrics(path: Path, record: dict[str, Any]) -> None:
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    registry = CollectorRegistry()
    model = record["model"]

    def gauge(name: str, text: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(name, text, ("model", *labels), registry=registry)

    status = gauge("mlops_monitor_status", "1 for the window's status", ("status",))
    for name in STATUS_COLOUR:
        status.labels(model, name).set(1 if record["status"] == name else 0)
    alarm = gauge("mlops_monitor_alarm", "1 when the alarm kind fired", ("kind",))
    fired = {a["kind"] for a in record["alarms"]}
    for kind in ("data_drift", "prediction_drift", "decay", "stale"):
        alarm.labels(model, kind).set(1 if kind in fired else 0)
    window = record["window"]
    gauge("mlops_monitor_window_rows", "served rows in the window").labels(model).set(
        window["rows"]
    )
    gauge("mlops_monitor_labelled_rows", "labelled rows in the window").labels(model).set(
        window["labelled_rows"]
    )
    psi = gauge("mlops_monitor_feature_psi", "PSI of a feature vs the reference", ("feature",))
    drifted = gauge("mlops_monitor_feature_drifted", "1 when the feature drifted", ("feature",))
    for name, feature in record["features"].items():
        psi.labels(model, name).set(feature["distance"])
        drifted.labels(model, name).set(1 if feature["drifted"] else 0)
    if record["prediction"] is not None:
        gauge("mlops_monitor_score_psi", "PSI of the score vs the reference").labels(model).set(
            record["prediction"]["distance"]
        )
    performance = record["performance"]
    if performance is not None and performance["value"] is not None:
        value = gauge("mlops_monitor_metric", "metric on the labelled rows", ("metric", "bound"))
        for bound in ("value", "ci_low", "ci_high", "reference"):
            if performance[bound] is not None:
                value.labels(model, performance["metric"], bound).set(performance[bound])
    gauge("mlops_monitor_champion_age_days", "age of the champion version").labels(model).set(
        record["champion_age_days"]
    )
    flags = gauge("mlops_monitor_flags", "server flags in the window", ("kind",))
    for kind, count in record["flags"].items():
        flags.labels(model, kind).set(count)
    gauge("mlops_monitor_skipped_lines", "log or label lines skipped").labels(model).set(
        record["skipped_total"]
    )
    write_to_textfile(str(path), registry)


# HTML ------------------------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape(str(value))


def _bars(labels: list[str], reference: list[float], current: list[float]) -> str:
    """Paired bars per bin: reference (grey) and current (blue) shares."""
    width, height, pad = max(260, 46 * len(labels)), 150, 24
    top = max([*reference, *current, 0.01])
    slot = (width - pad) / len(labels)
    parts = [f'<svg width="{width}" height="{height + 40}" role="img">']
    for i, (label, ref, cur) in enumerate(zip(labels, reference, current, strict=True)):
        x = pad + i * slot
        for offset, share, colour in ((0.1, ref, REFERENCE), (0.5, cur, CURRENT)):
            bar = height * share / top
            parts.append(
                f'<rect x="{x + offset * slot:.1f}" y="{height - bar:.1f}" '
                f'width="{0.38 * slot:.1f}" height="{bar:.1f}" fill="{colour}">'
                f"<title>{_e(label)}: {share:.3f}</title></rect>"
            )
        parts.append(
            f'<text x="{x + slot / 2:.1f}" y="{height + 14}" font-size="9" '
            f'text-anchor="middle">{_e(label[:14])}</text>'
        )
    parts.append(
        f'<line x1="{pad}" y1="{height}" x2="{width}" y2="{height}" stroke="#444"/>'
        f'<text x="0" y="10" font-size="9">{top:.2f}</text></svg>'
    )
    return "".join(parts)


def _gauge(value: float, threshold: float, drifted: bool) -> str:
    """PSI as a bar with the threshold drawn; the scale shows twice the threshold."""
    width, scale = 220, max(2 * threshold, value * 1.1)
    bar = width * min(value, scale) / scale
    line = width * threshold / scale
    colour = STATUS_COLOUR["drift"] if drifted else STATUS_COLOUR["healthy"]
    return (
        f'<svg width="{width}" height="22" role="img"><rect width="{width}" height="16" '
        f'fill="#eceff1"/><rect width="{bar:.1f}" height="16" fill="{colour}"/>'
        f'<line x1="{line:.1f}" y1="0" x2="{line:.1f}" y2="20" stroke="#000" '
        f'stroke-dasharray="3,2"/></svg>'
    )


def _interval(performance: dict[str, Any]) -> str:
    """The window's metric with its interval, the reference and the decay threshold."""
    ref, tol = performance["reference"], performance["tolerance"]
    limit = ref - tol if performance["higher_is_better"] else ref + tol
    points = [
        v for v in (performance["ci_low"], performance["ci_high"], ref, limit) if v is not None
    ]
    low, high = min(points), max(points)
    span = (high - low) or 1.0
    low, high = low - 0.1 * span, high + 0.1 * span
    width = 420

    def x(value: float) -> float:
        return 10 + (width - 20) * (value - low) / (high - low)

    colour = STATUS_COLOUR["decay"] if performance["decayed"] else CURRENT
    return (
        f'<svg width="{width}" height="70" role="img">'
        f'<line x1="{x(ref):.1f}" y1="5" x2="{x(ref):.1f}" y2="45" stroke="{REFERENCE}" '
        f'stroke-width="3"><title>reference {ref:.4f}</title></line>'
        f'<line x1="{x(limit):.1f}" y1="5" x2="{x(limit):.1f}" y2="45" stroke="#c62828" '
        f'stroke-dasharray="4,3"><title>decay threshold {limit:.4f}</title></line>'
        f'<line x1="{x(performance["ci_low"]):.1f}" y1="25" x2="{x(performance["ci_high"]):.1f}" '
        f'y2="25" stroke="{colour}" stroke-width="4"/>'
        f'<circle cx="{x(performance["value"]):.1f}" cy="25" r="5" fill="{colour}"/>'
        f'<text x="10" y="64" font-size="10">{low:.3f}</text>'
        f'<text x="{width - 10}" y="64" font-size="10" text-anchor="end">{high:.3f}</text>'
        "</svg>"
    )


def _feature_rows(record: dict[str, Any]) -> str:
    rows = []
    ordered = sorted(record["features"].items(), key=lambda item: -item[1]["distance"])
    for name, feature in ordered:
        verdict = "drifted" if feature["drifted"] else "stable"
        rows.append(
            f"<tr><td><b>{_e(name)}</b><br>{verdict}</td>"
            f"<td>{feature['distance']:.3f}<br>"
            f"{_gauge(feature['distance'], feature['threshold'], feature['drifted'])}<br>"
            f"Holm p {feature['p_value']:.2g}; missing {feature['missing_rate'] or 0:.3f} "
            f"(ref {feature['reference_missing_rate']:.3f})</td>"
            f"<td>{_bars(feature['bins'], feature['reference_share'], feature['current_share'])}"
            "</td></tr>"
        )
    return "".join(rows)


HISTORY_FEATURES = 6  # feature lines in the drift-over-time chart (largest PSI first)


def _times(windows: list[dict[str, Any]]) -> list[Any]:
    from datetime import datetime

    return [datetime.fromisoformat(w["end"]) for w in windows]


def _time_axis(axes: Any) -> None:
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator()
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def _drift_over_time(windows: list[dict[str, Any]]) -> str:
    """PSI per window of the features that moved most, and of the score; threshold dashed;
    a window where a feature (or the score) drifted is marked on its line."""
    from mlops_pack.steps.comparison_report import inline_svg, new_figure

    times = _times(windows)
    peak: dict[str, float] = {}
    for window in windows:
        for name, value in window.get("psi", {}).items():
            peak[name] = max(peak.get(name, 0.0), value)
    shown = sorted(peak, key=lambda name: -peak[name])[:HISTORY_FEATURES]
    figure, axes = new_figure("Drift over time (PSI per window)", "window end", "PSI")
    figure.set_size_inches(7.5, 3.6)
    series = [(name, [w.get("psi", {}).get(name) for w in windows]) for name in shown]
    series.append(("score", [w.get("score_psi") for w in windows]))
    for name, values in series:
        points = [(t, v) for t, v in zip(times, values, strict=True) if v is not None]
        if not points:
            continue
        style = {"color": "#222", "linewidth": 2} if name == "score" else {}
        line = axes.plot(*zip(*points, strict=True), marker=".", label=name, **style)[0]
        fired = [
            (t, v)
            for t, v, w in zip(times, values, windows, strict=True)
            if v is not None
            and (w.get("score_drifted") if name == "score" else name in w.get("drifted", []))
        ]
        if fired:
            axes.scatter(*zip(*fired, strict=True), s=60, marker="x", color=line.get_color())
    thresholds = [(t, w["psi_threshold"]) for t, w in zip(times, windows, strict=True)]
    axes.step(
        *zip(*thresholds, strict=True),
        where="post",
        color="#c62828",
        linestyle="--",
        label="threshold",
    )
    _time_axis(axes)
    axes.legend(fontsize=7, loc="upper left", ncols=2)
    return inline_svg(figure)


def _metric_over_time(windows: list[dict[str, Any]]) -> str | None:
    """The metric per labelled window with its interval, the reference and the decay line."""
    from mlops_pack.steps.comparison_report import inline_svg, new_figure

    judged = [(t, w["performance"]) for t, w in zip(_times(windows), windows, strict=True)]
    judged = [(t, p) for t, p in judged if p and p.get("ci_low") is not None]
    if not judged:
        return None
    metric = judged[-1][1]["metric"]
    judged = [(t, p) for t, p in judged if p["metric"] == metric]
    figure, axes = new_figure(f"{metric} over time", "window end", metric)
    figure.set_size_inches(7.5, 3.6)
    times = [t for t, _ in judged]
    for decayed, colour, label in (
        (False, CURRENT, "window"),
        (True, STATUS_COLOUR["decay"], "decay"),
    ):
        part = [(t, p) for t, p in judged if bool(p["decayed"]) == decayed]
        if part:
            axes.errorbar(
                [t for t, _ in part],
                [p["value"] for _, p in part],
                yerr=[
                    [p["value"] - p["ci_low"] for _, p in part],
                    [p["ci_high"] - p["value"] for _, p in part],
                ],
                fmt="o",
                color=colour,
                capsize=3,
                label=f"{label} (interval)",
            )
    sign = [1 if p["higher_is_better"] else -1 for _, p in judged]
    axes.step(times, [p["reference"] for _, p in judged], where="mid", color=REFERENCE,
              linewidth=2, label="reference")  # fmt: skip
    axes.step(
        times,
        [p["reference"] - s * p["tolerance"] for (_, p), s in zip(judged, sign, strict=True)],
        where="mid",
        color="#c62828",
        linestyle="--",
        label="decay threshold",
    )
    _time_axis(axes)
    axes.legend(fontsize=7, loc="lower left")
    return inline_svg(figure)


def history_section(windows: list[dict[str, Any]]) -> str:
    """The charts over time; nothing until there are two windows to draw."""
    if len(windows) < 2:
        return ""
    charts = [_drift_over_time(windows), _metric_over_time(windows)]
    alarms = sum(1 for w in windows if w.get("status") in ("drift", "decay", "stale"))
    return (
        f"<h2>Over time: the last {len(windows)} windows</h2><p>{alarms} with an alarm. "
        "Crosses: a feature or the score drifted in that window; dashed red: the thresholds "
        "(PSI; reference minus the decay tolerance); the metric's bars are its interval.</p>"
        + "".join(f"<figure>{chart}</figure>" for chart in charts if chart)
    )


def render(record: dict[str, Any], windows: list[dict[str, Any]] | None = None) -> str:
    status, window = record["status"], record["window"]
    alarms = "".join(
        f"<li><b>{_e(a['kind'])}</b>: {_e(a['summary'])}</li>" for a in record["alarms"]
    )
    sections = [
        f"<h1>{_e(record['model'])}: champion v{_e(record['champion_version'])} "
        f'<span style="background:{STATUS_COLOUR[status]};color:#fff;padding:2px 8px">'
        f"{_e(status)}</span></h1>",
        f"<p>Window {_e(window['start'])} to {_e(window['end'])}: {window['rows']} rows in "
        f"{window['requests']} requests, {window['labelled_rows']} labelled. Champion age "
        f"{record['champion_age_days']:.1f} days.</p>",
        f"<ul>{alarms or '<li>no alarm</li>'}</ul>",
        f"<p>Rule: a feature drifted when PSI &ge; {record['rule']['psi_threshold']} and the "
        f"chi-square test of its bins rejects at family-wise {record['rule']['alpha']} "
        f"(Holm over the features); at least {record['rule']['min_rows']} rows. Bars: "
        f'<span style="color:{REFERENCE}">reference</span> vs '
        f'<span style="color:{CURRENT}">this window</span>; dashed line: threshold.</p>',
    ]
    performance = record["performance"]
    if performance is not None:
        sections.append(
            f"<h2>Performance: {_e(performance['metric'])}</h2><p>{performance['value']:.4f} "
            f"on {performance['rows']} labelled rows, {performance['confidence']:.0%} interval "
            f"[{performance['ci_low']:.4f}, {performance['ci_high']:.4f}]; reference "
            f"{performance['reference']:.4f}, tolerance {performance['tolerance']}"
            f"{' : DECAY' if performance['decayed'] else ''}.</p>{_interval(performance)}"
        )
    else:
        sections.append(
            "<h2>Performance</h2><p>Not judged: fewer labelled rows than "
            f"{record['rule']['min_labelled_rows']}.</p>"
        )
    sections.append(history_section(windows or []))
    prediction = record["prediction"]
    if prediction is not None:
        chart = _bars(
            prediction["bins"], prediction["reference_share"], prediction["current_share"]
        )
        extra = ""
        if "positive_rate" in prediction:
            extra = (
                f"; positive rate {prediction['positive_rate']:.3f} (ref "
                f"{prediction['reference_positive_rate']:.3f})"
            )
        sections.append(
            f"<h2>Scores</h2><p>PSI {prediction['distance']:.3f}; mean {prediction['mean']:.4f} "
            f"(ref {prediction['reference_mean']:.4f}){extra}.</p>"
            f"{chart}"
        )
    if record["flags"]:
        flags = ", ".join(f"{_e(k)}: {v}" for k, v in sorted(record["flags"].items()))
        sections.append(f"<h2>Server flags</h2><p>{flags}</p>")
    if record["features"]:
        sections.append(
            "<h2>Features</h2><table><tr><th>feature</th><th>PSI</th><th>distribution</th></tr>"
            f"{_feature_rows(record)}</table>"
        )
    if record["skipped_total"]:
        items = "".join(
            f"<li>{_e(s['file'])}:{_e(s['line'])}: {_e(s['reason'])}</li>"
            for s in record["skipped"]
        )
        sections.append(f"<h2>Skipped ({record['skipped_total']})</h2><ul>{items}</ul>")
    style = (
        "body{font-family:sans-serif;margin:24px;color:#222}"
        "td{vertical-align:top;padding:6px;border-bottom:1px solid #ddd}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>monitor "
        f"{_e(record['model'])}</title><style>{style}</style></head><body>"
        f"{''.join(sections)}</body></html>\n"
    )
