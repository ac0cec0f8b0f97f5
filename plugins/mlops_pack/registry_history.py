"""A model's append-only history: each event is an MLflow run, never edited afterwards."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mlops_pack.registry_versions import TAG, ModelVersions


def experiment_name(model: str) -> str:
    return f"mlops-pack/{model}/history"


class History:
    def __init__(self, versions: ModelVersions) -> None:
        self.versions = versions

    def append(
        self,
        model: str,
        kind: str,
        fields: dict[str, Any],
        files: dict[str, Path] | None = None,
    ) -> str:
        """Append one event to the model's history; returns the event's id.

        ``files``: field name -> a local file stored on the event's run; the field (the
        file's name on the run) is set only once the file is stored, so a reader never
        follows it to a missing artifact.
        """
        client = self.versions.client
        experiment = self.versions.experiment_id(experiment_name(model))
        tags = {
            f"{TAG}event": kind,
            **{f"{TAG}{k}": str(v) for k, v in fields.items() if v is not None},
        }
        run = client.create_run(experiment, run_name=f"{kind}-{time.time_ns()}", tags=tags)
        run_id = run.info.run_id
        stored = {name: path.name for name, path in (files or {}).items()}
        self.versions.log_json(run_id, {"kind": kind, **fields, **stored}, "", "event.json")
        for name, path in (files or {}).items():
            client.log_artifact(run_id, str(path))
            client.set_tag(run_id, f"{TAG}{name}", path.name)
        client.set_terminated(run_id)
        return run_id

    def events(
        self, model: str, kind: str | None = None, newest: int | None = None
    ) -> list[dict[str, str]]:
        """Events oldest first, as flat dicts of their fields (only the ``newest`` ones
        when given)."""
        client = self.versions.client
        found = client.get_experiment_by_name(experiment_name(model))
        if found is None:
            return []
        query = f"tags.`{TAG}event` = '{kind}'" if kind else ""
        runs = client.search_runs(
            [found.experiment_id],
            filter_string=query,
            order_by=[f"attributes.start_time {'DESC' if newest else 'ASC'}"],
            max_results=newest or 10_000,
        )
        if newest:
            runs = list(reversed(runs))
        events = []
        for run in runs:
            tags = {k.removeprefix(TAG): v for k, v in run.data.tags.items() if k.startswith(TAG)}
            events.append({"event_id": run.info.run_id, "kind": tags.pop("event", ""), **tags})
        return events
