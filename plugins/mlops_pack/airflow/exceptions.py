"""Failures Airflow must not retry: bad data, bad specs, refused artifacts, a moved champion."""

from __future__ import annotations

from typing import Any

from airflow.sdk.exceptions import AirflowFailException


class MlopsBadInputFailure(AirflowFailException):
    """The step refused its input; the message names the rule. Retrying cannot help."""

    def __init__(self, message: str, payload: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.payload = payload or {}


class ChampionMovedFailure(AirflowFailException):
    """Another run promoted first; re-run the evaluation against the new champion."""

    def __init__(self, message: str, payload: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.payload = payload or {}


class DeployFailure(AirflowFailException):
    """A deploy check failed and the candidate was rolled back; retrying repeats the check."""

    def __init__(self, message: str, payload: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.payload = payload or {}


# Each failing step status (``mlops_pack.errors.EXIT_CODES``) onto the exception Airflow
# sees; any status not named here (``error``, or no result at all) is retried.
FAILURES: dict[str, type[AirflowFailException]] = {
    "bad_input": MlopsBadInputFailure,
    "champion_moved": ChampionMovedFailure,
    "deploy_failed": DeployFailure,
}
