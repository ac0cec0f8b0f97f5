"""Grafana dashboards for the model servers, one per served model, from one panel list.

The shipped files under ``include/grafana/dashboards/`` are this module's output
(``mlops-pack stack dashboards``); a test keeps them in step and runs every query
against a real Prometheus scraping a real server. Queries use fixed windows rather than
Grafana's ``$__rate_interval`` so that they are plain PromQL, checkable without Grafana.
The metric names are the ones ``mlops_pack.serving.telemetry`` exposes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

DATASOURCE = {"type": "prometheus", "uid": "mlops-prometheus"}
DASHBOARD_DIR = Path("grafana") / "dashboards"


@dataclass(frozen=True)
class Panel:
    title: str
    kind: str  # Grafana panel type
    unit: str
    targets: tuple[tuple[str, str], ...]  # (PromQL with {sel} for the model selector, legend)
    description: str
    width: int = 12


def _quantile(q: float) -> tuple[str, str]:
    rate = 'rate(mlops_pack_request_seconds_bucket{{{sel},status="ok"}}[5m])'
    return f"histogram_quantile({q}, sum by (le) ({rate}))", f"p{round(q * 100)}"


PANELS = (
    Panel(
        "Request rate",
        "timeseries",
        "reqps",
        (
            (
                "sum by (slot, status) (rate(mlops_pack_requests_total{{{sel}}}[5m]))",
                "{{slot}} {{status}}",
            ),
        ),
        "Scored requests per second by slot (stable, candidate, shadow) and status.",
    ),
    Panel(
        "Latency percentiles (scored requests)",
        "timeseries",
        "s",
        (_quantile(0.5), _quantile(0.95), _quantile(0.99)),
        "From the server's latency histogram; compare p95 with serving.latency_budget_ms_p95.",
    ),
    Panel(
        "Errors and refused requests",
        "timeseries",
        "reqps",
        (
            # A model that failed to score (counted against a candidate, answered by stable).
            (
                'sum(rate(mlops_pack_requests_total{{{sel},status="error"}}[5m])) or vector(0)',
                "scoring errors",
            ),
            (
                "sum by (status) (rate(mlops_pack_refused_requests_total{{{sel}}}[5m]))",
                "refused {{status}}",
            ),
        ),
        "Refused: bad key (401), bad body (400/413/422) before scoring.",
    ),
    Panel(
        "Served version",
        "stat",
        "none",
        (("max by (slot, version) (mlops_pack_model_info{{{sel}}})", "{{slot}}: v{{version}}"),),
        "The version loaded in each slot; a candidate appears only while a deploy runs.",
        width=6,
    ),
    Panel(
        "Candidate share",
        "stat",
        "percentunit",
        (
            (
                'sum(rate(mlops_pack_requests_total{{{sel},slot=~"candidate|shadow"}}[5m])) '
                "/ sum(rate(mlops_pack_requests_total{{{sel}}}[5m])) or vector(0)",
                "candidate or shadow",
            ),
        ),
        "Share of scored requests answered or shadowed by the candidate (0 without one).",
        width=6,
    ),
    Panel(
        "Range and band flags (last 15 min)",
        "timeseries",
        "short",
        (
            (
                "sum by (kind) (increase(mlops_pack_range_violations_total{{{sel}}}[15m]))",
                "{{kind}}",
            ),
        ),
        "Inputs outside the training range, predictions outside their range, batches "
        "whose positive rate left serving.positive_rate_band.",
    ),
    Panel(
        "Rows scored",
        "timeseries",
        "short",
        (("sum by (slot) (rate(mlops_pack_predictions_total{{{sel}}}[5m]))", "{{slot}}"),),
        "Rows per second (a request may carry many rows).",
    ),
)
DRIFT_ROW = "Drift and live metrics"
# The monitor's newest window per model, from the Pushgateway the Airflow workers push
# each window's metrics.prom to (``mlops_pack.metrics_push``); the names are the ones
# ``mlops_pack.steps.monitor_report.write_metrics`` writes.
MONITOR_PANELS = (
    Panel(
        "Monitor verdict and alarms",
        "timeseries",
        "short",
        (
            ("max by (status) (mlops_monitor_status{{{sel}}}) > 0", "{{status}}"),
            ("max by (kind) (mlops_monitor_alarm{{{sel}}})", "alarm: {{kind}}"),
        ),
        "The newest window's status (healthy, insufficient data, drift, decay, stale) and "
        "the alarms it raised; a retrain or a person follows from these.",
    ),
    Panel(
        "Feature drift (PSI)",
        "timeseries",
        "short",
        (
            ("max by (feature) (mlops_monitor_feature_psi{{{sel}}})", "{{feature}}"),
            ("max(mlops_monitor_score_psi{{{sel}}})", "score"),
        ),
        "Population stability index of each feature and of the score against the "
        "champion's training profile; monitoring.drift.psi_threshold marks drift.",
    ),
    Panel(
        "Live metric on labelled rows",
        "timeseries",
        "short",
        (("max by (metric, bound) (mlops_monitor_metric{{{sel}}})", "{{metric}} {{bound}}"),),
        "The gate's primary metric on the window's labelled rows with its bootstrap "
        "interval, and the champion's reference value it decays from.",
    ),
    Panel(
        "Window rows and labels",
        "timeseries",
        "short",
        (
            ("max(mlops_monitor_window_rows{{{sel}}})", "served rows"),
            ("max(mlops_monitor_labelled_rows{{{sel}}})", "labelled rows"),
        ),
        "Rows the window judged and how many had their label by then.",
    ),
    Panel(
        "Since the last monitor window",
        "stat",
        "s",
        (('time() - max(push_time_seconds{{job="mlops_pack_monitor",{sel}}})', "age"),),
        "Seconds since the workers last pushed a window: a value far above the monitor's "
        "schedule means windows are not being judged (or their push failed).",
    ),
    Panel(
        "Champion age",
        "stat",
        "d",
        (("max(mlops_monitor_champion_age_days{{{sel}}})", "days"),),
        "Days since the served champion was trained; monitoring.max_age_days raises stale.",
    ),
)


def panel_queries(model: str) -> list[str]:
    """Every PromQL query of the serving panels of ``model``'s dashboard, in order."""
    return _queries(PANELS, model)


def monitor_panel_queries(model: str) -> list[str]:
    """Every PromQL query of the drift and live metrics row, in order."""
    return _queries(MONITOR_PANELS, model)


def _queries(panels: tuple[Panel, ...], model: str) -> list[str]:
    sel = f'model="{model}"'
    return [expr.format(sel=sel) for panel in panels for expr, _ in panel.targets]


def dashboard(model: str) -> dict:
    sel = f'model="{model}"'
    serving, y = _grid(PANELS, sel, first_id=1, top=0)
    row = {
        "id": len(PANELS) + 1,
        "type": "row",
        "title": DRIFT_ROW,
        "collapsed": False,
        "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
        "panels": [],
    }
    monitor, _ = _grid(MONITOR_PANELS, sel, first_id=len(PANELS) + 2, top=y + 1)
    return {
        "uid": f"mlops-pack-{model}",
        "title": f"Model server: {model}",
        "tags": ["mlops-pack", model],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "editable": True,
        "panels": [*serving, row, *monitor],
    }


def _grid(panels: tuple[Panel, ...], sel: str, first_id: int, top: int) -> tuple[list, int]:
    """Grafana panels laid out two to a row of 24 columns from ``top``; the list and the
    first free row below them."""
    out, x, y = [], 0, top
    for number, panel in enumerate(panels, start=first_id):
        if x + panel.width > 24:
            x, y = 0, y + 8
        out.append(
            {
                "id": number,
                "type": panel.kind,
                "title": panel.title,
                "description": panel.description,
                "datasource": DATASOURCE,
                "gridPos": {"h": 8, "w": panel.width, "x": x, "y": y},
                "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
                "targets": [
                    {
                        "refId": chr(ord("A") + index),
                        "datasource": DATASOURCE,
                        "expr": expr.format(sel=sel),
                        "legendFormat": legend,
                    }
                    for index, (expr, legend) in enumerate(panel.targets)
                ],
            }
        )
        x += panel.width
    return out, y + 8


def dashboard_text(model: str) -> str:
    return json.dumps(dashboard(model), indent=2) + "\n"


def write_dashboards(include_dir: Path, models: list[str]) -> list[Path]:
    folder = include_dir / DASHBOARD_DIR
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for model in models:
        path = folder / f"{model}.json"
        path.write_text(dashboard_text(model), encoding="utf-8")
        written.append(path)
    return written
