"""A saved copy of the Models page's history index, so a restarted api-server is warm.

Reading 100,000 events from MLflow takes minutes (MLflow builds a full run entity per
event), so the index is saved to a local file after it fills and as it changes; a new
process loads it, checks it against the store, and then fetches from MLflow only the
events started since its high-water mark (minus the index's overlap), exactly as the
warm index's own checks do. The file is a cache: anything wrong with it (missing,
truncated, edited, another format version, another store) means it is ignored and the
index is read from MLflow as if it did not exist.

Format: two lines of JSON. The first is the header (format, store, high-water mark,
models, the body's sha256), small enough to read on its own; the second is the body
(each model's history experiment, its creation time and its events). It holds only
plain JSON, never anything that runs code when read.

Several api-server workers on one host share the file: each writes a temporary file and
renames it into place (a reader sees the old file or the new one, never half of one),
under an exclusive ``flock`` during which a writer that holds nothing newer than the
file leaves it alone.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mlops_pack.records import write_text_atomic

FORMAT = "mlops-pack.history-index/1"
log = logging.getLogger(__name__)


@dataclass
class SavedModel:
    experiment_id: str | None
    created_ms: int | None  # the history experiment's creation time: a recreated store differs
    events: list[dict[str, Any]]


@dataclass
class Snapshot:
    since_ms: int
    models: dict[str, SavedModel]


def store_identity(tracking_uri: str) -> str:
    """Which store a snapshot describes: the tracking URI's hash, without credentials."""
    parts = urlsplit(tracking_uri)
    if parts.netloc and "@" in parts.netloc:
        parts = parts._replace(netloc=parts.netloc.rsplit("@", 1)[1])
    return hashlib.sha256(urlunsplit(parts).encode()).hexdigest()


class SnapshotFile:
    def __init__(self, path: Path, store: str) -> None:
        self.path = path
        self.store = store
        self._replace = False  # the file was found untrustworthy: the next save replaces it

    def load(self) -> Snapshot | None:
        """The saved index, or None (logged with the reason) when it cannot be trusted."""
        try:
            return self._read()
        except FileNotFoundError:
            return None
        except _Untrusted as exc:
            reason = str(exc)
        except OSError as exc:
            reason = f"unreadable ({exc})"
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            reason = f"malformed ({type(exc).__name__}: {exc})"
        self._replace = True
        log.warning(
            "history index snapshot %s ignored: %s; reading the history from MLflow instead",
            self.path,
            reason,
        )
        return None

    def _read(self) -> Snapshot:
        with self.path.open("rb") as handle:
            header = json.loads(handle.readline())
            body = handle.read()
        problem = self._header_problem(header)
        if problem:
            raise _Untrusted(problem)
        if hashlib.sha256(body).hexdigest() != header["sha256"]:
            raise _Untrusted("its body does not match the sha256 in its header")
        models = {name: _saved_model(entry) for name, entry in json.loads(body)["models"].items()}
        if sorted(models) != header["models"]:
            raise _Untrusted("its header and body name different models")
        return Snapshot(since_ms=header["since_ms"], models=models)

    def save(self, snapshot: Snapshot) -> bool:
        """Write ``snapshot`` unless the file already holds one at least as new and as
        complete; returns whether it wrote."""
        body = json.dumps(
            {
                "models": {
                    name: {
                        "experiment_id": m.experiment_id,
                        "created_ms": m.created_ms,
                        "events": m.events,
                    }
                    for name, m in snapshot.models.items()
                }
            },
            separators=(",", ":"),
        )
        header = {
            "format": FORMAT,
            "store": self.store,
            "since_ms": snapshot.since_ms,
            "models": sorted(snapshot.models),
            "sha256": hashlib.sha256(body.encode()).hexdigest(),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            held = self._header()
            if (
                not self._replace
                and held is not None
                and not self._header_problem(held)
                and held["since_ms"] >= snapshot.since_ms
                and set(held["models"]) >= set(snapshot.models)
            ):
                return False
            write_text_atomic(self.path, json.dumps(header) + "\n" + body)
            self._replace = False
        return True

    def _header(self) -> dict[str, Any] | None:
        try:
            with self.path.open("rb") as handle:
                return json.loads(handle.readline())
        except (OSError, ValueError):
            return None

    def _header_problem(self, header: Any) -> str | None:
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            found = header.get("format") if isinstance(header, dict) else None
            return f"format {found!r}, this version reads {FORMAT!r}"
        if header.get("store") != self.store:
            return "it describes another MLflow store"
        if not isinstance(header.get("since_ms"), int) or not isinstance(header.get("sha256"), str):
            return "its header lacks since_ms or sha256"
        if not isinstance(header.get("models"), list):
            return "its header lacks the model list"
        return None


class _Untrusted(Exception):
    pass


def _saved_model(entry: dict[str, Any]) -> SavedModel:
    experiment_id, created_ms = entry["experiment_id"], entry["created_ms"]
    if not (experiment_id is None or isinstance(experiment_id, str)):
        raise TypeError("experiment_id must be a string or null")
    if not (created_ms is None or isinstance(created_ms, int)):
        raise TypeError("created_ms must be an integer or null")
    events = entry["events"]
    if not isinstance(events, list):
        raise TypeError("events must be a list")
    for event in events:
        # What the index itself holds: string fields, an id, a kind and a start time.
        if not (
            isinstance(event.get("event_id"), str)
            and isinstance(event.get("kind"), str)
            and isinstance(event.get("time_ms"), int)
            and all(isinstance(v, str) for k, v in event.items() if k != "time_ms")
        ):
            raise TypeError(f"event {str(event)[:80]} is not an event of the index")
    return SavedModel(experiment_id, created_ms, events)


def default_path() -> Path | None:
    """``MLOPS_PACK_UI_SNAPSHOT`` (a file path, or ``off``); by default a file in the
    pack's folder under ``AIRFLOW_HOME`` (the api-server's own state, not the store)."""
    configured = os.environ.get("MLOPS_PACK_UI_SNAPSHOT", "").strip()
    if configured.lower() == "off":
        return None
    if configured:
        return Path(configured)
    airflow_home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
    return Path(airflow_home) / "mlops-pack" / "history-index.json"
