"""Model versions, aliases and tags in MLflow's registry; mlflow is imported only when used."""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_pack.errors import BadInputError, ServiceUnavailableError
from mlops_pack.settings import Settings

CHAMPION = "champion"
PREVIOUS = "previous"
TAG = "mlops."


def is_missing(exc: Exception, *also: int) -> bool:
    """True when MLflow says the thing does not exist (its error code, matched exactly).

    Anything else (no answer, a 5xx, a database error) is an outage, never "missing".
    """
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

    codes = {ErrorCode.Name(code) for code in (RESOURCE_DOES_NOT_EXIST, *also)}
    return getattr(exc, "error_code", None) in codes


# What MLflow's authentication answers: no retry changes the user or its grants.
REFUSED = ("UNAUTHENTICATED", "PERMISSION_DENIED")


def refusal(exc: Exception) -> BadInputError | None:
    """The error for any MLflow call that its authentication refused, else None: the
    steps' last word on an MLflow error that no registry method translated."""
    if getattr(exc, "error_code", None) in REFUSED:
        return failure("answer this user", exc)  # type: ignore[return-value]
    return None


def failure(what: str, exc: Exception) -> BadInputError | ServiceUnavailableError:
    """The error for an MLflow call that failed other than by a missing thing: a refusal
    by MLflow's authentication (not retried), else an outage (a retry may succeed)."""
    code = getattr(exc, "error_code", type(exc).__name__)
    first = str(exc).splitlines()[0][:300] if str(exc) else ""
    if code in REFUSED:
        return BadInputError(
            f"MLflow refused to {what} ({code}: {first}). Fix: sign in as a user that "
            "may (MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD; in the compose "
            "stack the workers' user is mlops-pack, with MLFLOW_PACK_PASSWORD), or grant "
            "this one the model in MLflow",
            {"mlflow_error_code": code, "rule": "mlflow_access"},
        )
    return ServiceUnavailableError(
        f"MLflow failed to {what} ({code}: {first}); the registry is unreachable or "
        "failing, a retry may succeed",
        {"mlflow_error_code": code},
    )


@dataclass(frozen=True)
class Version:
    name: str
    version: str
    run_id: str | None
    source: str
    tags: dict[str, str]


def _version(mv) -> Version:
    return Version(mv.name, str(mv.version), mv.run_id, mv.source, dict(mv.tags))


class ModelVersions:
    """A thin, explicit layer over MlflowClient for versions, aliases, tags and artifacts."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client = None
        # Experiment ids by name, once found: a step looks its model's experiment up for
        # each run it logs, each a request to a tracking server.
        self._experiments: dict[str, str] = {}

    @property
    def client(self):
        if self._client is None:
            # Progress bars are noise in task logs and result files.
            os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
            from mlflow.tracking import MlflowClient

            if not self.settings.remote_tracking:  # a server owns its own store
                self.settings.check_store_writable()
            self._client = MlflowClient(self.settings.tracking_uri, self.settings.registry_uri)
        return self._client

    def experiment_id(self, name: str) -> str:
        if name not in self._experiments:
            self._experiments[name] = self._find_or_create_experiment(name)
        return self._experiments[name]

    def _find_or_create_experiment(self, name: str) -> str:
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

    def ensure_model(self, name: str) -> None:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

        try:
            self.client.get_registered_model(name)
            return
        except MlflowException as exc:
            if not self._missing(name, exc):
                raise failure(f"read registered model {name}", exc) from None
        try:
            self.client.create_registered_model(name, tags={f"{TAG}managed": "true"})
        except MlflowException as exc:
            if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise failure(f"create registered model {name}", exc) from None
            # else: another process created it first, which is fine

    def version(self, name: str, version: str) -> Version:
        """A registered version; ``BadInputError`` only when MLflow says it does not exist."""
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version(name, str(version))
        except MlflowException as exc:
            if self._missing(name, exc):
                raise BadInputError(
                    f"model {name}: version {version} does not exist in the registry"
                ) from None
            raise failure(f"read model {name} version {version}", exc) from None
        return _version(mv)

    def alias(self, name: str, alias: str) -> Version | None:
        """The version ``alias`` points at; None when the model or the alias does not exist."""
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        try:
            mv = self.client.get_model_version_by_alias(name, alias)
        except MlflowException as exc:
            # MLflow reports an alias that is not set as INVALID_PARAMETER_VALUE.
            if self._missing(name, exc, INVALID_PARAMETER_VALUE):
                return None
            raise failure(f"read alias {alias} of model {name}", exc) from None
        return _version(mv)

    def _missing(self, name: str, exc: Exception, *also: int) -> bool:
        """MLflow says the model (or what was asked of it) does not exist.

        Behind MLflow's authentication, a read of a model that does not exist is refused
        (403, so that answers never tell which names exist) rather than reported missing.
        A refusal is then checked by looking the model up by name, which lists every model
        the user may read: not listed means not there.
        """
        if is_missing(exc, *also):
            return True
        if getattr(exc, "error_code", None) != "PERMISSION_DENIED":
            return False
        quoted = name.replace("\\", "\\\\").replace("'", "\\'")
        try:
            listed = self.client.search_registered_models(f"name = '{quoted}'", max_results=1)
        except Exception:  # the refusal is what the caller reports
            return False
        return not listed

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(name, alias, str(version))

    def model_tags(self, name: str) -> dict[str, str]:
        from mlflow.exceptions import MlflowException

        try:
            return dict(self.client.get_registered_model(name).tags)
        except MlflowException as exc:
            if self._missing(name, exc):
                return {}
            raise failure(f"read registered model {name}", exc) from None

    def set_model_tag(self, name: str, key: str, value: str) -> None:
        self.client.set_registered_model_tag(name, key, value)

    def download(self, uri: str, dst: Path) -> Path:
        import mlflow.artifacts

        return Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=str(dst), tracking_uri=self.settings.tracking_uri
            )
        )

    def log_batch(
        self,
        run_id: str,
        params: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
        metrics: dict[str, float] | None = None,
    ) -> None:
        """Params, tags and metrics of a run in one request (MLflow's log-batch)."""
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()],
            params=[Param(k, str(v)) for k, v in (params or {}).items()],
            tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
        )

    def log_json(
        self, run_id: str, record: dict[str, Any], artifact_path: str, filename: str
    ) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / filename
            path.write_text(json.dumps(record, indent=2, sort_keys=True), encoding="utf-8")
            self.client.log_artifact(run_id, str(path), artifact_path)
