"""A window's prediction logs, downloaded from the model server that wrote them.

The monitor and the labelled batch read a served model's prediction logs. A worker on
the server's host can read them from the server's volume; a worker on another host
cannot, so it downloads the window's days through the server's admin API (the admin
token it already holds for deploys) into a folder of the same layout
(``date=YYYY-MM-DD/part-*.jsonl``), which the operator copies into the step. The server
sends whole lines only. Names in the server's listing are checked against the layout
before anything is written: an answer cannot place a file outside ``dest``.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from urllib.parse import quote, urlencode

from mlops_pack.errors import ServiceUnavailableError
from mlops_pack.feed_layout import PART_FILE, PARTITION
from mlops_pack.server_client import ServerClient


def download_window(
    client: ServerClient, start: datetime, end: datetime, dest: Path
) -> tuple[list[Path], int]:
    """The day folders of [start, end) under ``dest``, downloaded, and their bytes."""
    query = urlencode({"start": start.isoformat(), "end": end.isoformat()})
    listing = client.ok("GET", f"/admin/logs?{query}")
    days = listing.get("days") if isinstance(listing, dict) else None
    if not isinstance(days, list) or not all(
        isinstance(day, dict) and isinstance(day.get("files"), list) for day in days
    ):  # an answer we cannot read must not pass for a window without requests
        raise ServiceUnavailableError(
            f"model server at {client.url}: its log listing is not a list of days with "
            f"their files: {str(listing)[:200]}"
        )
    folders, total = [], 0
    for day in days:
        folder = dest / f"date={day.get('day')}"
        names = [f.get("name", "") if isinstance(f, dict) else "" for f in day["files"]]
        bad = [n for n in names if not PART_FILE.match(str(n))]
        if bad or not PARTITION.match(folder.name):
            raise ServiceUnavailableError(
                f"model server at {client.url}: its log listing names {folder.name}/{bad}, "
                "which are not prediction log files (date=YYYY-MM-DD/part-*.jsonl)"
            )
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            path = f"/admin/logs/{quote(day['day'])}/{quote(name)}"
            total += client.download(path, folder / name)
        folders.append(folder)
    return folders, total
