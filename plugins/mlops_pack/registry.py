"""The registry: MLflow tracking and model registry, plus the promotion lock and history.

MLflow's alias update is last-writer-wins, so compare-and-set is built here: read the
alias and move it only while holding a per-model lock. The alias history is append-only:
each event is an MLflow run in the model's history experiment, never edited afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_pack.errors import (
    BadInputError,
    ChampionMovedError,
    MlopsPackError,
    ServiceUnavailableError,
)
from mlops_pack.settings import Settings

CHAMPION = "champion"
PREVIOUS = "previous"
TAG = "mlops."


def _is_missing(exc: Exception, *also: int) -> bool:
    """True when MLflow says the thing does not exist (its error code, matched exactly).

    Anything else (no answer, a 5xx, a database error) is an outage, never "missing".
    """
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

    codes = {ErrorCode.Name(code) for code in (RESOURCE_DOES_NOT_EXIST, *also)}
    return getattr(exc, "error_code", None) in codes


def _outage(what: str, exc: Exception) -> ServiceUnavailableError:
    code = getattr(exc, "error_code", type(exc).__name__)
    first = str(exc).splitlines()[0][:300] if str(exc) else ""
    return ServiceUnavailableError(
        f"MLflow failed to {what} ({code}: {first}); the registry is unreachable or "
        "failing, a retry may succeed",
        {"mlflow_error_code": code},
    )


def _test_hook(point: str) -> None:
    """A test hook inside promotion, off unless ``MLOPS_PACK_TEST_HOOK_DIR`` is set.

    Never set in production. The promotion race test sets it so that two promotions
    overlap for certain: each process marks reaching ``point`` with a file
    ``<dir>/<point>.<pid>``, and at ``inside`` (in the critical section, after reading
    the alias) waits until ``<dir>/release`` exists (at most two minutes).
    """
    folder = os.environ.get("MLOPS_PACK_TEST_HOOK_DIR")
    if not folder:
        return
    Path(folder, f"{point}.{os.getpid()}").touch()
    if point == "inside":
        deadline = time.monotonic() + 120
        while not Path(folder, "release").exists() and time.monotonic() < deadline:
            time.sleep(0.05)


@dataclass(frozen=True)
class Version:
    name: str
    version: str
    run_id: str | None
    source: str
    tags: dict[str, str]


@dataclass(frozen=True)
class PromotionResult:
    outcome: str  # "promoted" | "noop"
    model: str
    champion: str
    previous: str | None
    decision_id: str
    served: dict[str, Any] | None = None


class Registry:
    """A thin, explicit layer over MlflowClient; mlflow is imported only when used."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self._client = None

    # Plumbing -----------------------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            # Progress bars are noise in task logs and result files.
            os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
            from mlflow.tracking import MlflowClient

            self.settings.check_store_writable()
            self._client = MlflowClient(self.settings.tracking_uri, self.settings.registry_uri)
        return self._client

    def experiment_id(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name, artifact_location=self._artifacts_for(name))
        except Exception:  # created concurrently by another process
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def _artifacts_for(self, experiment: str) -> str | None:
        if self.settings.artifact_root.startswith(
            "file:"
        ) and self.settings.tracking_uri.startswith("sqlite"):
            return f"{self.settings.artifact_root}/{experiment.replace('/', '_')}"
        return None

    @contextlib.contextmanager
    def lock(self, model: str, timeout: float = 120.0) -> Iterator[None]:
        from filelock import FileLock, Timeout

        self.settings.lock_dir.mkdir(parents=True, exist_ok=True)
        try:
            with FileLock(str(self.settings.lock_dir / f"{model}.lock"), timeout=timeout):
                yield
        except Timeout:
            raise MlopsPackError(f"model {model}: promotion lock busy for {timeout:.0f}s") from None

    def ensure_model(self, name: str) -> None:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

        try:
            self.client.get_registered_model(name)
            return
        except MlflowException as exc:
            if not _is_missing(exc):
                raise _outage(f"read registered model {name}", exc) from None
        try:
            self.client.create_registered_model(name, tags={f"{TAG}managed": "true"})
        except MlflowException as exc:
            if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise _outage(f"create registered model {name}", exc) from None
            # else: another process created it first, which is fine

    # Versions and aliases -----------------------------------------------------------
    def version(self, name: str, version: str) -> Version:
        """A registered version; ``BadInputError`` only when MLflow says it does not exist."""
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version(name, str(version))
        except MlflowException as exc:
            if _is_missing(exc):
                raise BadInputError(
                    f"model {name}: version {version} does not exist in the registry"
                ) from None
            raise _outage(f"read model {name} version {version}", exc) from None
        return Version(mv.name, str(mv.version), mv.run_id, mv.source, dict(mv.tags))

    def alias(self, name: str, alias: str) -> Version | None:
        """The version ``alias`` points at; None when the model or the alias does not exist."""
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        try:
            mv = self.client.get_model_version_by_alias(name, alias)
        except MlflowException as exc:
            # MLflow reports an alias that is not set as INVALID_PARAMETER_VALUE.
            if _is_missing(exc, INVALID_PARAMETER_VALUE):
                return None
            raise _outage(f"read alias {alias} of model {name}", exc) from None
        return Version(mv.name, str(mv.version), mv.run_id, mv.source, dict(mv.tags))

    def model_tags(self, name: str) -> dict[str, str]:
        from mlflow.exceptions import MlflowException

        try:
            return dict(self.client.get_registered_model(name).tags)
        except MlflowException as exc:
            if _is_missing(exc):
                return {}
            raise _outage(f"read registered model {name}", exc) from None

    def set_model_tag(self, name: str, key: str, value: str) -> None:
        self.client.set_registered_model_tag(name, key, value)

    def download(self, uri: str, dst: Path) -> Path:
        import mlflow.artifacts

        return Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=str(dst), tracking_uri=self.settings.tracking_uri
            )
        )

    def log_json(
        self, run_id: str, record: dict[str, Any], artifact_path: str, filename: str
    ) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / filename
            path.write_text(json.dumps(record, indent=2, sort_keys=True), encoding="utf-8")
            self.client.log_artifact(run_id, str(path), artifact_path)

    # History ------------------------------------------------------------------------
    def append_event(self, model: str, kind: str, fields: dict[str, Any]) -> str:
        """Append one event to the model's history; returns the event's id."""
        experiment = self.experiment_id(f"mlops-pack/{model}/history")
        tags = {
            f"{TAG}event": kind,
            **{f"{TAG}{k}": str(v) for k, v in fields.items() if v is not None},
        }
        run = self.client.create_run(experiment, run_name=f"{kind}-{time.time_ns()}", tags=tags)
        self.log_json(run.info.run_id, {"kind": kind, **fields}, "", "event.json")
        self.client.set_terminated(run.info.run_id)
        return run.info.run_id

    def history(self, model: str, kind: str | None = None) -> list[dict[str, str]]:
        """Events oldest first, as flat dicts of their fields."""
        found = self.client.get_experiment_by_name(f"mlops-pack/{model}/history")
        if found is None:
            return []
        query = f"tags.`{TAG}event` = '{kind}'" if kind else ""
        runs = self.client.search_runs(
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

    # Promotion ----------------------------------------------------------------------
    def promote(
        self,
        model: str,
        challenger: str,
        expected_champion: str | None,
        decision_id: str,
        extra: dict[str, Any] | None = None,
        serve: Callable[[], dict[str, Any]] | None = None,
        unserve: Callable[[dict[str, Any]], None] | None = None,
    ) -> PromotionResult:
        """Compare-and-set ``champion`` from ``expected_champion`` to ``challenger``.

        Safe to retry: if the alias already points at the challenger because of this
        decision, the call completes any missing history entry and reports ``noop``.

        With a model server, ``serve`` switches the served model to the challenger inside
        the lock, after the compare-and-set check and before the alias moves; if the alias
        cannot move, ``unserve`` puts the served model back. So the alias never names a
        model the server does not serve, and no other promotion can interleave.
        """
        _test_hook("lock_wait")
        with self.lock(model):
            current = self.alias(model, CHAMPION)
            current_version = current.version if current else None
            _test_hook("inside")
            if current_version == str(challenger):
                served = serve() if serve else None  # a retry after a crash: serve it too
                done = [
                    e
                    for e in self.history(model, "promotion")
                    if e.get("decision_id") == decision_id
                ]
                if not done:  # alias moved but history was not written (crash): repair
                    self._record_promotion(model, challenger, expected_champion, decision_id, extra)
                previous = self.alias(model, PREVIOUS)
                return PromotionResult(
                    "noop",
                    model,
                    str(challenger),
                    previous.version if previous else None,
                    decision_id,
                    served,
                )
            if current_version != (str(expected_champion) if expected_champion else None):
                raise ChampionMovedError(
                    f"model {model}: champion moved to v{current_version} since the gate "
                    f"evaluated v{expected_champion}; re-run the evaluation against the new "
                    "champion",
                    {"expected": expected_champion, "actual": current_version},
                )
            served = serve() if serve else None
            try:
                if current_version:
                    self.client.set_registered_model_alias(model, PREVIOUS, current_version)
                self.client.set_registered_model_alias(model, CHAMPION, str(challenger))
            except Exception:
                if unserve and served is not None:
                    unserve(served)
                raise
            if served is not None:
                extra = {**(extra or {}), "served_version": served["served"]["version"]}
            self._record_promotion(model, challenger, current_version, decision_id, extra)
            return PromotionResult(
                "promoted", model, str(challenger), current_version, decision_id, served
            )

    def rollback(
        self,
        model: str,
        to_version: str | None,
        reason: str,
        dag_run_id: str | None,
        serve: Callable[[Version], dict[str, Any]] | None = None,
        unserve: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Move ``champion`` back to ``previous`` (or ``to_version``); recorded with a reason.

        With a model server, ``serve`` switches the served model first (inside the lock)
        and ``unserve`` restores it if the alias cannot move, as in ``promote``.
        """
        with self.lock(model):
            current = self.alias(model, CHAMPION)
            target = str(to_version) if to_version else None
            if target is None:
                previous = self.alias(model, PREVIOUS)
                if previous is None:
                    raise BadInputError(f"model {model}: no 'previous' version to roll back to")
                target = previous.version
            target_version = self.version(model, target)
            served = serve(target_version) if serve else None
            if current is not None and current.version == target:
                return {
                    "model": model,
                    "outcome": "noop",
                    "champion": target,
                    "reason": reason,
                    "served": served,
                }
            try:
                if current is not None:
                    self.client.set_registered_model_alias(model, PREVIOUS, current.version)
                self.client.set_registered_model_alias(model, CHAMPION, target)
            except Exception:
                if unserve and served is not None:
                    unserve(served)
                raise
            self.append_event(
                model,
                "rollback",
                {
                    "from_version": current.version if current else None,
                    "to_version": target,
                    "reason": reason,
                    "dag_run_id": dag_run_id,
                    "served_version": served["served"]["version"] if served else None,
                },
            )
            return {
                "model": model,
                "outcome": "rolled_back",
                "champion": target,
                "previous": current.version if current else None,
                "reason": reason,
                "served": served,
            }

    def _record_promotion(
        self,
        model: str,
        to: str,
        previous: str | None,
        decision_id: str,
        extra: dict[str, Any] | None,
    ) -> None:
        self.client.set_model_version_tag(model, str(to), f"{TAG}promoted_by_decision", decision_id)
        self.append_event(
            model,
            "promotion",
            {
                "from_version": previous,
                "to_version": str(to),
                "decision_id": decision_id,
                **(extra or {}),
            },
        )
