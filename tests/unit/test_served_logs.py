"""A model server's log listing that the worker cannot trust: answers no real server
gives (the real routes are tested in tests/serving/test_model_server.py), served over
real HTTP by a stand-in that answers every request with one fixed body
(``support.Answering``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from mlops_pack.errors import ServiceUnavailableError
from mlops_pack.served_logs import _bring_up_to_date, download_window
from mlops_pack.server_client import ServerClient

END = datetime(2026, 1, 2, tzinfo=UTC)


def _client(answering, listing) -> ServerClient:
    return ServerClient(answering(200, listing).url, "token", retries=0)


@pytest.mark.parametrize(
    "listing",
    [["date=2026-01-01"], {"model": "churn"}, {"days": "all"}, {"days": [{"day": "2026-01-01"}]}],
)
def test_a_listing_that_is_not_days_with_files_is_refused(answering, tmp_path, listing):
    with pytest.raises(ServiceUnavailableError, match="its log listing is not a list of days"):
        download_window(
            _client(answering, listing), END - timedelta(days=1), END, tmp_path / "logs"
        )
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
        download_window(
            _client(answering, listing), END - timedelta(days=1), END, tmp_path / "logs"
        )
    assert list(tmp_path.rglob("*")) == []


def test_bytes_from_another_offset_than_asked_are_never_written(answering, tmp_path):
    """Appended to a cached file, bytes that do not start where it ends would corrupt
    it: a download from an offset takes only a 206 that says it starts there."""
    headers = {"Content-Range": "bytes 0-9/10"}
    client = ServerClient(answering(206, {"x": 1}, headers).url, "token", retries=0)
    held = tmp_path / "part-1.jsonl"
    held.write_bytes(b"{}\n{}\n"[:5])
    with pytest.raises(ServiceUnavailableError, match="answered Content-Range 'bytes 0-9/10'"):
        client.download("/admin/logs/2026-01-01/part-1.jsonl", held, start=5)
    assert held.read_bytes() == b"{}\n{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part-1.jsonl"]


def test_a_server_that_ignores_ranges_gets_the_file_fetched_whole(answering, tmp_path):
    """A server older than ranges (or a proxy that drops them) answers 200 with the
    whole file: nothing of it is read or written at the offset, and the cache fetches
    the file whole instead, without failing the window."""
    lines = [{"request_id": "a"}, {"request_id": "b"}]
    server = answering(200, lines)  # its one body: a stand-in for a whole file
    client = ServerClient(server.url, "token", retries=0)
    held = tmp_path / "part-1.jsonl"
    held.write_bytes(b'{"request_id": "a"}\n')
    path = "/admin/logs/2026-01-01/part-1.jsonl"
    assert client.download(path, held, start=20) is None
    assert held.read_bytes() == b'{"request_id": "a"}\n'
    whole = json.dumps(lines).encode()  # what this stand-in sends for every request
    assert _bring_up_to_date(client, path, held, listed=-1) == (len(whole), 0)
    assert held.read_bytes() == whole
    assert [p.name for p in tmp_path.iterdir()] == ["part-1.jsonl"]


def test_a_range_cut_off_mid_transfer_leaves_the_file_as_it_was(tmp_path):
    """A connection that dies inside the appended bytes (a fault the real server cannot
    be made to show): the cached file is truncated back to the bytes it held."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))

    def answer_then_hang_up() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 5-99/100\r\n"
                     b"Content-Length: 95\r\n\r\n" + b'{"half": ')  # fmt: skip
        conn.close()

    threading.Thread(target=answer_then_hang_up, daemon=True).start()
    held = tmp_path / "part-1.jsonl"
    held.write_bytes(b"{}\n{}\n"[:5])
    client = ServerClient(f"http://127.0.0.1:{listener.getsockname()[1]}", "token", retries=0)
    try:
        with pytest.raises(ServiceUnavailableError, match="transfer cut off"):
            client.download("/admin/logs/2026-01-01/part-1.jsonl", held, start=5)
    finally:
        listener.close()
    assert held.read_bytes() == b"{}\n{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part-1.jsonl"]
