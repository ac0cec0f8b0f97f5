"""The per-model lock that serialises promotions, rollbacks and holdout pinning.

Two kinds, chosen from the settings:

* a file lock under ``MLOPS_PACK_LOCK_DIR`` for the embedded default (one host);
* a transaction-scoped Postgres advisory lock when ``MLOPS_PACK_LOCK_DSN`` is set, shared
  by every worker that reaches that database. It lives as long as the transaction: a
  process that dies while holding it (SIGKILL, OOM, a lost host) ends its session, and
  Postgres frees the lock at once (a crashed host once its TCP keepalives give up).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from mlops_pack.errors import BadInputError, MlopsPackError, ServiceUnavailableError
from mlops_pack.settings import Settings


class ModelLock(Protocol):
    def hold(self, model: str, timeout: float) -> contextlib.AbstractContextManager[None]:
        """Hold the lock of ``model`` for the ``with`` block; waits up to ``timeout`` s."""


def busy(model: str, timeout: float) -> MlopsPackError:
    return MlopsPackError(f"model {model}: promotion lock busy for {timeout:.0f}s")


class FileModelLock:
    """One lock file per model: every process that promotes must share ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @contextlib.contextmanager
    def hold(self, model: str, timeout: float) -> Iterator[None]:
        from filelock import FileLock, Timeout

        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            with FileLock(str(self.folder / f"{model}.lock"), timeout=timeout):
                yield
        except Timeout:
            raise busy(model, timeout) from None


def advisory_key(model: str) -> int:
    """A stable signed 64-bit key for ``model`` (Postgres' ``hashtext`` is not documented
    as stable across major versions; this is)."""
    digest = hashlib.sha256(f"mlops-pack/promotion/{model}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresModelLock:
    """``pg_advisory_xact_lock`` on the model's key, in a transaction of its own connection.

    The connection is opened for the one critical section and closed after it, so the
    lock can never outlive the ``with`` block nor be leaked by a pool. TCP keepalives let
    the server notice a vanished client (a crashed host) within about half a minute.
    """

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn

    @contextlib.contextmanager
    def hold(self, model: str, timeout: float) -> Iterator[None]:
        import psycopg

        try:
            conn = psycopg.connect(
                self._dsn,
                connect_timeout=10,
                application_name="mlops-pack lock",
                keepalives=1,
                keepalives_idle=10,
                keepalives_interval=5,
                keepalives_count=3,
            )
        except psycopg.Error as exc:
            raise _unreachable(exc) from None
        with conn, conn.transaction():
            # lock_timeout bounds the wait for the advisory lock too; local to this
            # transaction, so nothing else on the server is affected.
            conn.execute("SELECT set_config('lock_timeout', %s, true)", (f"{int(timeout * 1000)}",))
            try:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (advisory_key(model),))
            except psycopg.errors.LockNotAvailable:
                raise busy(model, timeout) from None
            except psycopg.Error as exc:
                raise _unreachable(exc) from None
            yield


def _unreachable(exc: Exception) -> ServiceUnavailableError:
    # The DSN may carry a password: name the variable, never its value.
    first = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
    return ServiceUnavailableError(
        f"promotion lock: the Postgres of MLOPS_PACK_LOCK_DSN failed ({first}); a retry may "
        "succeed",
        {"lock": "postgres"},
    )


def lock_for(settings: Settings) -> ModelLock:
    """The Postgres lock when a DSN is set; else the file lock, which with an MLflow
    server is refused unless ``MLOPS_PACK_LOCK_DIR`` names a folder every promoting
    process shares (a lock in a private folder would exclude nobody)."""
    if settings.lock_dsn:
        return PostgresModelLock(settings.lock_dsn)
    if settings.remote_tracking and not settings.lock_dir_set:
        raise BadInputError(
            f"MLFLOW_TRACKING_URI={settings.tracking_uri} is a server, which workers on "
            "several hosts share, but the promotion lock is a file in a private folder. "
            "Fix: set MLOPS_PACK_LOCK_DSN to a Postgres every worker reaches (see "
            "docs/runners.md), or MLOPS_PACK_LOCK_DIR to a folder all of them share",
            {"rule": "shared_lock"},
        )
    return FileModelLock(settings.lock_dir)


class ConfiguredLock:
    """The lock the settings choose, resolved at first use: reading the registry never
    needs one, so a missing lock setting fails only what would take the lock."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock: ModelLock | None = None

    def hold(self, model: str, timeout: float) -> contextlib.AbstractContextManager[None]:
        if self._lock is None:
            self._lock = lock_for(self.settings)
        return self._lock.hold(model, timeout)
