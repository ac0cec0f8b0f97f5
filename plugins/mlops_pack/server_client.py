"""The model server's HTTP client, shared by the steps, the Airflow world and the CLI.

Built on urllib3 (connection reuse, and its ``Retry`` policy) so that a transient fault
is retried here and only a lasting one reaches the caller, classified:

* no connection, or a 5xx that outlived the retries (a server restarting answers 503):
  ``ServiceUnavailableError``, exit 1, retried by Airflow;
* a 4xx: ``ServerRefusedError``, a ``BadInputError`` (the request is wrong; a retry
  would repeat it).

Status retries apply to idempotent methods only (GET, PUT, DELETE): a POST that reached
the server is never sent twice. Connection failures (nothing was sent) are retried for
every method. Secrets travel only in the ``Authorization`` header and never appear in an
exception message. An https server is verified against ``MLOPS_PACK_SERVER_CA`` (a
private CA's PEM bundle) when that is set, else against the system's trust store.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, NoReturn

import urllib3
from urllib3.util.retry import Retry

from mlops_pack.ca_bundles import SERVER_CA_VARIABLE, server_ca
from mlops_pack.errors import BadInputError, ServerRefusedError, ServiceUnavailableError

RETRY_STATUSES = frozenset({502, 503, 504})
IDEMPOTENT = frozenset({"GET", "PUT", "DELETE"})
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


class ServerClient:
    def __init__(
        self, url: str, secret: str, timeout: float = 30.0, retries: int = 3, backoff: float = 0.3
    ) -> None:
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        if scheme not in ("http", "https"):
            raise ValueError(f"model server URL must be http(s), got {url!r}")
        self.url = url.rstrip("/")
        _refuse_plain_http_beside_a_ca(scheme, self.url)
        self._secret = secret
        self.timeout = timeout
        self._retry = Retry(
            total=retries,
            connect=retries,
            read=0,  # a request the server may have acted on is not repeated blindly
            status=retries,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=IDEMPOTENT,
            backoff_factor=backoff,
            raise_on_status=False,  # the last answer is returned and classified below
            respect_retry_after_header=True,
        )
        # An https server is verified against the model servers' CA when one is named
        # (MLOPS_PACK_SERVER_CA: a private CA), else against the system's trust store.
        ca = server_ca() if scheme == "https" else None
        self._pool = urllib3.PoolManager(maxsize=4, **({"ca_cert_data": ca} if ca else {}))

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        retry: bool = True,
        timeout: float | None = None,
    ) -> tuple[int, Any, dict[str, str]]:
        """One request; returns (status, decoded body, headers) for any HTTP answer.
        ``timeout`` overrides the client's for a request that may take long (a load).

        Raises ``ServiceUnavailableError`` when no answer came (after the retries).
        """
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        sent = {
            "Authorization": f"Bearer {self._secret}",
            "Content-Type": "application/json",
            **(headers or {}),
        }
        try:
            response = self._pool.request(
                method,
                self.url + path,
                body=data,
                headers=sent,
                timeout=urllib3.Timeout(total=timeout or self.timeout),
                retries=self._retry if retry else False,
                redirect=False,
            )
        except urllib3.exceptions.HTTPError as exc:
            _raise_unanswered(self.url, f"{method} {path}", exc)
        return response.status, _decode(response.data), dict(response.headers)

    def ok(self, method: str, path: str, body: Any = None, timeout: float | None = None) -> Any:
        """The decoded body of a 200; any other answer raises, classified (see module doc)."""
        status, payload, _ = self.call(method, path, body, timeout=timeout)
        if status == 200:
            return payload
        self._raise_for(method, path, status, payload)

    def download(
        self, path: str, dest: Path, timeout: float | None = None, start: int = 0
    ) -> int | None:
        """A GET whose body is streamed into ``dest`` (a large file never sits in
        memory); returns its bytes. The body is written beside ``dest`` and renamed once
        complete, so a cut transfer leaves nothing. Other answers raise as in ``ok``;
        ``timeout`` bounds each read, not the whole transfer.

        ``start`` > 0 asks for the bytes from that offset on (``Range``, taken only as a
        206 from exactly there) and writes them into ``dest`` from that offset: ``dest``
        holds the file's first ``start`` bytes, and a cut transfer truncates it back to
        them. None, with nothing read, when the server did not send from ``start``: its
        file ends before (416), or it ignores ranges and sends the whole file (200, as
        HTTP allows; a server older than ranges does)."""
        headers = {"Authorization": f"Bearer {self._secret}"}
        if start:
            headers["Range"] = f"bytes={start}-"
        try:
            response = self._pool.request(
                "GET",
                self.url + path,
                headers=headers,
                timeout=urllib3.Timeout(connect=self.timeout, read=timeout or self.timeout),
                retries=self._retry,
                redirect=False,
                preload_content=False,
            )
        except urllib3.exceptions.HTTPError as exc:
            _raise_unanswered(self.url, f"GET {path}", exc)
        partial = dest.with_name(dest.name + ".partial")
        try:
            if start and response.status in (200, 416):
                response.close()  # a whole file's body is not read, nor left in the pool
                return None
            expected = 206 if start else 200
            if response.status != expected:  # an error's body, not a log file's
                self._raise_for("GET", path, response.status, _decode(response.read(4096)))
            sent = str(response.headers.get("Content-Range", ""))
            if start and not sent.startswith(f"bytes {start}-"):  # bytes from elsewhere
                raise ServiceUnavailableError(
                    f"model server at {self.url}: GET {path} from byte {start}: answered "
                    f"Content-Range {sent!r}"
                )
            written = 0
            with dest.open("r+b") if start else partial.open("wb") as out:
                out.truncate(start)
                out.seek(start)
                for chunk in response.stream(1 << 20):
                    out.write(chunk)
                    written += len(chunk)
        except BaseException as exc:
            if start:  # ``dest`` holds its first ``start`` bytes again
                os.truncate(dest, start)
            partial.unlink(missing_ok=True)
            if isinstance(exc, urllib3.exceptions.HTTPError):  # cut off mid-body
                raise ServiceUnavailableError(
                    f"model server at {self.url}: GET {path}: transfer cut off ({_reason(exc)})"
                ) from None
            raise
        finally:
            response.release_conn()
        if not start:
            partial.replace(dest)
        return written

    def _raise_for(self, method: str, path: str, status: int, payload: Any) -> NoReturn:
        message = payload.get("error") if isinstance(payload, dict) else payload
        what = f"model server at {self.url}: {method} {path}: HTTP {status}: {message}"
        if 400 <= status < 500:
            raise ServerRefusedError(status, what, {"http_status": status})
        raise ServiceUnavailableError(what, {"http_status": status})

    def wait_ready(self, timeout: float) -> dict[str, Any]:
        """Poll ``/health`` until it answers 200 or 503 (up, maybe with no model yet)."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            try:
                status, payload, _ = self.call("GET", "/health", retry=False)
            except ServiceUnavailableError as exc:
                last = str(exc)
            else:
                if status in (200, 503):
                    return payload
                if 400 <= status < 500:
                    raise ServerRefusedError(
                        status, f"model server at {self.url}: GET /health: HTTP {status}"
                    )
                last = f"GET /health: HTTP {status}"
            time.sleep(0.25)
        raise ServiceUnavailableError(
            f"model server at {self.url} did not answer within {timeout:.0f} s ({last})"
        )


def _refuse_plain_http_beside_a_ca(scheme: str, url: str) -> None:
    """With MLOPS_PACK_SERVER_CA set the servers answer HTTPS: an http:// URL to another
    host (a Connection without ``"schema": "https"``) would send the token in the clear
    before the server dropped the request, so it is refused before anything is sent."""
    host = (urllib3.util.parse_url(url).host or "").strip("[]").lower()
    if scheme == "http" and os.environ.get(SERVER_CA_VARIABLE) and host not in LOOPBACK:
        raise BadInputError(
            f"model server URL {url} is plain HTTP while {SERVER_CA_VARIABLE} is set (the "
            "servers answer HTTPS): the token would cross the network in the clear. Fix: "
            'give the server\'s Airflow Connection "schema": "https" (or an https:// URL)',
            {"rule": "server_plain_http", "url": url},
        )


def _raise_unanswered(url: str, request: str, exc: Exception) -> NoReturn:
    """No answer from the server. A certificate it was refused for cannot pass on a
    retry: that is bad input, with what to set; anything else may (503, retried)."""
    reason = getattr(exc, "reason", None) or exc
    said = _reason(exc)
    if isinstance(reason, urllib3.exceptions.SSLError) and "CERTIFICATE_VERIFY_FAILED" in said:
        if os.environ.get(SERVER_CA_VARIABLE):
            fix = (
                f"{SERVER_CA_VARIABLE} names a CA that did not sign this server's "
                "certificate, or the certificate does not name the host in the URL. Fix: "
                "name the CA that signed it, or reach the server by a name its certificate "
                "carries"
            )
        else:
            fix = (
                f"Fix: when a private CA signed the server's certificate, set "
                f"{SERVER_CA_VARIABLE} to that CA's PEM file"
            )
        raise BadInputError(
            f"model server at {url} refused for {request}: its certificate did not verify "
            f"({said}). {fix}",
            {"rule": "server_certificate", "url": url},
        )
    raise ServiceUnavailableError(f"model server at {url} did not answer {request} ({said})")


def _reason(exc: Exception) -> str:
    """The underlying cause of a urllib3 failure, without the URL's query or headers."""
    reason = getattr(exc, "reason", None) or exc
    return f"{type(reason).__name__}: {reason}"


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")
