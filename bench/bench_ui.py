"""Models page speed: 100 models x 1,000 history events each, in a real MLflow store.

The history is generated fast by writing MLflow's own tables (a template run made by the
client is copied 100,000 times, tags included); everything read afterwards goes through
MLflow's client, as in the api-server. The pages are fetched over the plugin's FastAPI
app in-process (TestClient); Airflow's authentication is replaced by a fixed user, since
it is Airflow's cost, not the pack's, and needs a running api-server.

Prints: the first (cold) page and how long the history index takes to fill without a
snapshot; warm list and model pages (median and p95 of repeated requests, served from the
index while its background check runs beside them); what one background check costs,
with and without a new event; what saving the snapshot costs; and a restart: a new
process (as a restarted api-server worker) starting from the snapshot, with events
written while it was down, timed from its first page to the complete list.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS

SPACING_MS = 315_000  # 100,000 events over a year, oldest first
KINDS = ["decision", "promotion", "deploy_rejected", "approval", "rollback", "monitor"]


def generate(home: Path, models: int, events: int) -> list[str]:
    os.environ["MLOPS_PACK_HOME"] = str(home)
    from mlops_pack.overview import history_experiment
    from mlops_pack.registry import Registry

    registry = Registry()
    names = [f"model_{i:03d}" for i in range(models)]
    template = None
    for name in names:
        registry.experiment_id(history_experiment(name))
        if template is None:
            template = registry.append_event(name, "decision", {"verdict": "promote"})
    db = sqlite3.connect(home / "mlflow.db")
    columns = [r[1] for r in db.execute("PRAGMA table_info(runs)")]
    row = dict(
        zip(
            columns,
            db.execute("SELECT * FROM runs WHERE run_uuid=?", (template,)).fetchone(),
            strict=True,
        )
    )
    experiments = dict(
        db.execute("SELECT name, experiment_id FROM experiments WHERE name LIKE 'mlops-pack/%'")
    )
    rng = random.Random(7)
    start = int(time.time() * 1000) - models * events * SPACING_MS
    runs, tags = [], []
    clock = start
    for index in range(events):
        for name in names:
            clock += SPACING_MS
            run_id = uuid.uuid4().hex
            kind = KINDS[index % len(KINDS)] if index else "decision"
            verdict = rng.choice(["promote", "reject"])
            runs.append(
                {
                    **row,
                    "run_uuid": run_id,
                    "name": f"{kind}-{clock}",
                    "experiment_id": experiments[history_experiment(name)],
                    "start_time": clock,
                    "end_time": clock + 5,
                    "artifact_uri": row["artifact_uri"].replace(template, run_id),
                }
            )
            fields = {
                "event": kind,
                "decision_id": uuid.uuid4().hex,
                "verdict": verdict,
                "challenger_version": str(index + 2),
                "champion_version": str(index + 1),
                "from_version": str(index + 1),
                "to_version": str(index + 2),
                "summary": f"{verdict.upper()} {name} v{index + 2}: 7/8 checks passed",
                "dag_run_id": f"manual__{clock}",
                "state": "healthy",
            }
            tags += [(f"mlops.{k}", v, run_id) for k, v in fields.items()]
    db.execute("DELETE FROM tags WHERE run_uuid=?", (template,))
    db.execute("DELETE FROM runs WHERE run_uuid=?", (template,))
    placeholders = ",".join("?" for _ in columns)
    db.executemany(
        f"INSERT INTO runs ({','.join(columns)}) VALUES ({placeholders})",
        [tuple(r[c] for c in columns) for r in runs],
    )
    db.executemany("INSERT INTO tags (key, value, run_uuid) VALUES (?, ?, ?)", tags)
    db.commit()
    db.close()
    return names


def app_for(names: list[str]):
    from fastapi.testclient import TestClient
    from mlops_pack.airflow import models_app

    app = models_app.create_app()
    pages = app.state.pages
    pages.models = lambda: names
    pages.readable = lambda user, models: models
    pages.model = lambda user, model: model
    app.dependency_overrides[models_app.viewer] = lambda: "bench-user"
    return TestClient(app), pages


CPU_MS: dict[str, list[float]] = {}  # process CPU per request: steadier than wall on a busy host


def timed(client, path: str, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        started, cpu = time.perf_counter(), time.process_time()
        response = client.get(path)
        out.append((time.perf_counter() - started) * 1000)
        CPU_MS.setdefault(path, []).append((time.process_time() - cpu) * 1000)
        assert response.status_code == 200, (path, response.status_code, response.text[:300])
    return out


def stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median_ms": round(statistics.median(ordered), 1),
        "p95_ms": round(ordered[max(0, int(len(ordered) * 0.95) - 1)], 1),
        "max_ms": round(ordered[-1], 1),
    }


def snapshot_env(home: Path) -> Path:
    path = home / "ui" / "history-index.json"
    os.environ["MLOPS_PACK_HOME"] = str(home)
    os.environ["MLOPS_PACK_UI_SNAPSHOT"] = str(path)
    return path


def restart(home: Path, models: int, expect: dict[str, str]) -> dict:
    """In a new process: the first page after a restart, and when the list is complete."""
    snapshot_env(home)
    names = [f"model_{i:03d}" for i in range(models)]
    # What any new process pays before it reads anything from MLflow, timed apart: the
    # api-server worker pays it on its first Models request, with or without a snapshot.
    begun = time.perf_counter()
    import mlflow  # noqa: F401

    imported = time.perf_counter()
    client, pages = app_for(names)
    pages.index.registry.client.search_experiments(max_results=1)
    opened = time.perf_counter()
    started = time.perf_counter()
    page = client.get("/models")
    first = (time.perf_counter() - started) * 1000
    complete_at_once = "history loading" not in page.text
    pages.index.wait()
    complete = time.perf_counter() - started
    rows = {r["model"]: r for r in client.get("/api/models").json()["models"]}
    assert not any(r["loading"] for r in rows.values())
    for model, summary in expect.items():  # written while this process was not running
        assert rows[model]["decision"]["summary"] == summary, rows[model]["decision"]
    return {
        "mlflow_import_s": round(imported - begun, 2),
        "mlflow_store_open_s": round(opened - imported, 2),
        "first_page_ms": round(first, 1),
        "first_page_complete": complete_at_once,
        "complete_s": round(complete, 2),
        "snapshot_and_catch_up": pages.index.last_seed,
        "snapshot_save": pages.index.last_save,
        "load_average": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--restart", type=Path, help=argparse.SUPPRESS)  # the child process
    parser.add_argument("--expect", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.restart:
        print(json.dumps(restart(args.restart, args.models, json.loads(args.expect))))
        return 0
    home = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    snapshot = snapshot_env(home)
    started = time.perf_counter()
    names = generate(home, args.models, args.events)
    generated = time.perf_counter() - started
    client, pages = app_for(names)
    # Cold: the first page answers at once (every model "loading") and starts reading
    # all histories in the background; how long until the page shows every model.
    cold = timed(client, "/models", 1)[0]
    assert "history loading" in client.get("/models").text
    started = time.perf_counter()
    pages.index.wait()
    cold_fill = time.perf_counter() - started + cold / 1000
    cold_refresh = dict(pages.index.last_refresh)
    saved = dict(pages.index.last_save)
    assert "history loading" not in client.get("/models").text
    # Warm pages: served from the index while its background check (every max_age
    # seconds) runs beside them, as in the api-server.
    warm_list = timed(client, "/models", args.repeat)
    pages.index.wait()
    pages.index.refresh()
    check = dict(pages.index.last_refresh)
    warm_model = timed(client, f"/models/{names[0]}", args.repeat)
    api_list = timed(client, "/api/models", args.repeat)
    from mlops_pack.registry import Registry

    Registry().append_event(names[1], "decision", {"verdict": "reject", "summary": "new"})
    pages.index.wait()
    started = time.perf_counter()
    pages.index.refresh()
    after_new = (time.perf_counter() - started) * 1000
    found = pages.index.last_refresh
    assert client.get(f"/api/models/{names[1]}").json()["decision"]["summary"] == "new"
    html_size = len(client.get("/models").content)
    model_size = len(client.get(f"/models/{names[0]}").content)
    # A restart: the running index stops; other hosts write while no api-server runs.
    down = {names[i]: f"while down {i}" for i in (3, 50, args.models - 1) if i < args.models}
    registry = Registry()
    for model, text in down.items():
        registry.append_event(model, "decision", {"verdict": "reject", "summary": text})
    child = subprocess.run(
        [sys.executable, __file__, "--restart", str(home), "--models", str(args.models),
         "--expect", json.dumps(down)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    restarted = json.loads(child.stdout.strip().splitlines()[-1])
    result = {
        "models": args.models,
        "events_per_model": args.events,
        "generate_s": round(generated, 1),
        "cold_first_page_ms": round(cold, 1),
        "cold_fill_s": round(cold_fill, 1),
        "cold_refresh": cold_refresh,
        "snapshot_save_after_fill": saved,
        "snapshot_bytes": snapshot.stat().st_size,
        "restart_with_snapshot": restarted,
        "warm_models_page": stats(warm_list),
        "warm_refresh_check": check,
        "warm_model_page_1000_events": stats(warm_model),
        "warm_api_models": stats(api_list),
        "background_check_after_one_new_event_ms": round(after_new, 1),
        "refresh_after_new_event": found,
        "cpu_ms_median": {p: round(statistics.median(v), 1) for p, v in CPU_MS.items()},
        "load_average": os.getloadavg(),
        "models_page_bytes": html_size,
        "model_page_bytes": model_size,
    }
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_ui.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
