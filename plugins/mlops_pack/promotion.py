"""Promotion and rollback: compare-and-set of the ``champion`` alias under the model's lock.

MLflow's alias update is last-writer-wins, so compare-and-set is built here: the alias is
re-read and moved only while holding the model's lock (``promotion_lock``), and every
move is recorded in the model's history.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_pack.errors import BadInputError, ChampionMovedError
from mlops_pack.promotion_lock import ModelLock
from mlops_pack.registry_history import History
from mlops_pack.registry_versions import CHAMPION, PREVIOUS, TAG, ModelVersions, Version

LOCK_TIMEOUT = 120.0


def _test_hook(point: str) -> None:
    """A test hook inside promotion, off unless ``MLOPS_PACK_TEST_HOOK_DIR`` is set.

    Never set in production. The promotion race tests set it so that two promotions
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
class PromotionResult:
    outcome: str  # "promoted" | "noop"
    model: str
    champion: str
    previous: str | None
    decision_id: str
    served: dict[str, Any] | None = None


class Promotions:
    def __init__(self, versions: ModelVersions, history: History, lock: ModelLock) -> None:
        self.versions = versions
        self.history = history
        self.lock = lock

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
        versions = self.versions
        _test_hook("lock_wait")
        with self.lock.hold(model, LOCK_TIMEOUT):
            current = versions.alias(model, CHAMPION)
            current_version = current.version if current else None
            _test_hook("inside")
            if current_version == str(challenger):
                served = serve() if serve else None  # a retry after a crash: serve it too
                done = [
                    e
                    for e in self.history.events(model, "promotion")
                    if e.get("decision_id") == decision_id
                ]
                if not done:  # alias moved but history was not written (crash): repair
                    self._record(model, challenger, expected_champion, decision_id, extra)
                previous = versions.alias(model, PREVIOUS)
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
            self._move(model, current_version, str(challenger), served, unserve)
            if served is not None:
                extra = {**(extra or {}), "served_version": served["served"]["version"]}
            self._record(model, challenger, current_version, decision_id, extra)
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
        versions = self.versions
        with self.lock.hold(model, LOCK_TIMEOUT):
            current = versions.alias(model, CHAMPION)
            target = str(to_version) if to_version else None
            if target is None:
                previous = versions.alias(model, PREVIOUS)
                if previous is None:
                    raise BadInputError(f"model {model}: no 'previous' version to roll back to")
                target = previous.version
            target_version = versions.version(model, target)
            served = serve(target_version) if serve else None
            if current is not None and current.version == target:
                return {
                    "model": model,
                    "outcome": "noop",
                    "champion": target,
                    "reason": reason,
                    "served": served,
                }
            self._move(model, current.version if current else None, target, served, unserve)
            self.history.append(
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

    def _move(
        self,
        model: str,
        current: str | None,
        target: str,
        served: dict[str, Any] | None,
        unserve: Callable[[dict[str, Any]], None] | None,
    ) -> None:
        """``previous`` to the current champion, ``champion`` to ``target``; on failure the
        served model is put back."""
        try:
            if current:
                self.versions.set_alias(model, PREVIOUS, current)
            self.versions.set_alias(model, CHAMPION, target)
        except Exception:
            if unserve and served is not None:
                unserve(served)
            raise

    def _record(
        self,
        model: str,
        to: str,
        previous: str | None,
        decision_id: str,
        extra: dict[str, Any] | None,
    ) -> None:
        self.versions.client.set_model_version_tag(
            model, str(to), f"{TAG}promoted_by_decision", decision_id
        )
        self.history.append(
            model,
            "promotion",
            {
                "from_version": previous,
                "to_version": str(to),
                "decision_id": decision_id,
                **(extra or {}),
            },
        )
