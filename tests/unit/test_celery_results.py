"""celery_results.install() where it cannot apply: it changes nothing and says why. Where
it applies it is run for real, against Postgres, in the local stack's scheduler
(tests/stack/test_local_stack.py)."""

from __future__ import annotations

import sys
import types

from mlops_pack.airflow import celery_results


def test_without_celerys_database_backend_nothing_changes(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "celery.backends.database.session", None)
    with caplog.at_level("WARNING", logger=celery_results.__name__):
        assert celery_results.install() is False
    assert "Celery's database backend is absent" in caplog.text


def test_a_session_manager_of_another_shape_is_left_alone(monkeypatch, caplog):
    class SessionManager:  # a Celery whose manager keeps no `forked` flag
        def __init__(self):
            self.engines = {}

    original = SessionManager.__init__
    module = types.ModuleType("celery.backends.database.session")
    module.SessionManager = SessionManager
    monkeypatch.setitem(sys.modules, "celery.backends.database.session", module)
    with caplog.at_level("WARNING", logger=celery_results.__name__):
        assert celery_results.install() is False
    assert "SessionManager differs" in caplog.text
    assert SessionManager.__init__ is original
