"""Where a window's prediction logs and labels lie: day folders (``date=YYYY-MM-DD``).

The model server writes the logs, a label feed the labels, the monitor and the labelled
batch read them; the operators copy the same folders into a step that shares no file
system with the worker. One definition of the layout and of the window keeps all of them
reading the same days. Standard library only: the Airflow workers import it.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from mlops_pack.errors import BadInputError

PARTITION = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
# A server process's log file in a partition (prediction_log.PredictionLog names them).
PART_FILE = re.compile(r"^part-[A-Za-z0-9._-]{1,120}\.jsonl$")


def partition_day(folder: Path) -> date | None:
    """The day of a partition folder, None for anything else."""
    match = PARTITION.match(folder.name)
    return date.fromisoformat(match.group(1)) if match and folder.is_dir() else None


def partitions(root: Path, first: date, last: date) -> list[Path]:
    """Day folders of ``root`` from ``first`` to ``last`` inclusive, oldest first."""
    if not root.is_dir():
        return []
    found = []
    for folder in root.iterdir():
        day = partition_day(folder)
        if day is not None and first <= day <= last:
            found.append(folder)
    return sorted(found)


def log_partitions(root: Path, start: datetime, end: datetime) -> list[Path]:
    """The log days that can hold a request of [start, end)."""
    return partitions(root, start.date(), (end - timedelta(microseconds=1)).date())


def label_partitions(root: Path, since: date) -> list[Path]:
    """The label days a window reads: every day from its start on (labels arrive after
    the predictions they are for)."""
    return partitions(root, since, date.max)


def window(end: datetime | None, hours: float) -> tuple[datetime, datetime]:
    """The monitor's window: ``hours`` up to ``end`` (default now), which needs a zone."""
    end = end or datetime.now(UTC)
    if end.tzinfo is None:
        raise BadInputError(f"--end {end.isoformat()}: give a time zone (e.g. +00:00 or Z)")
    return end - timedelta(hours=hours), end
