"""A window's prediction logs, downloaded from the model server that wrote them.

The monitor and the labelled batch read a served model's prediction logs. A worker on
the server's host can read them from the server's volume; a worker on another host
cannot, so it downloads the window's days through the server's admin API (the admin
token it already holds for deploys) into a folder of the same layout
(``date=YYYY-MM-DD/part-*.jsonl``), which the operator copies into the step. The server
sends whole lines only. Names in the server's listing are checked against the layout
before anything is written: an answer cannot place a file outside ``dest``.

A worker keeps what it downloaded in a cache folder (one per model and server) and asks
only for what was appended since: a part file is written by one server process and only
ever grows (``serving/prediction_log.py``), so the bytes a worker holds are the start of
the server's file, and ``Range: bytes=N-`` fetches the rest. An hourly monitor over a
week's window then downloads an hour of traffic, not a week. What a window reads is
handed to the step as hard links into ``dest``; the cache never appends to a file that a
link still shares (it grows a copy and renames it over the old name), so a step's copy
cannot change under it.
Updates of one cache are serialized by a file lock (several task processes of a worker,
or workers sharing the folder on one host).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import quote, urlencode

from mlops_pack.errors import ServiceUnavailableError
from mlops_pack.feed_layout import PART_FILE, PARTITION
from mlops_pack.server_client import ServerClient

# A cached day no window has read for this long is removed: longer than a weekly job's
# cadence, so a weekly labelled batch still finds its days.
CACHE_IDLE_DAYS = 8


@dataclass
class WindowDownload:
    """The day folders of a window under ``dest``, the bytes fetched from the server for
    them, and the bytes that came from the cache instead."""

    folders: list[Path] = field(default_factory=list)
    fetched: int = 0
    cached: int = 0


def download_window(
    client: ServerClient, start: datetime, end: datetime, dest: Path, cache: Path | None = None
) -> WindowDownload:
    """The day folders of [start, end) under ``dest``: downloaded whole, or with
    ``cache`` (a folder of this model's server on the worker) only what the cache lacks."""
    query = urlencode({"start": start.isoformat(), "end": end.isoformat()})
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True, mode=0o700)
    # The listing is read under the lock: sizes listed before another process grew the
    # cache would look shorter than the cached files, which are then fetched whole.
    with _locked(cache / ".lock") if cache is not None else nullcontext():
        return _fetch(client, client.ok("GET", f"/admin/logs?{query}"), dest, cache)


def _fetch(client: ServerClient, listing: object, dest: Path, cache: Path | None):
    days = listing.get("days") if isinstance(listing, dict) else None
    if not isinstance(days, list) or not all(
        isinstance(day, dict) and isinstance(day.get("files"), list) for day in days
    ):  # an answer we cannot read must not pass for a window without requests
        raise ServiceUnavailableError(
            f"model server at {client.url}: its log listing is not a list of days with "
            f"their files: {str(listing)[:200]}"
        )
    checked = []
    for day in days:
        folder = f"date={day.get('day')}"
        files = [f if isinstance(f, dict) else {} for f in day["files"]]
        bad = [f.get("name", "") for f in files if not PART_FILE.match(str(f.get("name", "")))]
        if bad or not PARTITION.match(folder):
            raise ServiceUnavailableError(
                f"model server at {client.url}: its log listing names {folder}/{bad}, "
                "which are not prediction log files (date=YYYY-MM-DD/part-*.jsonl)"
            )
        checked.append((day["day"], folder, files))
    done = WindowDownload()
    for day, folder, files in checked:
        (dest / folder).mkdir(parents=True, exist_ok=True)
        if cache is not None:
            (cache / folder).mkdir(exist_ok=True, mode=0o700)
        for entry in files:
            name, path = entry["name"], f"/admin/logs/{quote(day)}/{quote(entry['name'])}"
            if cache is None:
                done.fetched += client.download(path, dest / folder / name) or 0
                continue
            held = cache / folder / name
            fetched, reused = _bring_up_to_date(client, path, held, _listed_bytes(entry))
            done.fetched += fetched
            done.cached += reused
            _link(held, dest / folder / name)
        if cache is not None:
            os.utime(cache / folder)  # read now: kept from pruning
        done.folders.append(dest / folder)
    return done


def _listed_bytes(entry: dict) -> int:
    size = entry.get("bytes")
    return size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else -1


def _bring_up_to_date(client: ServerClient, path: str, held: Path, listed: int) -> tuple[int, int]:
    """Make ``held`` hold the server's file: (bytes fetched, bytes already held)."""
    grown = held.with_name(held.name + ".grown")
    grown.unlink(missing_ok=True)  # of an update cut off
    have = _whole_lines(held)
    if have and listed == have:
        return 0, have
    if 0 <= listed < have:  # a server's file only grows: this is not the one cached
        have = 0
    if have:
        target = held
        if held.stat().st_nlink > 1:  # a step's window shares it: grow a copy instead
            shutil.copyfile(held, grown)
            target = grown
        # From the held file's last byte, a newline: a server file that differs there
        # is not the one cached (its bytes would not continue a line where it ends).
        fetched = client.download(path, target, start=have - 1)
        if fetched is not None and _ends_line_at(target, have):
            if target is grown:
                grown.replace(held)
            return fetched - 1, have
        # Not the file that was cached (it differs, or ends before what is held), or a
        # server that sent no range: fetched whole.
        grown.unlink(missing_ok=True)
    held.unlink(missing_ok=True)
    return client.download(path, held) or 0, 0


def _ends_line_at(path: Path, size: int) -> bool:
    """Whether ``path``'s first ``size`` bytes end with a newline."""
    with path.open("rb") as handle:
        handle.seek(size - 1)
        return handle.read(1) == b"\n"


def _whole_lines(held: Path) -> int:
    """Bytes of a cached file, 0 for none or for one that does not end a line (an
    update cut off by a crash: fetched again whole rather than trusted)."""
    try:
        size = held.stat().st_size
    except FileNotFoundError:
        return 0
    return size if size and _ends_line_at(held, size) else 0


def _link(held: Path, target: Path) -> None:
    try:
        os.link(held, target)
    except OSError:  # another file system than the cache's
        shutil.copyfile(held, target)


def prune_idle(root: Path) -> list[Path]:
    """Remove the cached days that no window has read for ``CACHE_IDLE_DAYS`` from every
    cache under ``root`` (``<root>/<model>/<server>``: those of servers and models no
    longer used too, which no download would visit again); returns them. A cache whose
    lock another process holds is left for the next time."""
    oldest = time.time() - CACHE_IDLE_DAYS * 86400
    removed = []
    for lock in sorted(root.glob("*/*/.lock")):
        with _locked(lock, wait=False) as held:
            if not held:
                continue
            for folder in sorted(lock.parent.iterdir()):
                if PARTITION.match(folder.name) and folder.stat().st_mtime < oldest:
                    shutil.rmtree(folder, ignore_errors=True)
                    removed.append(folder)
    return removed


@contextmanager
def _locked(path: Path, wait: bool = True) -> Iterator[bool]:
    """The exclusive lock of ``path``; without ``wait``, False when another holds it."""
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
