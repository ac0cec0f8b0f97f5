"""Append-only prediction logs, one JSON line per request, partitioned by UTC day.

Each write goes to the operating system before the response is sent (``flush`` after
every request), so a killed or restarted server loses nothing it answered; ``fsync``
runs at most once a second and at shutdown, so only a host crash can lose the last
second. Retention deletes whole ``date=YYYY-MM-DD`` partitions older than the spec's
``serving.log_retention_days`` and never touches anything else in the directory.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from mlops_pack.feed_layout import partition_day

FSYNC_SECONDS = 1.0


class PredictionLog:
    def __init__(self, root: Path, retention_days: int) -> None:
        self.root = root
        self.retention_days = retention_days
        # One part file per server process: restarts never append to a file another
        # process may still hold open.
        self._part = f"part-{datetime.now(UTC):%Y%m%dT%H%M%S}-{os.getpid()}.jsonl"
        self._day: str | None = None
        self._file: IO[str] | None = None
        self._synced = time.monotonic()

    def _handle(self, day: str) -> IO[str]:
        if self._file is None or day != self._day:
            self.close()
            folder = self.root / f"date={day}"
            folder.mkdir(parents=True, exist_ok=True)
            self._file = (folder / self._part).open("a", encoding="utf-8")
            self._day = day
        return self._file

    def append(self, record: dict[str, Any]) -> None:
        now = datetime.now(UTC)
        handle = self._handle(now.date().isoformat())
        handle.write(json.dumps({"ts": now.isoformat(), **record}, separators=(",", ":")) + "\n")
        handle.flush()
        if time.monotonic() - self._synced >= FSYNC_SECONDS:
            os.fsync(handle.fileno())
            self._synced = time.monotonic()

    def close(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None

    def enforce_retention(self, today: date | None = None) -> list[str]:
        """Delete partitions older than the retention period; returns their names."""
        today = today or datetime.now(UTC).date()
        oldest_kept = today - timedelta(days=self.retention_days - 1)
        removed = []
        if not self.root.exists():
            return removed
        for folder in sorted(self.root.iterdir()):
            day = partition_day(folder)
            if day is not None and day < oldest_kept and folder.name != f"date={self._day}":
                shutil.rmtree(folder)
                removed.append(folder.name)
        return removed


def read_records(root: Path) -> list[dict[str, Any]]:
    """Every record under ``root``, oldest partition first (for tests and analysis)."""
    records = []
    for part in sorted(root.glob("date=*/part-*.jsonl")):
        with part.open(encoding="utf-8") as handle:
            records.extend(json.loads(line) for line in handle if line.strip())
    return records
