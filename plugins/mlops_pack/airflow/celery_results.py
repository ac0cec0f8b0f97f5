"""The scheduler's check of Celery task states on a kept database connection.

On every loop the Celery executor asks the result backend for the state of each task in
flight. With Celery's database result backend (the one Airflow recommends, and the one
both compose files use) Celery builds a new SQLAlchemy engine without a pool for every
such query, unless it believes its process was forked by ``multiprocessing``
(``celery.backends.database.session.SessionManager.forked``): the scheduler, which is not,
opens a new Postgres connection once a loop (a server process forked, the password
exchange, the dialect's set-up queries) and closes it again. Celery keeps one pooled
engine per database only in forked processes, so that a fork never shares a pooled
connection with its parent.

``install()``, for the scheduler, makes the result backend's session managers created in
this process keep their engine as they would after a fork, and keeps the fork safety
Celery wanted: a process forked from this one afterwards (the executor's pool for sending
many tasks at once) drops the inherited connections without closing them, so the parent's
stay good (SQLAlchemy's advice for engines that cross a fork). A connection that dies
with its server (Postgres restarted) is replaced on its next use when
``[celery] result_backend_sqlalchemy_engine_options`` has ``pool_pre_ping`` (both compose
files set it); without it the first check after such a restart fails and the next one
reconnects.

It relies on ``SessionManager``'s ``forked`` and ``_engines`` fields; on a Celery without
them it changes nothing and says so in the log. Measured by ``bench/bench_state_check.py``
(docs/benchmarks.md §8).
"""

from __future__ import annotations

import functools
import logging
import os
import weakref

log = logging.getLogger(__name__)

_NOT_KEPT = "the result backend's connection is not kept: %s"


def install() -> bool:
    """Keep the result backend's engines in this process; True once it applies."""
    try:
        from celery.backends.database.session import SessionManager
    except ImportError:  # no Celery, or no SQLAlchemy: nothing to keep
        log.warning(_NOT_KEPT, "Celery's database backend is absent")
        return False
    if getattr(SessionManager.__init__, "mlops_pack_kept", False):
        return True
    probe = SessionManager()
    if not (hasattr(probe, "forked") and isinstance(getattr(probe, "_engines", None), dict)):
        log.warning(_NOT_KEPT, "this Celery's SessionManager differs")
        return False

    managers: weakref.WeakSet = weakref.WeakSet()  # a backend's manager lives with it
    original_init = SessionManager.__init__

    @functools.wraps(original_init)
    def kept_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.forked = True  # one engine per database, pooled, as Celery does after a fork
        managers.add(self)

    def drop_inherited_connections():
        for manager in managers:
            for engine in list(manager._engines.values()):
                engine.dispose(close=False)  # the parent's connections are not closed

    kept_init.mlops_pack_kept = True
    SessionManager.__init__ = kept_init
    os.register_at_fork(after_in_child=drop_inherited_connections)
    return True
