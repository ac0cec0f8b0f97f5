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
    folders, total = [], 0
    for day in listing.get("days", []) if isinstance(listing, dict) else []:
        folder = dest / f"date={day.get('day')}"
        names = [f.get("name", "") for f in day.get("files", [])]
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
