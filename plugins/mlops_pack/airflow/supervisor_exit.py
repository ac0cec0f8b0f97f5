"""A finished task frees its worker slot at once: a fix for the Task SDK's supervisor.

The supervisor (``airflow.sdk.execution_time.supervisor``) watches a task's process
through its sockets and checks the process's exit with a non-blocking wait after each
wake-up. A task's process closes its sockets a moment before the kernel makes it
waitable; when the supervisor reads the last EOF inside that moment, the wait misses the
exit, the selector is now empty, and the loop sleeps the whole
``[workers] min_heartbeat_interval`` (5 s by default) before it looks again. On a busy
worker host that happened to one task in three (docs/benchmarks.md §7), each time holding
the worker's slot idle.

``install()`` changes one thing: once every socket of a task is closed and its exit is
not yet seen, the supervisor waits on the process itself (a pidfd, or polling where the
kernel has none), for at most the time it would have slept, so it notices the exit
within milliseconds. It leaves the process unreaped: Airflow's own check reaps it and
records the exit as before. It applies only to the Task SDK shape it was written
against and says so in the log otherwise. The workers of both compose files run through
``python -m mlops_pack.airflow.launch``, which installs it; the fix belongs upstream.
"""

from __future__ import annotations

import inspect
import logging
import os
import select
import time
from typing import Any

log = logging.getLogger(__name__)

_PARAMETERS = ["self", "max_wait_time", "raise_on_timeout", "expect_signal"]
_FIELDS = {"pid", "selector", "_exit_code"}


def wait_until_exited(pid: int, timeout: float) -> bool:
    """True once the child ``pid`` has exited (or was already reaped), False after
    ``timeout`` seconds; the child is never reaped here."""
    try:
        handle = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except OSError:  # no pidfd (an old kernel, or a seccomp profile that refuses it)
        return _poll_exit(pid, timeout)
    try:
        waiter = select.poll()  # not select(): a busy worker's descriptors can pass 1024
        waiter.register(handle, select.POLLIN)
        return bool(waiter.poll(timeout * 1000))
    finally:
        os.close(handle)


def _poll_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
        except ChildProcessError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)


def install() -> bool:
    """Patch the Task SDK's task supervisor; True when the fix is in place."""
    try:
        import attrs
        from airflow.sdk.execution_time.supervisor import ActivitySubprocess
    except ImportError:
        log.warning("the supervisor fix is not applied: no Airflow Task SDK here")
        return False
    original = ActivitySubprocess._service_subprocess
    if getattr(original, "waits_on_exit", False):
        return True
    fields = {field.name for field in attrs.fields(ActivitySubprocess)}
    if list(inspect.signature(original).parameters) != _PARAMETERS or not fields >= _FIELDS:
        log.warning(
            "the supervisor fix is not applied: this Task SDK's supervisor is not the one it "
            "was written for (a finished task may hold its worker slot up to "
            "[workers] min_heartbeat_interval)"
        )
        return False

    def _service_subprocess(
        self: Any,
        max_wait_time: float,
        raise_on_timeout: bool = False,
        expect_signal: int | None = None,
    ) -> int | None:
        if self._exit_code is None and not self.selector.get_map():
            # Nothing left to select on (a closed socket leaves the selector and
            # _open_sockets together): wait for the exit itself, for as long as the loop
            # would have slept, then let Airflow's own check reap and record it.
            wait_until_exited(self.pid, max(0.01, max_wait_time))
            max_wait_time = 0
        return original(self, max_wait_time, raise_on_timeout, expect_signal)

    _service_subprocess.waits_on_exit = True  # type: ignore[attr-defined]
    ActivitySubprocess._service_subprocess = _service_subprocess
    return True
