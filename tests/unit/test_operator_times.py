"""A time an operator reads from its arguments (a DAG run's conf, a template) is parsed as
the step parses it and refused before any container starts, without a retry."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    "end, message",
    [
        ("yesterday", "--end 'yesterday': expected an ISO-8601 time with a zone"),
        ("2026-01-01T00:00:00", "--end '2026-01-01T00:00:00': expected an ISO-8601 time"),
    ],
)
def test_a_monitor_window_end_that_the_step_would_refuse_fails_at_once(end, message):
    from airflow.exceptions import AirflowFailException
    from mlops_pack.airflow.exceptions import MlopsBadInputFailure
    from mlops_pack.airflow.operators import MonitorOperator

    operator = MonitorOperator(task_id="monitor", model="churn", window_end=end)
    with pytest.raises(MlopsBadInputFailure, match=message) as raised:
        operator.feed_window()
    assert isinstance(raised.value, AirflowFailException)  # no retry can fix it


def test_a_monitor_window_end_with_a_zone_is_read_as_the_step_reads_it():
    from datetime import UTC, datetime, timedelta

    from mlops_pack.airflow.operators import MonitorOperator

    operator = MonitorOperator(task_id="monitor", model="churn", window_end="2026-01-01T06:00:00Z")
    start, end = operator.feed_window()
    assert end == datetime(2026, 1, 1, 6, tzinfo=UTC)
    assert end - start == timedelta(hours=24)  # the churn spec's monitoring window
