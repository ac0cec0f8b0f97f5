"""A model server's log listing that the worker cannot trust: answers no real server
gives (the real routes are tested in tests/serving/test_model_server.py), served over
real HTTP by a stand-in that answers every request with one fixed body."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from mlops_pack.errors import ServiceUnavailableError
from mlops_pack.served_logs import download_window
from mlops_pack.server_client import ServerClient

END = datetime(2026, 1, 2, tzinfo=UTC)


@pytest.fixture
def answering() -> Iterator:
    """A server on a free port whose every GET answers 200 with ``body`` as JSON."""
    started: list[ThreadingHTTPServer] = []

    def serve(body) -> ServerClient:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # quiet
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
        return ServerClient(f"http://127.0.0.1:{server.server_port}", "token", retries=0)

    yield serve
    for server in started:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    "listing",
    [["date=2026-01-01"], {"model": "churn"}, {"days": "all"}, {"days": [{"day": "2026-01-01"}]}],
)
def test_a_listing_that_is_not_days_with_files_is_refused(answering, tmp_path, listing):
    with pytest.raises(ServiceUnavailableError, match="its log listing is not a list of days"):
        download_window(answering(listing), END - timedelta(days=1), END, tmp_path / "logs")
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize(
    "day, name",
    [("2026-01-01", "../../escaped.jsonl"), ("../..", "part-1.jsonl"), ("2026-01-01", 7)],
)
def test_names_outside_the_layout_are_refused_before_anything_is_written(
    answering, tmp_path, day, name
):
    listing = {"days": [{"day": day, "files": [{"name": name, "bytes": 10}]}]}
    with pytest.raises(ServiceUnavailableError, match="which are not prediction log files"):
        download_window(answering(listing), END - timedelta(days=1), END, tmp_path / "logs")
    assert list(tmp_path.rglob("*")) == []
