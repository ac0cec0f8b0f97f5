"""``make up``'s Airflow (api-server, scheduler, dag-processor, triggerer) for tests that
need a real scheduler: started on a port of the test's own, stopped by ``make down``."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from support import ROOT, airflow_token

# The api-server's login, kept importable from here for the tests that start make up.
token = airflow_token

# What a developer's shell may carry that would point the stack at their own setup.
INHERITED = (
    "AIRFLOW_HOME",
    "AIRFLOW__CORE__DAGS_FOLDER",
    "MLOPS_PACK_HOME",
    "MLOPS_PACK_DATA_DIR",
    "MLOPS_PACK_TASK_IMAGE",
    "MLOPS_PACK_RUNNER",
    "MLOPS_PACK_SCHEDULES",
)


def _tail(path: Path) -> str:
    return path.read_text()[-3000:] if path.exists() else ""


@contextlib.contextmanager
def make_up(
    include: Path, port: int, prefix: str, **extra_env: str
) -> Iterator[tuple[Path, subprocess.CompletedProcess]]:
    """Yield the stack's state folder and what ``up`` printed; always stop it."""
    state = Path(tempfile.mkdtemp(prefix=prefix))
    state.chmod(0o755)
    env = {key: value for key, value in os.environ.items() if key not in INHERITED}
    env.update(
        MLOPS_PACK_STACK_DIR=str(state),
        MLOPS_PACK_AIRFLOW_PORT=str(port),
        MLOPS_PACK_INCLUDE_DIR=str(include),
        **extra_env,
    )
    command = [sys.executable, "-m", "mlops_pack.airflow.local_stack"]
    try:
        up = subprocess.run(
            [*command, "up"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert up.returncode == 0, up.stdout + up.stderr + _tail(state / "airflow.log")
        yield state, up
    finally:
        subprocess.run([*command, "down"], env=env, cwd=ROOT, capture_output=True, check=False)


def wait(what: str, probe, timeout: float = 300, every: float = 2):
    """``probe()``'s first truthy answer (REST errors count as no answer), or fail."""
    import time

    import airflow_client.client as ac

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = probe()
        except ac.ApiException:
            found = None
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def answer_hitl(api, dag_id: str, run_id: str, task_id: str, option: str, timeout=900, check=None):
    """Answer a human-in-the-loop task as a person would, again if asked again; returns the
    body of the request answered last.

    Airflow 3.3 can lose an answer given within about a second of the task parking in
    ``awaiting_input``: the scheduler re-queues the task, the parked process's exit then
    reads as a failure, and the next try asks anew (seen in CI: try 1 answered at +0.26 s,
    marked up_for_retry). A person answers again when asked again; so does this helper,
    and it waits a few seconds after the task parks, as a person would. ``check()`` runs
    on every poll, to fail early when the run went wrong elsewhere.
    """
    import time

    import airflow_client.client as ac

    tasks = ac.TaskInstanceApi(api)
    deadline = time.monotonic() + timeout
    answered: set[int] = set()
    body = None
    while time.monotonic() < deadline:
        ti = tasks.get_task_instance(dag_id, run_id, task_id)
        state = str(ti.state.value) if ti.state else "none"
        if state in ("success", "failed", "skipped") and answered:
            return body
        if state == "awaiting_input" and ti.try_number not in answered:
            time.sleep(5)
            body = tasks.get_hitl_detail(dag_id, run_id, task_id, -1).body
            payload = ac.UpdateHITLDetailPayload(chosen_options=[option], params_input={})
            tasks.update_hitl_detail(dag_id, run_id, task_id, -1, payload)
            answered.add(ti.try_number)
        if check is not None:
            check()
        time.sleep(3)
    raise AssertionError(f"{dag_id} run {run_id}: {task_id} never asked for, or never taken")
