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
# Kept empty until monitoring exports drift scores and live metrics to Prometheus.
DRIFT_ROW = "Drift and live metrics"


def panel_queries(model: str) -> list[str]:
    """Every PromQL query of ``model``'s dashboard, in panel order."""
    sel = f'model="{model}"'
    return [expr.format(sel=sel) for panel in PANELS for expr, _ in panel.targets]


def dashboard(model: str) -> dict:
    sel = f'model="{model}"'
    panels, x, y = [], 0, 0
    for number, panel in enumerate(PANELS, start=1):
        if x + panel.width > 24:
            x, y = 0, y + 8
        panels.append(
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
    panels.append(
        {
            "id": len(PANELS) + 1,
            "type": "row",
            "title": DRIFT_ROW,
            "collapsed": True,
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": y + 8},
            "panels": [],
        }
    )
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
        "panels": panels,
    }


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
