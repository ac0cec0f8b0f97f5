"""The Models page: a FastAPI app the pack's plugin mounts in Airflow's api-server.

Airflow does not protect a plugin's app, so every route here depends on ``viewer``:
Airflow's own user resolution (a JWT in the ``Authorization`` header or the UI's
cookie; none or a bad one is a 401), then Airflow's own authorization, model by model:
a user sees a model only if the auth manager lets them read its retrain DAG. Nothing here
writes; the pages are server-rendered HTML with inline CSS, no script.
"""

from __future__ import annotations

import html
import json
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse

from mlops_pack.airflow.links import ui_path

DAG_PREFIX = "mlops_retrain__"
# Reports are the pack's own HTML (inline CSS and SVG); even so, a page here may run no
# script and load nothing from anywhere, and only Airflow's own pages may frame it.
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "frame-ancestors 'self'; base-uri 'none'; form-action 'none'"
)
STYLE = """
body{font-family:system-ui,sans-serif;margin:1rem;color:#222}
table{border-collapse:collapse;font-size:.9rem}td,th{border:1px solid #ddd;padding:.3rem .5rem;
text-align:left;vertical-align:top}th{background:#f5f5f5}
.promote,.healthy{color:#2e7d32;font-weight:700}.reject,.deploy_rejected,.drift,.decay,.stale,
.escalation{color:#c62828;font-weight:700}.muted{color:#777}a{color:#1565c0}
"""


async def viewer(request: Request) -> Any:
    """Airflow's own user resolution (401 without a valid token), imported on first use:
    only the api-server needs it, and every process that loads plugins imports this."""
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user

    return await get_user(request, None, await bearer_scheme(request))


Viewer = Annotated[Any, Depends(viewer)]


class Pages:
    """State shared by the routes: the specs' model names and the history index."""

    def __init__(self) -> None:
        self._index = None
        self._reports: dict[tuple[str, str], str] = {}
        self._aliases: dict[str, tuple[Any, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def models(self) -> list[str]:
        from mlops_pack.airflow.operators import default_include_dir

        return sorted(p.stem for p in (default_include_dir() / "models").glob("*.yaml"))

    def readable(self, user: Any, models: list[str]) -> list[str]:
        from airflow.api_fastapi.app import get_auth_manager

        dag_ids = {f"{DAG_PREFIX}{m}" for m in models}
        allowed = get_auth_manager().filter_authorized_dag_ids(
            dag_ids=dag_ids, user=user, method="GET"
        )
        return [m for m in models if f"{DAG_PREFIX}{m}" in allowed]

    def model(self, user: Any, model: str) -> str:
        if model not in self.models():
            raise HTTPException(404, f"no model {model!r} (no spec models/{model}.yaml)")
        if not self.readable(user, [model]):
            raise HTTPException(403, f"not allowed to read DAG {DAG_PREFIX}{model}")
        return model

    @property
    def index(self):
        with self._lock:
            if self._index is None:
                from mlops_pack.history_snapshot import SnapshotFile, default_path, store_identity
                from mlops_pack.overview import HistoryIndex
                from mlops_pack.registry import Registry

                registry = Registry()
                path = default_path()
                snapshot = path and SnapshotFile(
                    path, store_identity(registry.settings.tracking_uri)
                )
                self._index = HistoryIndex(registry, snapshot=snapshot or None)
            return self._index

    def events(self, models: list[str], wait: bool = True) -> dict[str, list | None]:
        return self.index.events(models, wait=wait)

    def aliases(self, model: str, events: list[dict[str, Any]]) -> dict[str, Any]:
        """The live champion and previous aliases, read again only after a new event
        (every alias move writes one)."""
        from mlops_pack.overview import store_exists
        from mlops_pack.registry import CHAMPION, PREVIOUS

        if not store_exists(self.index.registry):
            return {"champion": None, "previous": None}
        key = (model, len(events))
        if self._aliases.get(model, (None,))[0] != key:
            registry = self.index.registry
            live = {
                "champion": getattr(registry.alias(model, CHAMPION), "version", None),
                "previous": getattr(registry.alias(model, PREVIOUS), "version", None),
            }
            self._aliases[model] = (key, live)
        return self._aliases[model][1]

    def artifact(self, model: str, run_id: str, path: str) -> str:
        """An immutable report artifact, fetched once from the artifact store."""
        key = (run_id, path)
        if key not in self._reports:
            with tempfile.TemporaryDirectory() as tmp:
                local = self.index.registry.download(f"runs:/{run_id}/{path}", Path(tmp))
                text = local.read_text(encoding="utf-8")
            with self._lock:
                if len(self._reports) > 64:
                    self._reports.pop(next(iter(self._reports)))
                self._reports[key] = text
        return self._reports[key]


def _page(title: str, body: str, refresh_seconds: int | None = None) -> HTMLResponse:
    # A page whose history is still loading reloads itself (no script needed).
    refresh = f"<meta http-equiv='refresh' content='{refresh_seconds}'>" if refresh_seconds else ""
    return HTMLResponse(
        f"<!DOCTYPE html><html><head><meta charset='utf-8'>{refresh}"
        f"<title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>{body}</body></html>",
        headers={"Content-Security-Policy": CSP},
    )


def _when(event: dict[str, Any] | None) -> str:
    if not event:
        return ""
    stamp = datetime.fromtimestamp(int(event["time_ms"]) / 1000, UTC)
    return stamp.strftime("%Y-%m-%d %H:%M:%S UTC")


def _v(version: Any) -> str:
    return f"v{html.escape(str(version))}" if version else '<span class="muted">none</span>'


def _event_href(model: str, event: dict[str, Any]) -> str:
    if event["kind"] == "decision" and event.get("decision_id"):
        return ui_path(f"/models/{quote(model)}/decisions/{quote(event['decision_id'])}")
    return ui_path(f"/models/{quote(model)}/events/{quote(event['event_id'])}")


def _decision_cell(model: str, decision: dict[str, Any] | None) -> str:
    if not decision:
        return '<span class="muted">no decision yet</span>'
    verdict = html.escape(decision.get("verdict", "?"))
    return (
        f'<a class="{verdict}" href="{_event_href(model, decision)}">{verdict.upper()}</a> '
        f"{html.escape(decision.get('summary', ''))}"
    )


def _monitor_cell(model: str, monitor: dict[str, Any] | None) -> str:
    # The monitor's last window (overview.monitor_state), linked to that window's report.
    if not monitor:
        return '<span class="muted">not monitored</span>'
    state = html.escape(str(monitor["state"]))
    return (
        f'<a class="{state}" href="{_event_href(model, monitor["event"])}">{state}</a> '
        f'<span class="muted">{_when(monitor["event"])}</span>'
    )


def _quiet(event: dict[str, Any]) -> bool:
    """A monitor window without an alarm: one per window, so the timeline leaves them out
    unless asked for everything (the model's monitor cell links the latest)."""
    return event["kind"] == "monitor" and event.get("status") in ("healthy", "insufficient_data")


def _deploy_cell(deploy: dict[str, Any] | None) -> str:
    if not deploy:
        return '<span class="muted">none</span>'
    from mlops_pack.overview import describe

    return f"{html.escape(describe(deploy))} <span class='muted'>{_when(deploy)}</span>"


def models_html(rows: list[dict[str, Any]]) -> str:
    head = ("model", "champion", "previous", "last decision", "last deploy", "served", "monitor")
    lines = ["<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for row in rows:
        model = row["model"]
        if row["loading"]:
            lines.append(
                f"<tr><td>{html.escape(model)}</td>"
                '<td colspan="6" class="muted">history loading; this page reloads itself</td></tr>'
            )
            continue
        lines.append(
            f'<tr><td><a href="{ui_path("/models/" + quote(model))}">{html.escape(model)}</a>'
            f' <span class="muted">({row["events"]} events)</span></td>'
            f"<td>{_v(row['champion'])}</td><td>{_v(row['previous'])}</td>"
            f"<td>{_decision_cell(model, row['decision'])}</td>"
            f"<td>{_deploy_cell(row['deploy'])}</td><td>{_v(row['served_version'])}</td>"
            f"<td>{_monitor_cell(model, row['monitor'])}</td></tr>"
        )
    return f"<h1>Models</h1><table>{''.join(lines)}</table>"


FIRST_PAGE_WAIT_S = 2.0
TIMELINE = 200  # newest events shown unless ?all=1


def model_html(
    model: str, row: dict[str, Any], live: dict[str, Any], events: list, everything: bool
) -> str:
    from mlops_pack.overview import describe

    facts = (
        f"<p>champion {_v(live['champion'])}, previous {_v(live['previous'])} "
        f'(registry aliases); <span id="served">served {_v(row["served_version"])}</span>; '
        f"last deploy: {_deploy_cell(row['deploy'])}; "
        f"monitor: {_monitor_cell(model, row['monitor'])}</p>"
        f"<p>last decision: {_decision_cell(model, row['decision'])}</p>"
    )
    lines = ["<tr><th>when</th><th>event</th><th>what</th><th>DAG run</th></tr>"]
    listed = events if everything else [e for e in events if not _quiet(e)]
    shown = listed if everything else listed[-TIMELINE:]
    for event in reversed(shown):
        kind = html.escape(event["kind"])
        run = event.get("dag_run_id")
        run_cell = (
            f'<a target="_top" href="/dags/{DAG_PREFIX}{quote(model)}/runs/{quote(run)}">'
            f"{html.escape(run)}</a>"
            if run and run != "None"
            else ""
        )
        lines.append(
            f'<tr><td>{_when(event)}</td><td><a class="{kind}" '
            f'href="{_event_href(model, event)}">{kind}</a></td>'
            f"<td>{html.escape(describe(event))}</td><td>{run_cell}</td></tr>"
        )
    back = f'<p><a href="{ui_path("/models")}">All models</a></p>'
    quiet = len(events) - len(listed)
    more = (
        f'<p><a href="{ui_path("/models/" + quote(model))}?all=1">all {len(events)} events</a>'
        f"{f' ({quiet} monitor windows without an alarm not listed)' if quiet else ''}</p>"
        if len(shown) < len(events)
        else ""
    )
    return (
        f"{back}<h1>{html.escape(model)}</h1>{facts}<h2>Timeline ({len(events)} events, "
        f"newest first)</h2><table>{''.join(lines)}</table>{more}"
    )


def create_app() -> FastAPI:
    app = FastAPI(
        title="mlops-pack models",
        description="Models, decisions, deploys and reports of the MLOps pack (read-only).",
    )
    pages = Pages()
    app.state.pages = pages

    def overview(user: Any) -> list[dict[str, Any]]:
        # Waits for MLflow at most FIRST_PAGE_WAIT_S (a restart from a snapshot catches up
        # within it); a cold index answers "loading" and fills in the background.
        return pages.index.summaries(pages.readable(user, pages.models()), FIRST_PAGE_WAIT_S)

    def one(user: Any, model: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        from mlops_pack.overview import summary

        model = pages.model(user, model)
        events = pages.events([model])[model]
        return summary(model, events), events

    def find(events: list[dict[str, Any]], field: str, value: str) -> dict[str, Any]:
        for event in events:
            if event.get(field) == value:
                return event
        raise HTTPException(404, f"no event with {field} {value!r}")

    @app.get("/api/models")
    def api_models(user: Viewer) -> dict[str, Any]:
        return {"models": overview(user)}

    @app.get("/api/models/{model}")
    def api_model(user: Viewer, model: str) -> dict[str, Any]:
        row, events = one(user, model)
        return {**row, "timeline": events}

    @app.get("/models", response_class=HTMLResponse)
    def models_page(user: Viewer) -> HTMLResponse:
        rows = overview(user)
        loading = any(row["loading"] for row in rows)
        return _page("Models", models_html(rows), refresh_seconds=2 if loading else None)

    @app.get("/models/{model}", response_class=HTMLResponse)
    def model_page(user: Viewer, model: str, all: bool = False) -> HTMLResponse:
        row, events = one(user, model)
        live = pages.aliases(model, events)
        return _page(f"{model}: models", model_html(model, row, live, events, all))

    @app.get("/models/{model}/decisions/{decision_id}", response_class=HTMLResponse)
    def decision_report(user: Viewer, model: str, decision_id: str) -> HTMLResponse:
        _, events = one(user, model)
        event = find(events, "decision_id", decision_id)
        if event["kind"] != "decision":
            event = find([e for e in events if e["kind"] == "decision"], "decision_id", decision_id)
        report = event.get("report")
        if not report:
            return _page(
                "No report",
                f"<p>Decision {html.escape(decision_id)} has no stored report (it predates "
                "comparison reports).</p>"
                f"<p>{_decision_cell(model, event)}</p>",
            )
        version = pages.index.registry.version(model, event["challenger_version"])
        text = pages.artifact(model, version.run_id, report)
        return HTMLResponse(text, headers={"Content-Security-Policy": CSP})

    @app.get("/models/{model}/events/{event_id}", response_class=HTMLResponse)
    def event_page(user: Viewer, model: str, event_id: str) -> HTMLResponse:
        from mlops_pack.overview import describe

        _, events = one(user, model)
        event = find(events, "event_id", event_id)
        if event.get("report"):  # e.g. a monitor's report, stored on the event's own run
            text = pages.artifact(model, event_id, event["report"])
            return HTMLResponse(text, headers={"Content-Security-Policy": CSP})
        fields = json.dumps(event, indent=2, sort_keys=True)
        back = f'<p><a href="{ui_path("/models/" + quote(model))}">{html.escape(model)}</a></p>'
        return _page(
            f"{model}: {event['kind']}",
            f"{back}<h1>{html.escape(event['kind'])} <span class='muted'>{_when(event)}</span></h1>"
            f"<p>{html.escape(describe(event))}</p>"
            f"<pre>{html.escape(fields)}</pre>",
        )

    return app
