"""Exception hierarchy shared by the step world, the CLI and the Airflow world.

The split matters operationally: ``BadInputError`` (bad data, bad spec, refused artifact)
must never be retried, while anything else is treated as an infrastructure error that a
retry may fix. Each exception carries its payload so callers can publish it before raising.
"""

from __future__ import annotations

from typing import Any

# The one table of step outcomes: status string (in result.json) -> exit code. Distinct
# codes let a container's exit status say what happened without parsing output; the CLI
# writes the status from this table and the Airflow world maps each status onto one
# exception class (``mlops_pack.airflow.exceptions.FAILURES``).
EXIT_CODES: dict[str, int] = {
    "ok": 0,
    "error": 1,  # infrastructure or internal: a retry may succeed
    "bad_input": 2,  # no retry can fix it
    "rejected": 3,  # the gate rejected the challenger: a normal outcome
    "champion_moved": 4,
    "deploy_failed": 5,
    "not_reproduced": 6,  # a version retrained from its records is not the same
}
EXIT_OK = EXIT_CODES["ok"]
EXIT_INTERNAL = EXIT_CODES["error"]
EXIT_BAD_INPUT = EXIT_CODES["bad_input"]
EXIT_REJECTED = EXIT_CODES["rejected"]
EXIT_CHAMPION_MOVED = EXIT_CODES["champion_moved"]
EXIT_DEPLOY_FAILED = EXIT_CODES["deploy_failed"]
EXIT_NOT_REPRODUCED = EXIT_CODES["not_reproduced"]


def status_of(exit_code: int) -> str:
    """The status string of an exit code; an unknown code (a crash, a kill) is ``error``."""
    return next((s for s, c in EXIT_CODES.items() if c == exit_code), "error")


class MlopsPackError(Exception):
    """Base class; ``payload`` is a JSON-able dict describing the failure."""

    status = "error"

    def __init__(self, message: str, payload: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.payload = payload or {}

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]


class BadInputError(MlopsPackError):
    """Input that no retry can fix: a bad spec, a bad dataset, a refused artifact."""

    status = "bad_input"


class SpecError(BadInputError):
    """A model spec or a run override that does not satisfy the schema."""


class DataValidationError(BadInputError):
    """A dataset that failed an ``error``-severity check; payload is the full report."""


class HoldoutMismatchError(BadInputError):
    """Metrics computed on different holdouts were about to be compared."""


class UntrustedArtifactError(BadInputError):
    """A model artifact whose hash does not match, or that is not a safe skops archive."""


class ChampionMovedError(MlopsPackError):
    """The ``champion`` alias no longer points at the version the gate evaluated."""

    status = "champion_moved"


class DeployFailedError(MlopsPackError):
    """A challenger that passed the gate failed a deploy check and was rolled back.

    Not retried: the checks are deterministic enough that a retry would repeat the
    failure; the payload is the deploy record with every check and the reason.
    """

    status = "deploy_failed"


class ServiceUnavailableError(MlopsPackError):
    """A service the step needs (the model server, MLflow) did not answer or answered 5xx.

    Nothing was decided from its absence; a retry may succeed, so this is ``error``.
    """


class ServerRefusedError(BadInputError):
    """The model server answered 4xx: the request itself is wrong, a retry repeats it."""

    def __init__(self, status: int, message: str, payload: dict[str, Any] | None = None) -> None:
        super().__init__(message, payload)
        self.http_status = status


class StepTerminated(MlopsPackError):
    """The step process was asked to stop (SIGTERM); cleanup ran, a retry may succeed."""


class NotReproducedError(MlopsPackError):
    """A version retrained from its records differs from the registered one, or cannot be
    retrained (its data or spec is gone or altered); the payload names what differs."""

    status = "not_reproduced"
