"""Raw-data retention: every batch that trains a model version is kept, by its sha256.

Batches live in the artifact store (one MLflow run per batch in the model's
``mlops-pack/<model>/data`` experiment, the file under ``batch/``), so any worker can
fetch the exact bytes a version was trained on, and an auditor can list them. A batch is
stored once however many versions use it (content addressing by sha256).

Pruning follows the spec's ``retention`` policy and never removes a batch behind a live
version: one an alias points at (``champion``, ``previous``, any other) or the newest
version, whose decision may still be open (awaiting approval or deploy). A pruned batch
keeps its run (who, when, why) with the file removed, so ``reproduce`` can say the data
is gone instead of guessing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mlops_pack.errors import BadInputError
from mlops_pack.hashing import sha256_file
from mlops_pack.registry import TAG, Registry
from mlops_pack.spec import ModelSpec

FOLDER = "batch"


class DataMissingError(BadInputError):
    """A batch a version needs is not (or no longer) in the artifact store."""


@dataclass
class Batch:
    sha256: str
    run_id: str
    source: str
    rows: int
    bytes: int
    retained_at: datetime
    artifact_uri: str
    pruned_at: str | None = None
    versions: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "sha256": self.sha256,
            "source": self.source,
            "rows": self.rows,
            "bytes": self.bytes,
            "retained_at": self.retained_at.isoformat(timespec="seconds"),
            "pruned_at": self.pruned_at,
            "versions": self.versions,
        }


def _experiment(registry: Registry, model: str) -> str:
    return registry.experiment_id(f"mlops-pack/{model}/data")


def _batch(run) -> Batch:
    tags = run.data.tags
    return Batch(
        sha256=tags[f"{TAG}data_sha256"],
        run_id=run.info.run_id,
        source=tags.get(f"{TAG}source", ""),
        rows=int(tags.get(f"{TAG}rows", "0")),
        bytes=int(tags.get(f"{TAG}bytes", "0")),
        retained_at=datetime.fromtimestamp(run.info.start_time / 1000, tz=UTC),
        artifact_uri=run.info.artifact_uri,
        pruned_at=tags.get(f"{TAG}pruned_at"),
    )


def find(registry: Registry, model: str, sha256: str) -> Batch | None:
    runs = registry.client.search_runs(
        [_experiment(registry, model)],
        filter_string=f"tags.`{TAG}data_sha256` = '{sha256}'",
        order_by=["attributes.start_time ASC"],
        max_results=1,
    )
    return _batch(runs[0]) if runs else None


def retain(registry: Registry, model: str, path: Path, sha256: str, rows: int) -> dict[str, Any]:
    """Store ``path`` under its sha256 unless it is there already; what it cost."""
    started = time.perf_counter()
    existing = find(registry, model, sha256)
    if existing is not None and existing.pruned_at is None:
        return {"sha256": sha256, "stored": False, "bytes_written": 0, "seconds": 0.0}
    size = path.stat().st_size
    run = registry.client.create_run(
        _experiment(registry, model),
        run_name=f"batch-{sha256[:12]}",
        tags={
            f"{TAG}step": "data",
            f"{TAG}data_sha256": sha256,
            f"{TAG}source": path.name,
            f"{TAG}rows": str(rows),
            f"{TAG}bytes": str(size),
        },
    )
    registry.client.log_artifact(run.info.run_id, str(path), FOLDER)
    registry.client.set_terminated(run.info.run_id)
    return {
        "sha256": sha256,
        "stored": True,
        "bytes_written": size,
        "seconds": round(time.perf_counter() - started, 3),
    }


def fetch(registry: Registry, model: str, sha256: str, dst: Path) -> Path:
    """Download a retained batch and prove by its hash that it is the one recorded."""
    batch = find(registry, model, sha256)
    if batch is None:
        raise DataMissingError(
            f"model {model}: batch {sha256[:12]} was never retained (trained before "
            "retention existed?); it cannot be fetched"
        )
    if batch.pruned_at is not None:
        raise DataMissingError(
            f"model {model}: batch {sha256[:12]} ({batch.source}) was pruned at "
            f"{batch.pruned_at} under the retention policy"
        )
    folder = registry.download(f"{batch.artifact_uri}/{FOLDER}", dst)
    files = [p for p in folder.iterdir() if p.is_file()]
    if len(files) != 1 or sha256_file(files[0]) != sha256:
        raise DataMissingError(
            f"model {model}: the stored copy of batch {sha256[:12]} is missing or altered"
        )
    return files[0]


def live_versions(registry: Registry, model: str) -> dict[str, str]:
    """Versions whose data must stay: aliased ones and the newest (its decision may be open)."""
    from mlflow.exceptions import MlflowException

    live: dict[str, str] = {}
    try:
        found = registry.client.get_registered_model(model)
    except MlflowException:
        return live
    for alias, version in (found.aliases or {}).items():
        live.setdefault(str(version), f"alias {alias}")
    versions = registry.client.search_model_versions(f"name = '{model}'")
    if versions:
        newest = max(versions, key=lambda v: int(v.version))
        live.setdefault(str(newest.version), "newest version")
    return live


def inventory(registry: Registry, model: str) -> list[Batch]:
    """Every retained batch, newest first, with the versions trained on it."""
    runs = registry.client.search_runs(
        [_experiment(registry, model)],
        filter_string=f"tags.`{TAG}step` = 'data'",
        order_by=["attributes.start_time DESC"],
        max_results=10_000,
    )
    batches = [_batch(run) for run in runs]
    by_sha = {b.sha256: b for b in batches}
    from mlflow.exceptions import MlflowException

    try:
        versions = registry.client.search_model_versions(f"name = '{model}'")
    except MlflowException:
        versions = []
    for version in versions:
        used = version.tags.get(f"{TAG}window_sha256s") or version.tags.get(f"{TAG}data_sha256", "")
        for sha in used.split(","):
            if sha in by_sha:
                by_sha[sha].versions.append(str(version.version))
    for batch in batches:
        batch.versions.sort(key=int)
    return batches


def window(registry: Registry, spec: ModelSpec, newest: str) -> list[Batch]:
    """The retained batches before ``newest`` that ``training.window`` adds, newest first.

    A model that has received fewer batches than the window trains on what there is; a
    batch inside the window that was pruned is refused, since training without it would
    silently be a different model than the spec describes.
    """
    rule = spec.training.window
    earlier = [b for b in inventory(registry, spec.name) if b.sha256 != newest]
    if rule.days is not None:
        horizon = datetime.now(tz=UTC) - timedelta(days=rule.days)
        chosen = [b for b in earlier if b.retained_at >= horizon]
    else:
        chosen = earlier[: rule.batches - 1]
    pruned = [b for b in chosen if b.pruned_at is not None]
    if pruned:
        raise DataMissingError(
            f"model {spec.name}: training.window: the window takes "
            f"{', '.join(f'{b.sha256[:12]} ({b.source})' for b in pruned)}, pruned under the "
            "retention policy; shrink training.window or keep batches longer (retention)"
        )
    return chosen


def plan(
    registry: Registry, spec: ModelSpec, now: datetime | None = None
) -> list[tuple[Batch, bool, str]]:
    """(batch, keep, why) for every batch still stored, newest first."""
    policy = spec.retention
    now = now or datetime.now(tz=UTC)
    live = live_versions(registry, spec.name)
    stored = [b for b in inventory(registry, spec.name) if b.pruned_at is None]
    out = []
    for rank, batch in enumerate(stored):
        needed = [f"v{v} ({live[v]})" for v in batch.versions if v in live]
        if needed:
            out.append((batch, True, "behind live " + ", ".join(needed)))
        elif policy.batches is not None and rank < policy.batches:
            out.append((batch, True, f"among the newest {policy.batches} batches"))
        elif policy.days is not None and now - batch.retained_at < timedelta(days=policy.days):
            out.append((batch, True, f"retained within {policy.days} days"))
        elif policy.days is None and policy.batches is None:
            out.append((batch, True, "no retention limit in the spec"))
        else:
            out.append((batch, False, "outside the retention policy, no live version"))
    return out


def prune(registry: Registry, spec: ModelSpec, apply: bool) -> dict[str, Any]:
    """Remove the files of batches the policy lets go (a dry run unless ``apply``)."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    decisions = plan(registry, spec)
    doomed = [batch for batch, keep, _ in decisions if not keep]
    record = {
        "model": spec.name,
        "applied": apply,
        "policy": spec.retention.model_dump(),
        "batches": [
            {**batch.as_dict(), "keep": keep, "why": why} for batch, keep, why in decisions
        ],
        "pruned": [batch.sha256 for batch in doomed],
        "bytes_freed": sum(batch.bytes for batch in doomed),
    }
    if not apply or not doomed:
        return record
    stamp = datetime.now(tz=UTC).isoformat(timespec="seconds")
    for batch in doomed:
        get_artifact_repository(batch.artifact_uri).delete_artifacts(FOLDER)
        registry.client.set_tag(batch.run_id, f"{TAG}pruned_at", stamp)
    registry.append_event(
        spec.name,
        "data_pruned",
        {
            "batches": ",".join(b.sha256[:12] for b in doomed),
            "bytes_freed": record["bytes_freed"],
        },
    )
    return record
