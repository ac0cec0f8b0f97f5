"""Where a worker gets the prediction logs a monitor window reads (MLOPS_PACK_PREDICTION_LOGS):
a setting it cannot use fails the task at once, without a retry and before any container."""

from __future__ import annotations

import pytest


def test_a_misspelt_source_is_refused_with_the_choices(monkeypatch):
    from airflow.exceptions import AirflowFailException
    from mlops_pack.airflow.exceptions import MlopsBadInputFailure
    from mlops_pack.airflow.operators import MonitorOperator

    monkeypatch.setenv("MLOPS_PACK_PREDICTION_LOGS", "sever")
    operator = MonitorOperator(task_id="monitor", model="churn", window_end="2026-01-01T06:00Z")
    with pytest.raises(MlopsBadInputFailure, match=r"MLOPS_PACK_PREDICTION_LOGS='sever': expe"
                       r"cted one of \['files', 'server'\]") as raised:  # fmt: skip
        operator._feed_folders()
    assert isinstance(raised.value, AirflowFailException)


def test_downloading_logs_needs_steps_without_a_shared_file_system(monkeypatch, tmp_path):
    """With a local MLflow store the step reads the log folders itself: a download it
    would not read is refused, naming the fix."""
    from mlops_pack.airflow.exceptions import MlopsBadInputFailure
    from mlops_pack.airflow.operators import MonitorOperator

    monkeypatch.setenv("MLOPS_PACK_PREDICTION_LOGS", "server")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLOPS_PACK_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "home").chmod(0o777)  # the store check before it passes (not its subject)
    work = tmp_path / "work"
    work.mkdir()
    operator = MonitorOperator(task_id="monitor", model="churn", window_end="2026-01-01T06:00Z")
    with pytest.raises(MlopsBadInputFailure, match="unset MLOPS_PACK_PREDICTION_LOGS, or use"):
        operator._run_docker(["monitor"], work, context={})


def test_windows_a_killed_task_left_are_swept_and_the_cache_is_not(tmp_path):
    """A step's window of served logs (hard links into the worker's cache) is removed
    when its task ends; one a killed task left behind goes a day later, so its links
    no longer make the cache copy the files they share. The cache itself stays."""
    import os
    import time

    from mlops_pack.airflow.operators import LEFT_WINDOW_SECONDS, WINDOW_PREFIX, _sweep_left_windows

    left, current = tmp_path / f"{WINDOW_PREFIX}left", tmp_path / f"{WINDOW_PREFIX}now"
    cache = tmp_path / "served-logs-cache"
    for folder in (left, current, cache):
        folder.mkdir()
    stamp = time.time() - LEFT_WINDOW_SECONDS - 60
    for folder in (left, cache):
        os.utime(folder, (stamp, stamp))
    _sweep_left_windows(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([current.name, cache.name])
