"""How a step's log is copied into the task log when the stream between worker and engine
can be cut (a proxy's idle timeout; tests/stack/test_docker_proxy.py cuts a real one).
These use a stand-in client because what they pin down cannot be caused on demand:
Docker's stored order against its timestamps (a long line's parts share one; stdout and
stderr can be stored slightly out of timestamp order), and a cut at a chosen line."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

import pytest
from mlops_pack.airflow import container

T0 = int(datetime(2026, 12, 2, 10, 0, tzinfo=UTC).timestamp())  # the stamps' minute


def stamp(second: int, nanos: int) -> str:
    return f"2026-12-02T10:00:{second:02d}.{nanos:09d}Z"


class Engine:
    """Serves scripted log streams: each ``logs`` call gets the next list of
    (timestamp, text); ``running`` answers each inspect after a followed stream."""

    def __init__(self, streams: list, running: list[bool]):
        self.streams, self.running, self.calls = list(streams), list(running), []

    def logs(self, container_id, stream, follow, timestamps, since):
        assert stream and timestamps
        self.calls.append((follow, since))
        script = self.streams.pop(0)
        if isinstance(script, Exception):
            raise script
        return iter(f"{at} {text}\n".encode() for at, text in script)

    def inspect_container(self, container_id):
        return {"State": {"Running": self.running.pop(0)}}


def copied(engine: Engine) -> list[str]:
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    log = logging.getLogger(f"container-logs-{id(engine)}")
    log.handlers, log.propagate = [Collect()], False
    log.setLevel(logging.INFO)
    container._stream_logs(engine, "c1", log, threading.Event())
    return lines


def test_lines_sharing_or_inverting_timestamps_are_all_copied_without_a_cut():
    parts = [(stamp(1, 5), "part one of a long line"), (stamp(1, 5), "part two")]
    inverted = [(stamp(1, 9), "stdout"), (stamp(1, 7), "stderr, stamped a little earlier")]
    engine = Engine([parts + inverted, parts + inverted], running=[False])
    assert copied(engine) == ["part one of a long line", "part two", "stdout",
                              "stderr, stamped a little earlier"]  # fmt: skip
    # The final read (the container stopped) repeats the second and adds nothing.
    assert engine.calls == [(True, None), (False, T0 + 1)]


def test_after_a_cut_each_line_is_copied_once_and_none_is_lost():
    before = [(stamp(1, 1), "a"), (stamp(2, 3), "b"), (stamp(2, 3), "b, part two")]
    after = [(stamp(2, 8), "c"), (stamp(3, 0), "d")]
    engine = Engine([before, before[1:] + after[:1], before[1:] + after], running=[True, True])
    # First stream cut after b's parts; the second repeats second 2 and adds c, then is
    # cut; the container is still running, so it is followed again from second 2.
    engine.streams.append(after[1:])  # the final read after it stopped, from second 3
    engine.running.append(False)
    assert copied(engine) == ["a", "b", "b, part two", "c", "d"]
    assert engine.calls == [(True, None), (True, T0 + 2), (True, T0 + 2), (False, T0 + 3)]


def test_a_removed_container_ends_the_copy_quietly():
    from docker.errors import NotFound

    engine = Engine([[(stamp(1, 0), "only")], NotFound("gone")], running=[True])
    assert copied(engine) == ["only"]


def test_an_engine_that_stays_unreachable_ends_the_copy_with_a_warning(monkeypatch):
    from requests.exceptions import ConnectionError

    monkeypatch.setattr(container, "CUT_PAUSE_SECONDS", 0.01)
    monkeypatch.setattr(container, "CUT_GRACE_SECONDS", 0.05)
    engine = Engine([ConnectionError("refused")] * 50, running=[])
    lines = copied(engine)
    assert lines == ["the step's log stopped being copied here: refused"], lines
    assert 2 <= len(engine.calls) < 50


@pytest.mark.parametrize("stamped, expected", [
    ("2026-12-02T10:00:01.5Z", (T0 + 1, 500_000_000)),
    ("2026-12-02T10:00:01Z", (T0 + 1, 0)),
    ("not a time", None),
])  # fmt: skip
def test_docker_s_timestamps_are_read_with_their_fraction(stamped, expected):
    assert container._log_time(stamped) == expected
