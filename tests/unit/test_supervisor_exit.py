"""The supervisor fix against the installed Task SDK, with real child processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest
import structlog
from airflow.sdk.execution_time.supervisor import ActivitySubprocess, PsutilTracker
from mlops_pack.airflow import launch, supervisor_exit

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"


def _child(seconds: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"])


@pytest.mark.parametrize("wait", [supervisor_exit.wait_until_exited, supervisor_exit._poll_exit])
def test_a_child_exit_is_seen_without_reaping_it(wait):
    child = _child(0.3)
    assert wait(child.pid, 0.05) is False  # still running
    assert wait(child.pid, 30) is True
    # Not reaped: its exit status is still there for the supervisor's own wait.
    assert os.waitpid(child.pid, 0) == (child.pid, 0)
    assert wait(child.pid, 1) is True  # gone altogether


def _supervisor(child: subprocess.Popen) -> ActivitySubprocess:
    # The state the race leaves: every socket closed and read to EOF, the exit not seen.
    parent_end, _ = socket.socketpair()
    return ActivitySubprocess(
        id=uuid.uuid4(),
        pid=child.pid,
        stdin=parent_end,
        process=PsutilTracker(psutil.Process(child.pid)),
        process_log=structlog.get_logger(),
        client=None,
    )


def test_a_supervisor_with_no_socket_left_notices_the_exit_at_once():
    assert supervisor_exit.install() is True
    assert supervisor_exit.install() is True  # once only
    child = _child(0.5)
    supervisor = _supervisor(child)
    assert not supervisor.selector.get_map()
    started = time.monotonic()
    # Unpatched, this sleeps the whole 60 s on the empty selector and only then looks.
    assert supervisor._service_subprocess(max_wait_time=60) == 0
    assert time.monotonic() - started < 30
    with pytest.raises(ChildProcessError):  # Airflow's own check reaped it
        os.waitpid(child.pid, os.WNOHANG)


def test_a_running_task_is_still_waited_for_no_longer_than_the_interval():
    supervisor_exit.install()
    child = _child(30)
    try:
        supervisor = _supervisor(child)
        started = time.monotonic()
        assert supervisor._service_subprocess(max_wait_time=0.2) is None  # alive
        assert time.monotonic() - started >= 0.2  # it did wait, not spin
    finally:
        child.kill()
        child.wait()


def test_the_worker_entry_point_runs_airflows_command_line():
    env = {**os.environ, "PYTHONPATH": str(PLUGINS)}
    done = subprocess.run(
        [sys.executable, "-m", "mlops_pack.airflow.launch", "version"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    import airflow

    assert done.stdout.strip().splitlines()[-1] == airflow.__version__


# Runs the worker's entry point with Airflow's command line replaced by a report of what
# is already imported when Celery would start (the real command would start a worker).
_REPORT_PRELOADED = """
import json, sys
import airflow.__main__
from mlops_pack.airflow import launch

def report():
    print(json.dumps({m: m in sys.modules for m in launch.TASK_IMPORTS}))

airflow.__main__.main = report
sys.argv = ["worker", *sys.argv[1:]]
launch.main()
"""


@pytest.mark.parametrize(
    ("command", "preloaded"), [(["celery", "worker"], True), (["version"], False)]
)
def test_a_celery_worker_imports_what_each_task_would_before_its_pool_forks(command, preloaded):
    env = {**os.environ, "PYTHONPATH": str(PLUGINS)}
    done = subprocess.run(
        [sys.executable, "-c", _REPORT_PRELOADED, *command],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found == {module: preloaded for module in launch.TASK_IMPORTS}


def test_a_module_this_airflow_lacks_is_skipped_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(launch, "TASK_IMPORTS", ("mlops_pack.no_such_module", "docker.types"))
    with caplog.at_level("WARNING", logger=launch.__name__):
        launch.preload()
    assert "mlops_pack.no_such_module" in caplog.text
    assert "docker.types" in sys.modules
