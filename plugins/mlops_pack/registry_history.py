"""A model's append-only history: each event is an MLflow run, never edited afterwards."""

from __future__ import annotations

import time
from typing import Any

from mlops_pack.registry_versions import TAG, ModelVersions


def experiment_name(model: str) -> str:
    return f"mlops-pack/{model}/history"


class History:
    def __init__(self, versions: ModelVersions) -> None:
        self.versions = versions

    def append(self, model: str, kind: str, fields: dict[str, Any]) -> str:
        """Append one event to the model's history; returns the event's id."""
        client = self.versions.client
        experiment = self.versions.experiment_id(experiment_name(model))
        tags = {
            f"{TAG}event": kind,
            **{f"{TAG}{k}": str(v) for k, v in fields.items() if v is not None},
        }
        run = client.create_run(experiment, run_name=f"{kind}-{time.time_ns()}", tags=tags)
        self.versions.log_json(run.info.run_id, {"kind": kind, **fields}, "", "event.json")
        client.set_terminated(run.info.run_id)
        return run.info.run_id

    def events(self, model: str, kind: str | None = None) -> list[dict[str, str]]:
        """Events oldest first, as flat dicts of their fields."""
        client = self.versions.client
        found = client.get_experiment_by_name(experiment_name(model))
        if found is None:
            return []
        query = f"tags.`{TAG}event` = '{kind}'" if kind else ""
        runs = client.search_runs(
            [found.experiment_id],
            filter_string=query,
            order_by=["attributes.start_time ASC"],
            max_results=10_000,
        )
        events = []
        for run in runs:
            tags = {k.removeprefix(TAG): v for k, v in run.data.tags.items() if k.startswith(TAG)}
            events.append({"event_id": run.info.run_id, "kind": tags.pop("event", ""), **tags})
        return events
