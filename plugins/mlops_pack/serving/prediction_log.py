"""Append-only prediction logs, one JSON line per request, partitioned by UTC day.

Each write goes to the operating system before the response is sent (``flush`` after
every request), so a killed or restarted server loses nothing it answered; ``fsync``
runs at most once a second and at shutdown, so only a host crash can lose the last
second. Retention deletes whole ``date=YYYY-MM-DD`` partitions older than the spec's
``serving.log_retention_days`` and never touches anything else in the directory.

A worker that shares no volume with the server downloads a window's part files through
the server's admin API (``window_files``, ``part_file``, ``complete_length``): only whole
lines, so the line being written is never half-read; from a byte offset on (``Range``),
so a worker that holds a file's start fetches only what was appended since.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from mlops_pack.feed_layout import PART_FILE, PARTITION, log_partitions, partition_day

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

    def window_files(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """The part files of the days that can hold a request of [start, end), each with
        the bytes of its whole lines now."""
        days = []
        for folder in log_partitions(self.root, start, end):
            parts = sorted(p for p in folder.iterdir() if PART_FILE.match(p.name))
            files = [
                {"name": part.name, "bytes": complete_length(part)}
                for part in parts
                if part.is_file() and not part.is_symlink()
            ]
            days.append({"day": folder.name.removeprefix("date="), "files": files})
        return days

    def part_file(self, day: str, name: str) -> Path | None:
        """The part file ``name`` of ``day``'s partition, or None. Both names must match
        the layout, so no request can name a path outside the log folder."""
        folder = f"date={day}"
        if not (PARTITION.match(folder) and PART_FILE.match(name)):
            return None
        path = self.root / folder / name
        return path if path.is_file() and not path.is_symlink() else None


def complete_length(path: Path, chunk: int = 1 << 16) -> int:
    """The bytes of ``path`` up to its last newline: the file the server is appending to
    may end inside a line, which no reader may see."""
    with path.open("rb") as handle:
        end = handle.seek(0, os.SEEK_END)
        while end > 0:
            start = max(0, end - chunk)
            handle.seek(start)
            found = handle.read(end - start).rfind(b"\n")
            if found >= 0:
                return start + found + 1
            end = start
    return 0


def read_span(path: Path, start: int, end: int, chunk: int = 1 << 20) -> Iterator[bytes]:
    """Bytes ``start`` to ``end`` of ``path`` in chunks (a response body; a file removed
    meanwhile by retention stays readable through the open handle)."""
    with path.open("rb") as handle:
        handle.seek(start)
        left = end - start
        while left > 0:
            data = handle.read(min(chunk, left))
            if not data:
                return
            left -= len(data)
            yield data


def read_records(root: Path) -> list[dict[str, Any]]:
    """Every record under ``root``, oldest partition first (for tests and analysis)."""
    records = []
    for part in sorted(root.glob("date=*/part-*.jsonl")):
        with part.open(encoding="utf-8") as handle:
            records.extend(json.loads(line) for line in handle if line.strip())
    return records
