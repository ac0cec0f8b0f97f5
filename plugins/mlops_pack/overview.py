"""What the Models page shows: every model's events, kept in an in-memory index.

The history lives in MLflow (one run per event, see ``Registry.append_event``). Asking
MLflow for 100 models' histories on every page view costs seconds, so the index reads
everything once and then, at most every ``max_age`` seconds, only the runs started since
the newest it has seen (one search over all models' history experiments). That check
runs in the background: a page is served from memory and shows what the last check
found (at most ``max_age`` plus one search old). A model seen for the first time is read
in the background too (``None`` until then: the page says its history is loading), unless
the caller asks to wait (one model's page). Events are append-only, so nothing held goes
stale; a run created late with an older start time is still found because each check
looks back ``OVERLAP_MS`` and skips ids it has. An event run not finished yet (still
storing its files) is left for a later check.

With a snapshot file (``history_snapshot``), a new process starts from the saved index
instead of reading everything: models whose history experiment is still the same one
(id and creation time) are seeded from it, and the first check fetches only what started
since its high-water mark. A seeded model counts as read only once that check is done,
so a restarted page never shows the saved list as the current one.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops_pack.history_snapshot import SavedModel, Snapshot, SnapshotFile
from mlops_pack.registry import TAG, Registry

OVERLAP_MS = 120_000
PAGE = 50_000  # MLflow's largest search page
log = logging.getLogger(__name__)
SAVE_EVERY_S = 30.0  # the snapshot is written at most this often, and only after a change
HISTORY_PREFIX, HISTORY_SUFFIX = "mlops-pack/", "/history"


def history_experiment(model: str) -> str:
    return f"{HISTORY_PREFIX}{model}{HISTORY_SUFFIX}"


def history_experiments(client: Any) -> dict[str, tuple[str, int]]:
    """Every model's history experiment, as (id, creation time), in one listing."""
    found: dict[str, tuple[str, int]] = {}
    token = None
    while True:
        page = client.search_experiments(
            filter_string=f"name LIKE '{HISTORY_PREFIX}%{HISTORY_SUFFIX}'",
            max_results=1000,
            page_token=token,
        )
        for experiment in page:
            name = experiment.name
            if name.startswith(HISTORY_PREFIX) and name.endswith(HISTORY_SUFFIX):
                model = name[len(HISTORY_PREFIX) : -len(HISTORY_SUFFIX)]
                found[model] = (experiment.experiment_id, experiment.creation_time)
        token = page.token
        if not token:
            return found


def store_exists(registry: Registry) -> bool:
    """False for an embedded store not created yet: a reader must not create it (the
    api-server's user would own it, and the step containers could no longer write)."""
    uri = registry.settings.tracking_uri
    return not uri.startswith("sqlite:///") or Path(uri.removeprefix("sqlite:///")).exists()


def _event(run: Any) -> dict[str, Any]:
    tags = {k.removeprefix(TAG): v for k, v in run.data.tags.items() if k.startswith(TAG)}
    return {
        "event_id": run.info.run_id,
        "kind": tags.pop("event", ""),
        "time_ms": run.info.start_time,
        **tags,
    }


@dataclass
class _Model:
    experiment_id: str | None = None
    created_ms: int | None = None
    loaded: bool = False
    seeded: bool = False  # events from the snapshot: only the newer ones are still to fetch
    events: list[dict[str, Any]] = field(default_factory=list)
    # The list page's row, kept until the next event arrives (events are append-only).
    row: dict[str, Any] | None = None
    row_events: int = -1
    ids: set[str] = field(default_factory=set)


class HistoryIndex:
    """Events per model, oldest first, refreshed incrementally from MLflow."""

    def __init__(
        self, registry: Registry, max_age: float = 5.0, snapshot: SnapshotFile | None = None
    ) -> None:
        self.registry = registry
        self.max_age = max_age
        self.snapshot = snapshot
        self._seed_pending = snapshot is not None
        self._dirty = False
        self._saved_at = -float("inf")
        self._models: dict[str, _Model] = {}
        self._since_ms = 0
        self._checked = -float("inf")
        self._lock = threading.Lock()  # guards the events held; never held during a search
        self._searching = threading.Lock()  # one search at a time
        self._background: threading.Thread | None = None
        self._pending: set[str] = set()
        # What the last refresh, seed and save cost, for the benchmark.
        self.last_refresh: dict[str, float] = {}
        self.last_seed: dict[str, Any] = {}  # the snapshot's load and check, and its catch-up
        self.last_save: dict[str, Any] = {}

    def events(self, models: list[str], wait: bool = True) -> dict[str, list[dict] | None]:
        """Each model's events, oldest first; ``None`` for a model not read yet when
        ``wait`` is false (it is being read in the background)."""
        with self._lock:
            unknown = [m for m in models if not (m in self._models and self._models[m].loaded)]
            stale = time.monotonic() - self._checked > self.max_age
        if unknown and wait:
            self.refresh(unknown)
        elif unknown or stale:
            self._refresh_in_background(unknown)
        with self._lock:
            return {
                m: list(self._models[m].events)
                if m in self._models and self._models[m].loaded
                else None
                for m in models
            }

    def summaries(self, models: list[str], wait_s: float = 0.0) -> list[dict[str, Any]]:
        """The list page's rows, waiting at most ``wait_s`` for models not read yet (then
        a row says it is loading); each row is computed again only after its model's
        events changed."""
        with self._lock:
            unknown = [m for m in models if not (m in self._models and self._models[m].loaded)]
            stale = time.monotonic() - self._checked > self.max_age
        if unknown or stale:  # the background check, when due, reads new models too
            self._refresh_in_background(unknown)
        deadline = time.monotonic() + wait_s
        while unknown and time.monotonic() < deadline and self._warming(unknown):
            time.sleep(0.02)
        rows = []
        with self._lock:
            for model in models:
                entry = self._models.get(model)
                if entry is None or not entry.loaded:
                    rows.append(summary(model, None))
                    continue
                if entry.row_events != len(entry.events):
                    entry.row, entry.row_events = summary(model, entry.events), len(entry.events)
                rows.append(entry.row)
        return rows

    def _warming(self, models: list[str]) -> bool:
        """Whether a restart from a snapshot is catching up on some of ``models`` (worth a
        short wait; reading a history whole is not)."""
        with self._lock:
            if self._background is None:
                return False
            return self._seed_pending or any(
                self._models[m].seeded and not self._models[m].loaded
                for m in models
                if m in self._models
            )

    def _refresh_in_background(self, new_models: list[str]) -> None:
        with self._lock:
            self._pending.update(new_models)
            if self._background is not None:  # it reads what is pending before it ends
                return
            self._checked = time.monotonic()  # one check per max_age, not one per request
            self._background = threading.Thread(
                target=self._drain, name="mlops-history", daemon=True
            )
            self._background.start()

    def _drain(self) -> None:
        """Check, then again while requests asked for models meanwhile; the thread clears
        itself under the lock, so a model asked for is never left waiting."""
        with self._lock:
            pending, self._pending = sorted(self._pending), set()
        while True:
            try:
                self.refresh(pending)
            except BaseException:
                with self._lock:
                    self._background = None
                raise
            with self._lock:
                if not self._pending:
                    self._background = None
                    return
                pending, self._pending = sorted(self._pending), set()

    def wait(self) -> None:
        """Wait for a background check to end (tests and the benchmark)."""
        thread = self._background
        if thread is not None:
            thread.join()

    def refresh(self, new_models: list[str] = ()) -> None:
        """Look up the history experiments of ``new_models`` (and of models that had
        none yet), then fetch every event newer than the newest held, minus the overlap."""
        with self._searching:
            started = time.perf_counter()
            if not store_exists(self.registry):  # nothing recorded yet, nothing to read
                with self._lock:
                    for model in new_models:
                        self._models.setdefault(model, _Model()).loaded = True
                    self._checked = time.monotonic()
                return
            client = self.registry.client
            listing = None
            seeded = self._seed(client) if self._seed_pending else None
            if seeded is not None:
                listing, seeded = seeded
            with self._lock:
                for model in new_models:
                    self._models.setdefault(model, _Model())
                missing = [m for m, e in self._models.items() if e.experiment_id is None]
                since = max(self._since_ms - OVERLAP_MS, 0)
            found = {}
            if missing:
                listing = history_experiments(client) if listing is None else listing
                found = {m: listing[m] for m in missing if m in listing}
            with self._lock:
                for model, (experiment_id, created_ms) in found.items():
                    entry = self._models[model]
                    entry.experiment_id, entry.created_ms = experiment_id, created_ms
                # Read whole: every history not read yet (a seeded one needs only what is
                # newer). A model without a history experiment has no events yet: read
                # too, and empty.
                unread = [m for m, e in self._models.items() if not e.loaded]
                new_ids = {
                    self._models[m].experiment_id for m in unread if not self._models[m].seeded
                } - {None}
                new_ids |= {i for i, _ in found.values()}  # a history that appeared: whole too
                experiments = {
                    e.experiment_id: m for m, e in self._models.items() if e.experiment_id
                }
            lookup = time.perf_counter()
            runs = _search(client, sorted(new_ids), 0)
            runs += _search(client, sorted(set(experiments) - new_ids), since)
            searched = time.perf_counter()
            fetched = 0
            with self._lock:
                for run in runs:
                    entry = self._models[experiments[run.info.experiment_id]]
                    # Held only once finished: an event still storing its files (a
                    # monitor's report) gets its last field then, and is read again.
                    if run.info.run_id in entry.ids or run.info.status == "RUNNING":
                        continue
                    entry.ids.add(run.info.run_id)
                    entry.events.append(_event(run))
                    self._since_ms = max(self._since_ms, run.info.start_time)
                    fetched += 1
                if fetched:  # a late run may land out of order
                    for entry in self._models.values():
                        entry.events.sort(key=lambda e: e["time_ms"])
                for model in unread:
                    self._models[model].loaded = True
                self._checked = time.monotonic()
                self._dirty |= bool(fetched or unread)
            self.last_refresh = {
                "experiments_s": round(lookup - started, 4),
                "search_s": round(searched - lookup, 4),
                "runs_read": len(runs),
                "new_events": fetched,
                **({"seeded_models": seeded} if seeded is not None else {}),
            }
            if seeded is not None:
                self.last_seed = {**self.last_seed, **self.last_refresh}
            self._save_when_due()

    def _seed(self, client: Any) -> tuple[dict[str, tuple[str, int]], int] | None:
        """Start from the snapshot, once: every model whose history experiment is the
        one the snapshot saw; returns the experiment listing and how many were seeded."""
        try:
            return self._seed_from_snapshot(client)
        finally:  # only now: a page waits while the seed may still add models
            self._seed_pending = False

    def _seed_from_snapshot(self, client: Any) -> tuple[dict[str, tuple[str, int]], int] | None:
        started = time.perf_counter()
        saved = self.snapshot.load()
        if saved is None:
            return None
        listing = history_experiments(client)
        seeded = 0
        with self._lock:
            for model, held in saved.models.items():
                now = listing.get(model)
                same = (now is None and held.experiment_id is None) or (
                    now == (held.experiment_id, held.created_ms)
                )
                if not same or model in self._models:
                    continue
                self._models[model] = _Model(
                    experiment_id=held.experiment_id,
                    created_ms=held.created_ms,
                    seeded=True,
                    events=held.events,
                    ids={e["event_id"] for e in held.events},
                )
                seeded += 1
            if seeded:
                self._since_ms = max(self._since_ms, saved.since_ms)
        self.last_seed = {"snapshot_s": round(time.perf_counter() - started, 4)}
        return listing, seeded

    def _save_when_due(self) -> None:
        if self.snapshot is None or not self._dirty:
            return
        if time.monotonic() - self._saved_at < SAVE_EVERY_S:
            return
        with self._lock:  # lists copied, events shared: they are never changed once held
            saved = Snapshot(
                since_ms=self._since_ms,
                models={
                    m: SavedModel(e.experiment_id, e.created_ms, list(e.events))
                    for m, e in self._models.items()
                    if e.loaded
                },
            )
            self._dirty = False
        self._saved_at = time.monotonic()
        try:
            started = time.perf_counter()
            wrote = self.snapshot.save(saved)
            self.last_save = {"wrote": wrote, "seconds": round(time.perf_counter() - started, 3)}
        except OSError as exc:  # a cache: the page works without it
            log.warning("history index snapshot %s not written: %s", self.snapshot.path, exc)


def _search(client: Any, experiment_ids: list[str], since_ms: int) -> list[Any]:
    runs: list[Any] = []
    token = None
    while experiment_ids:
        page = client.search_runs(
            experiment_ids,
            filter_string=f"attributes.start_time >= {since_ms}",
            order_by=["attributes.start_time ASC"],
            max_results=PAGE,
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            break
    return runs


# Summaries ---------------------------------------------------------------------------

MOVES = ("promotion", "rollback")


def _last(events: list[dict[str, Any]], *kinds: str) -> dict[str, Any] | None:
    return next((e for e in reversed(events) if e["kind"] in kinds), None)


def monitor_state(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The monitor's latest state: its last ``monitor`` event (state or status field).

    The monitor records one event per window; until a model is monitored this is None
    and the page says so.
    """
    event = _last(events, "monitor")
    if event is None:
        return None
    return {"state": event.get("state") or event.get("status") or "recorded", "event": event}


def summary(model: str, events: list[dict[str, Any]] | None) -> dict[str, Any]:
    """One row of the Models page, from the model's events alone (no MLflow call).

    Every alias move is an event (promotion or rollback with from and to versions), so
    the champion and previous versions follow from the last one; the model's own page
    reads the live aliases as well. ``events`` None: the history is still being read.
    """
    if events is None:
        return {"model": model, "loading": True, "events": None}
    move = _last(events, *MOVES)
    decision = _last(events, "decision")
    served = next(
        (e for e in reversed(events) if e["kind"] in MOVES and e.get("served_version")), None
    )
    deploy = next(
        (
            e
            for e in reversed(events)
            if e["kind"] in ("deploy", "deploy_rejected")
            or (e["kind"] in MOVES and e.get("served_version"))
        ),
        None,
    )
    return {
        "model": model,
        "champion": move.get("to_version") if move else None,
        "previous": move.get("from_version") if move else None,
        "decision": decision,
        "deploy": deploy,
        "served_version": served.get("served_version") if served else None,
        "monitor": monitor_state(events),
        "loading": False,
        "events": len(events),
    }


def _describe_monitor(event: dict[str, Any]) -> str:
    window = f"window to {event.get('window_end', '?')}: {event.get('status', '?')}"
    return f"{window}: {event['summary']}" if event.get("summary") else window


def _describe_approval(event: dict[str, Any]) -> str:
    return (
        f"{event.get('option', '?')} by {event.get('approver', '?')} for decision "
        f"{event.get('decision_id', '?')[:12]}"
    )


DESCRIBERS = {"monitor": _describe_monitor, "approval": _describe_approval}


def describe(event: dict[str, Any]) -> str:
    """One line for the timeline; unknown kinds list their fields."""
    kind = event["kind"]
    if kind == "decision":
        return (
            f"{event.get('verdict', '?').upper()} v{event.get('challenger_version')} vs "
            f"v{event.get('champion_version', 'none')}: {event.get('summary', '')}"
        )
    if kind == "promotion":
        by = f" (approved by {event['approver']})" if event.get("approver") else ""
        return f"champion v{event.get('from_version', 'none')} -> v{event.get('to_version')}{by}"
    if kind == "rollback":
        return (
            f"rolled back v{event.get('from_version')} -> v{event.get('to_version')}: "
            f"{event.get('reason', '')}"
        )
    if kind == "deploy_rejected":
        return f"deploy of v{event.get('version')} rejected: {event.get('reason', '')}"
    if kind in DESCRIBERS:
        return DESCRIBERS[kind](event)
    skip = {"event_id", "kind", "time_ms"}
    return "; ".join(f"{k}={v}" for k, v in sorted(event.items()) if k not in skip)
