"""Reading a time given on a command line or in a DAG run's ``conf``: one parser, one message.

Every window the pack computes (the monitor's, the labelled batch's, the retrain loop's
period) compares against logged times that carry a zone, so a time without one is refused
here rather than failing later on a comparison of naive and aware datetimes.
"""

from __future__ import annotations

from datetime import datetime

from mlops_pack.errors import BadInputError

EXAMPLE = "2026-11-30T06:00:00+00:00"


def aware_time(text: str, name: str) -> datetime:
    """``text`` as an ISO-8601 time with a zone; ``name`` (``--end``, ``window_end``) is
    the flag or field the message names."""
    try:
        when = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        when = None
    if when is None or when.tzinfo is None:
        raise BadInputError(
            f"{name} {text!r}: expected an ISO-8601 time with a zone, e.g. {EXAMPLE} "
            "(Z is accepted for UTC)",
            {"rule": "time", "field": name},
        )
    return when
