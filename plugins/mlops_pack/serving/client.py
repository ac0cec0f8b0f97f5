"""A small HTTP client for the model server (standard library only).

The deploy and rollback steps, ``make up`` and the tests use it. Secrets travel only in
the ``Authorization`` header and never appear in an exception message.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any


class ServerError(Exception):
    """The server answered with an error status; ``status`` and ``body`` say which."""

    def __init__(self, status: int, body: Any, what: str) -> None:
        message = body.get("error") if isinstance(body, dict) else body
        super().__init__(f"{what}: HTTP {status}: {message}")
        self.status = status
        self.body = body


class ServerClient:
    def __init__(self, url: str, secret: str, timeout: float = 30.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"model server URL must be http(s), got {url!r}")
        self.url = url.rstrip("/")
        self._secret = secret
        self.timeout = timeout

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, dict[str, str]]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        request = urllib.request.Request(self.url + path, data=data, method=method)  # noqa: S310
        request.add_header("Authorization", f"Bearer {self._secret}")
        request.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return response.status, _decode(response.read()), dict(response.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, _decode(exc.read()), dict(exc.headers)

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, payload, _ = self.call(method, path, body)
        if status != 200:
            raise ServerError(status, payload, f"{method} {path}")
        return payload

    def wait_ready(self, timeout: float) -> dict[str, Any]:
        """Poll ``/health`` until it answers 200 or 503 (up, maybe with no model yet)."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                status, payload, _ = self.call("GET", "/health")
                if status in (200, 503):
                    return payload
                raise ServerError(status, payload, "GET /health")
            except OSError as exc:
                last = exc
            time.sleep(0.25)
        raise TimeoutError(
            f"model server at {self.url} did not answer within {timeout:.0f} s ({last})"
        )


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")
