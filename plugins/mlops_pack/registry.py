"""The registry facade: one object for versions and aliases, history, the lock, promotion.

The parts live in their own modules (``registry_versions``, ``registry_history``,
``promotion_lock``, ``promotion``); this class keeps the one entry point the steps, the
CLI and Airflow use, and picks the lock from the settings (a file lock for the embedded
default, a Postgres advisory lock when ``MLOPS_PACK_LOCK_DSN`` is set).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlops_pack.promotion import LOCK_TIMEOUT, PromotionResult, Promotions
from mlops_pack.promotion_lock import ConfiguredLock, ModelLock
from mlops_pack.registry_history import History
from mlops_pack.registry_versions import CHAMPION, PREVIOUS, TAG, ModelVersions, Version
from mlops_pack.settings import Settings

__all__ = ["CHAMPION", "PREVIOUS", "TAG", "PromotionResult", "Registry", "Version"]


class Registry:
    def __init__(self, settings: Settings | None = None, lock: ModelLock | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.versions = ModelVersions(self.settings)
        self.events = History(self.versions)
        self.model_lock = lock or ConfiguredLock(self.settings)
        self.promotions = Promotions(self.versions, self.events, self.model_lock)

    @property
    def client(self):
        return self.versions.client

    @contextlib.contextmanager
    def lock(self, model: str, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
        with self.model_lock.hold(model, timeout):
            yield

    # Versions and aliases -----------------------------------------------------------
    def experiment_id(self, name: str) -> str:
        return self.versions.experiment_id(name)

    def ensure_model(self, name: str) -> None:
        self.versions.ensure_model(name)

    def version(self, name: str, version: str) -> Version:
        return self.versions.version(name, version)

    def alias(self, name: str, alias: str) -> Version | None:
        return self.versions.alias(name, alias)

    def model_tags(self, name: str) -> dict[str, str]:
        return self.versions.model_tags(name)

    def set_model_tag(self, name: str, key: str, value: str) -> None:
        self.versions.set_model_tag(name, key, value)

    def download(self, uri: str, dst: Path) -> Path:
        return self.versions.download(uri, dst)

    def log_batch(self, run_id: str, **fields: dict[str, Any]) -> None:
        """Params, tags and metrics (keyword dicts) of a run in one request."""
        self.versions.log_batch(run_id, **fields)

    def log_json(
        self, run_id: str, record: dict[str, Any], artifact_path: str, filename: str
    ) -> None:
        self.versions.log_json(run_id, record, artifact_path, filename)

    # History ------------------------------------------------------------------------
    def append_event(
        self,
        model: str,
        kind: str,
        fields: dict[str, Any],
        files: dict[str, Path] | None = None,
    ) -> str:
        return self.events.append(model, kind, fields, files)

    def history(
        self, model: str, kind: str | None = None, newest: int | None = None
    ) -> list[dict[str, str]]:
        return self.events.events(model, kind, newest)

    # Promotion ----------------------------------------------------------------------
    def promote(self, *args: Any, **kwargs: Any) -> PromotionResult:
        """Compare-and-set of ``champion``: ``Promotions.promote``."""
        return self.promotions.promote(*args, **kwargs)

    def rollback(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """``champion`` back to ``previous`` or a named version: ``Promotions.rollback``."""
        return self.promotions.rollback(*args, **kwargs)
