"""Pushing a monitor window's metrics to a Prometheus Pushgateway.

The monitor is a batch job: Prometheus cannot scrape it, so its ``metrics.prom`` (the
text format, written by ``prometheus_client``) is pushed to a Pushgateway that
Prometheus scrapes. Each model's window replaces the previous one (a PUT to the model's
group), so the gateway holds the newest window per model and the dashboards' drift row
shows it. The Airflow worker pushes (the step container reaches only MLflow); urllib3
retries a connection failure or a 5xx a few times. Standard library and urllib3 only:
the workers import it without the step world.

A gateway that takes pushes only with a password (the compose stacks': basic
authentication, written by ``mlops-pack stack init``) gets it from
``MLOPS_PACK_PUSHGATEWAY_PASSWORD`` (user ``MLOPS_PACK_PUSHGATEWAY_USER``, default
``mlops-pack``) in the worker's environment; it goes into the request header only.
"""

from __future__ import annotations

import os
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


def credentials_from_env() -> tuple[str, str] | None:
    """(user, password) for the gateway from the environment; None when no password is set."""
    password = os.environ.get("MLOPS_PACK_PUSHGATEWAY_PASSWORD", "")
    if not password:
        return None
    return os.environ.get("MLOPS_PACK_PUSHGATEWAY_USER", "") or "mlops-pack", password


def push(
    gateway: str,
    model: str,
    body: bytes,
    timeout: float = 10.0,
    credentials: tuple[str, str] | None = None,
) -> None:
    """Replace ``model``'s group with ``body``, as ``credentials`` (user, password) when
    given; ServiceUnavailableError when the gateway did not take it (the message names
    the gateway and the variables to set, never the password)."""
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
    headers = {"Content-Type": CONTENT_TYPE}
    if credentials:
        headers.update(urllib3.make_headers(basic_auth=":".join(credentials)))
    try:
        answer = urllib3.PoolManager().request(
            "PUT",
            url,
            body=body,
            headers=headers,
            timeout=urllib3.Timeout(total=timeout),
            retries=retry,
        )
    except urllib3.exceptions.HTTPError as exc:
        raise ServiceUnavailableError(f"Pushgateway {url}: no answer ({exc})") from exc
    if answer.status in (401, 403):
        given = "the password it was given" if credentials else "no password"
        raise ServiceUnavailableError(
            f"Pushgateway {url}: HTTP {answer.status}: it refused {given}. Fix: set "
            "MLOPS_PACK_PUSHGATEWAY_PASSWORD (and MLOPS_PACK_PUSHGATEWAY_USER if not "
            "mlops-pack) on the workers to the gateway's password (PUSHGATEWAY_PASSWORD in "
            "the stack's .env)"
        )
    if not 200 <= answer.status < 300:
        text = answer.data.decode("utf-8", "replace")[:300]
        raise ServiceUnavailableError(f"Pushgateway {url}: HTTP {answer.status}: {text}")
