"""Pushing a monitor window's metrics to a Prometheus Pushgateway.

The monitor is a batch job: Prometheus cannot scrape it, so its ``metrics.prom`` (the
text format, written by ``prometheus_client``) is pushed to a Pushgateway that
Prometheus scrapes. Each model's window replaces the previous one (a PUT to the model's
group), so the gateway holds the newest window per model and the dashboards' drift row
shows it. The Airflow worker pushes (the step container reaches only MLflow); urllib3
retries a connection failure or a 5xx a few times. Standard library and urllib3 only:
the workers import it without the step world.
"""

from __future__ import annotations

import urllib.parse

import urllib3
from urllib3.util.retry import Retry

from mlops_pack.errors import ServiceUnavailableError

JOB = "mlops_pack_monitor"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def group_url(gateway: str, model: str) -> str:
    """The Pushgateway group of ``model``'s monitor metrics."""
    quoted = urllib.parse.quote(model, safe="")
    return f"{gateway.rstrip('/')}/metrics/job/{JOB}/model/{quoted}"


def push(gateway: str, model: str, body: bytes, timeout: float = 10.0) -> None:
    """Replace ``model``'s group with ``body``; ServiceUnavailableError when the gateway
    did not take it (the message names the gateway, never a secret: it has none)."""
    if not gateway.startswith(("http://", "https://")):
        raise ValueError(f"Pushgateway URL must be http(s), got {gateway!r}")
    retry = Retry(
        total=3,
        connect=3,
        read=0,
        status=3,
        status_forcelist=(502, 503, 504),
        allowed_methods=("PUT",),  # a PUT of the same group is idempotent
        backoff_factor=0.3,
        raise_on_status=False,
    )
    url = group_url(gateway, model)
    try:
        answer = urllib3.PoolManager().request(
            "PUT",
            url,
            body=body,
            headers={"Content-Type": CONTENT_TYPE},
            timeout=urllib3.Timeout(total=timeout),
            retries=retry,
        )
    except urllib3.exceptions.HTTPError as exc:
        raise ServiceUnavailableError(f"Pushgateway {url}: no answer ({exc})") from exc
    if not 200 <= answer.status < 300:
        text = answer.data.decode("utf-8", "replace")[:300]
        raise ServiceUnavailableError(f"Pushgateway {url}: HTTP {answer.status}: {text}")
