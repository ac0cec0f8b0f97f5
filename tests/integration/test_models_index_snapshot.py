"""The Models page after an api-server restart: the saved history index, checked.

A real embedded MLflow store; the index and the plugin's app read it through MLflow's
client. Events older than the index's look-back are written with their real start time
(another host's clock), so a restart that re-read everything would be seen.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlops_pack.history_snapshot import SnapshotFile, store_identity
from mlops_pack.overview import OVERLAP_MS, HistoryIndex, history_experiment

MODELS = ["alpha", "beta", "gamma"]  # gamma has no history until the api-server is down


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_PACK_HOME", str(tmp_path / "store"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLOPS_PACK_UI_SNAPSHOT", str(tmp_path / "ui" / "history-index.json"))
    return tmp_path


def _registry():
    from mlops_pack.registry import Registry

    return Registry()


def _old_event(registry, model: str, kind: str, age_ms: int, **fields: str) -> str:
    """An event as another host writes it, started ``age_ms`` ago (beyond the look-back)."""
    client = registry.client
    experiment = registry.experiment_id(history_experiment(model))
    tags = {"mlops.event": kind, **{f"mlops.{k}": v for k, v in fields.items()}}
    run = client.create_run(experiment, start_time=int(time.time() * 1000) - age_ms, tags=tags)
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def _history(registry) -> None:
    hour = 3_600_000
    for age in (5, 4, 3):
        _old_event(registry, "alpha", "decision", age * hour, verdict="promote", summary=f"a{age}")
    for age in (5, 2):
        _old_event(registry, "beta", "promotion", age * hour, from_version="1", to_version="2")


def _snapshot(home) -> SnapshotFile:
    uri = _registry().settings.tracking_uri
    return SnapshotFile(home / "ui" / "history-index.json", store_identity(uri))


def _app():
    from fastapi.testclient import TestClient
    from mlops_pack.airflow import models_app

    app = models_app.create_app()
    pages = app.state.pages
    pages.models = lambda: MODELS
    pages.readable = lambda user, models: models
    app.dependency_overrides[models_app.viewer] = lambda: "test-user"
    return TestClient(app), pages


def _complete(client, pages) -> dict[str, dict]:
    """The list as the page serves it once every history is read."""
    client.get("/models")
    pages.index.wait()
    rows = client.get("/api/models").json()["models"]
    assert not any(row["loading"] for row in rows), rows
    return {row["model"]: row for row in rows}


def test_restart_from_snapshot_shows_events_written_while_down(home):
    registry = _registry()
    _history(registry)
    first = HistoryIndex(registry, snapshot=_snapshot(home))
    before = first.events(MODELS)
    assert [len(before[m]) for m in MODELS] == [3, 2, 0]
    assert first.last_save["wrote"] is True
    path = home / "ui" / "history-index.json"
    assert oct(path.stat().st_mode & 0o777) == "0o600"  # only the api-server's user reads it

    # While the api-server is down, other hosts write: one event beyond the look-back,
    # one within it, and gamma's first (its history experiment is created now).
    late = _old_event(registry, "alpha", "rollback", OVERLAP_MS // 2, reason="while down")
    registry.append_event("beta", "deploy_rejected", {"version": "3", "reason": "canary"})
    registry.append_event("gamma", "decision", {"verdict": "reject", "summary": "g1"})

    restarted = HistoryIndex(_registry(), snapshot=_snapshot(home))
    # Until its first check is done the page says "loading", never the saved list.
    with restarted._searching:  # a check in progress, held so the test sees that moment
        rows = restarted.summaries(MODELS, wait_s=0)
        assert all(row["loading"] for row in rows)
    restarted.wait()
    after = restarted.events(MODELS, wait=False)
    # alpha and beta from the snapshot; gamma, which has a history only since, from MLflow.
    assert restarted.last_refresh["seeded_models"] == 2
    # Only what started within the look-back of the saved high-water mark was read again
    # (beta's 2 h old event, the rollback, beta's and gamma's new ones), not all eight.
    assert restarted.last_refresh["runs_read"] == 4
    assert [e["event_id"] for e in after["alpha"]] == [e["event_id"] for e in before["alpha"]] + [
        late
    ]
    assert [e["kind"] for e in after["beta"]] == ["promotion", "promotion", "deploy_rejected"]
    assert [e.get("summary") for e in after["gamma"]] == ["g1"]

    # The same through the plugin's app, as a restarted api-server worker serves it.
    client, pages = _app()
    rows = _complete(client, pages)
    assert {m: rows[m]["events"] for m in MODELS} == {"alpha": 4, "beta": 3, "gamma": 1}
    assert rows["gamma"]["decision"]["verdict"] == "reject"
    assert pages.index.last_refresh["seeded_models"] == 3


def _rewrite(path, header=None, body=None, raw=None):
    lines = path.read_bytes().split(b"\n", 1)
    if raw is not None:
        path.write_bytes(raw)
        return
    head = json.loads(lines[0])
    data = lines[1] if body is None else body
    head.update(header or {})
    if body is not None and "sha256" not in (header or {}):
        head["sha256"] = hashlib.sha256(data).hexdigest()
    path.write_bytes(json.dumps(head).encode() + b"\n" + data)


BAD = {
    "truncated": lambda p: _rewrite(p, raw=p.read_bytes()[: p.stat().st_size // 2]),
    "garbage": lambda p: _rewrite(p, raw=os.urandom(4096)),
    "empty": lambda p: _rewrite(p, raw=b""),
    "newer format": lambda p: _rewrite(p, header={"format": "mlops-pack.history-index/9"}),
    "another store": lambda p: _rewrite(p, header={"store": store_identity("sqlite:///x.db")}),
    "edited body": lambda p: _rewrite(p, raw=p.read_bytes().replace(b"a5", b"a6")),
    "foreign event": lambda p: _rewrite(
        p, body=p.read_bytes().split(b"\n", 1)[1].replace(b'"kind":"decision"', b'"kind":7')
    ),
    "not an object": lambda p: _rewrite(p, body=b"[1, 2, 3]"),
}


def test_a_damaged_or_foreign_snapshot_is_ignored_and_rebuilt(home, caplog):
    registry = _registry()
    _history(registry)
    path = home / "ui" / "history-index.json"
    for damage, spoil in BAD.items():
        HistoryIndex(registry, snapshot=_snapshot(home)).events(MODELS)
        assert _snapshot(home).load() is not None, damage
        spoil(path)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="mlops_pack.history_snapshot"):
            client, pages = _app()
            rows = _complete(client, pages)
        counts = {m: rows[m]["events"] for m in MODELS}
        assert counts == {"alpha": 3, "beta": 2, "gamma": 0}, damage
        assert "seeded_models" not in pages.index.last_refresh, damage  # read whole
        assert f"history index snapshot {path} ignored" in caplog.text, damage
        # Rebuilt: the next restart starts from a good snapshot again.
        assert _snapshot(home).load() is not None, damage
        assert client.get("/models").status_code == 200, damage


def _in_another_process(code: str) -> None:
    """MLflow keeps one database engine per URI in a process: a store wiped and
    recreated at the same URI is seen fresh only by a new process, as after a restart."""
    import mlops_pack

    paths = [Path(__file__).parent, Path(mlops_pack.__file__).parent.parent]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in paths)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=300)


def test_a_snapshot_of_a_store_recreated_at_the_same_uri_is_not_used(home):
    _in_another_process(
        "from test_models_index_snapshot import _history, _registry, _snapshot, MODELS\n"
        "from mlops_pack.overview import HistoryIndex\n"
        "import pathlib\n"
        "_history(_registry())\n"
        f"HistoryIndex(_registry(), snapshot=_snapshot(pathlib.Path({str(home)!r})))"
        ".events(MODELS)\n"
    )
    assert (home / "ui" / "history-index.json").exists()
    shutil.rmtree(home / "store")  # wiped and recreated: the same URI, a new history
    _in_another_process(
        "from mlops_pack.registry import Registry\n"
        "Registry().append_event('alpha', 'decision', {'verdict': 'reject', 'summary': 'new'})\n"
    )
    index = HistoryIndex(_registry(), snapshot=_snapshot(home))
    events = index.events(MODELS)
    # Only gamma, which had no history in either store, is taken from the snapshot.
    assert index.last_refresh["seeded_models"] == 1
    assert [e["summary"] for e in events["alpha"]] == ["new"]
    assert events["beta"] == [] and events["gamma"] == []
