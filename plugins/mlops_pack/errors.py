"""Exception hierarchy shared by the step world, the CLI and the Airflow world.

The split matters operationally: ``BadInputError`` (bad data, bad spec, refused artifact)
must never be retried, while anything else is treated as an infrastructure error that a
retry may fix. Each exception carries its payload so callers can publish it before raising.
"""

from __future__ import annotations

from typing import Any

# CLI exit codes. Distinct codes let a container's exit status say what happened without
# parsing output: the Airflow operators map them back onto these exception classes.
EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_REJECTED = 3
EXIT_CHAMPION_MOVED = 4
EXIT_DEPLOY_FAILED = 5


class MlopsPackError(Exception):
    """Base class; ``payload`` is a JSON-able dict describing the failure."""

    exit_code = EXIT_INTERNAL

    def __init__(self, message: str, payload: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.payload = payload or {}


class BadInputError(MlopsPackError):
    """Input that no retry can fix: a bad spec, a bad dataset, a refused artifact."""

    exit_code = EXIT_BAD_INPUT


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

    exit_code = EXIT_CHAMPION_MOVED


class DeployFailedError(MlopsPackError):
    """A challenger that passed the gate failed a deploy check and was rolled back.

    Not retried: the checks are deterministic enough that a retry would repeat the
    failure; the payload is the deploy record with every check and the reason.
    """

    exit_code = EXIT_DEPLOY_FAILED
