"""Promotions from workers that share no file system: a real PostgreSQL holds the lock
(``MLOPS_PACK_LOCK_DSN``), a real MLflow tracking server holds the registry and the
artifacts (clients need only its URL). Each promoting process gets its own empty
``MLOPS_PACK_HOME``, so nothing can pass between them through files.

The overlap is forced with the registry's test hook (``MLOPS_PACK_TEST_HOOK_DIR``), as in
test_promotion_race: one process holds inside the critical section until released.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from mlops_pack.errors import EXIT_CHAMPION_MOVED, EXIT_OK
from mlops_pack.promotion_lock import PostgresModelLock, advisory_key
from mlops_pack.registry import CHAMPION, PREVIOUS, Registry
from services import mlflow_server, postgres
from support import challenger_decision, churn_spec_copy, lenient, promote_process, run_cli


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    root = tmp_path_factory.mktemp("services")
    with postgres() as dsn, mlflow_server(root / "mlflow") as tracking:
        yield {"dsn": dsn, "tracking": tracking}


@pytest.fixture
def remote(services, tmp_path, monkeypatch):
    """This process as the worker that trains: the HTTP registry and the Postgres lock.
    Small batches: the race is the subject, not the model."""
    from mlops_pack.datagen import churn

    data_dir = tmp_path / "data"
    for month in (1, 2):
        batch = data_dir / "churn" / f"churn_month_0{month}.csv"
        churn.write(churn.ChurnConfig(rows=3_000, month=month), batch)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", services["tracking"])
    monkeypatch.setenv("MLOPS_PACK_LOCK_DSN", services["dsn"])
    monkeypatch.setenv("MLOPS_PACK_HOME", str(tmp_path / "trainer-home"))
    monkeypatch.setenv("MLOPS_PACK_DATA_DIR", str(data_dir))
    return services


def _worker(services, name: str, tmp_path: Path, hooks: Path, spec: Path, decision: str):
    """A promoting process with a home of its own: it shares only the two services."""
    home = tmp_path / f"{name}-home"
    home.mkdir()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": services["tracking"],
        "MLOPS_PACK_LOCK_DSN": services["dsn"],
        "MLOPS_PACK_HOME": str(home),
        "MLOPS_PACK_TEST_HOOK_DIR": str(hooks),
    }
    return promote_process(spec, decision, tmp_path / f"{name}-out", env, home)


def _wait_for(hooks: Path, pattern: str, count: int, procs, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while len(list(hooks.glob(pattern))) < count:
        assert time.monotonic() < deadline, f"no {pattern} after {seconds}s"
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.1)


def _advisory_locks(dsn: str) -> int:
    import psycopg

    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()[
            0
        ]


def test_two_workers_without_a_shared_file_system_race_and_one_wins(remote, tmp_path):
    spec = churn_spec_copy(tmp_path, lenient)
    assert run_cli("retrain", "--spec", spec, "--out", tmp_path / "r1")[0] == EXIT_OK
    decisions = [
        challenger_decision(spec, "churn/churn_month_02.csv", tmp_path, "a"),
        challenger_decision(spec, "churn/churn_month_01.csv", tmp_path, "b"),
    ]
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    procs = [
        _worker(remote, f"worker{i}", tmp_path, hooks, spec, decision)
        for i, decision in enumerate(decisions)
    ]
    _wait_for(hooks, "lock_wait.*", 2, procs)
    _wait_for(hooks, "inside.*", 1, procs)
    time.sleep(3)  # ample for the second to get in too, if the lock did not stop it
    inside_together = sorted(p.name for p in hooks.glob("inside.*"))
    (hooks / "release").touch()
    codes = [p.wait(timeout=300) for p in procs]
    assert len(inside_together) == 1, f"both were in the critical section: {inside_together}"
    assert sorted(codes) == [EXIT_OK, EXIT_CHAMPION_MOVED], [p.stderr.read() for p in procs]

    loser = codes.index(EXIT_CHAMPION_MOVED)
    result = json.loads((tmp_path / f"worker{loser}-out" / "result.json").read_text())
    assert result["status"] == "champion_moved" and "champion moved" in result["error"]
    winner = json.loads((tmp_path / f"worker{1 - loser}-out" / "result.json").read_text())
    registry = Registry()
    assert registry.alias("churn", CHAMPION).version == winner["result"]["champion"]
    assert registry.alias("churn", PREVIOUS).version == "1"
    promotions = registry.history("churn", "promotion")
    assert [(e.get("from_version"), e["to_version"]) for e in promotions] == [
        (None, "1"),
        ("1", winner["result"]["champion"]),
    ]
    # Neither worker fell back to a file lock (or wrote anything a peer could read).
    for i in range(2):
        assert list((tmp_path / f"worker{i}-home").iterdir()) == []
    assert _advisory_locks(remote["dsn"]) == 0

    # A worker SIGKILLed while it holds the lock leaves the model free: Postgres ends its
    # session and the lock with it.
    hooks_kill = tmp_path / "hooks-kill"
    hooks_kill.mkdir()
    doomed = _worker(remote, "killed", tmp_path, hooks_kill, spec, decisions[loser])
    _wait_for(hooks_kill, "inside.*", 1, [doomed])
    assert _advisory_locks(remote["dsn"]) == 1
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=30)
    started = time.monotonic()
    with PostgresModelLock(remote["dsn"]).hold("churn", timeout=10):
        waited = time.monotonic() - started
    assert waited < 5, f"the lock stayed held {waited:.1f}s after its holder was killed"
    assert _advisory_locks(remote["dsn"]) == 0
    assert registry.alias("churn", CHAMPION).version == winner["result"]["champion"]


def test_a_busy_lock_times_out_with_a_clear_error(services):
    from mlops_pack.errors import MlopsPackError

    lock = PostgresModelLock(services["dsn"])
    with (
        lock.hold("m", timeout=5),
        pytest.raises(MlopsPackError, match="lock busy for 1s"),
        lock.hold("m", timeout=1),
    ):
        pass
    assert advisory_key("m") != advisory_key("n")
    assert advisory_key("m") == advisory_key("m")
