"""A model server's log listing that the worker cannot trust: answers no real server
gives (the real routes are tested in tests/serving/test_model_server.py), served over
real HTTP by a stand-in that answers every request with one fixed body
(``support.Answering``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from mlops_pack.errors import ServiceUnavailableError
from mlops_pack.served_logs import download_window
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
