"""The HTTP surface of the model server (Starlette, served by uvicorn).

Every path needs a secret: ``/predict``, ``/health``, ``/version`` and ``/metrics`` the
prediction key, ``/admin/*`` (the prediction logs under ``/admin/logs`` included) the
admin token that only Airflow holds (both as
``Authorization: Bearer ...``, compared in constant time, never logged). Predictions run
on the event loop, one request at a time per process: scikit-learn's single-row predict
is CPU-bound and short, and one thread keeps the model state, the metrics and the
prediction log free of locks. Work that does not change the answer (shadow scoring, the
paired comparison with stable) runs on the same loop after the response is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from mlops_pack.errors import BadInputError, ServiceUnavailableError
from mlops_pack.iso_time import aware_time
from mlops_pack.model_io import predict
from mlops_pack.serving.model_source import RegistryModels, StagedModels
from mlops_pack.serving.prediction_log import PredictionLog, complete_length, read_span
from mlops_pack.serving.requests import ParsedRequest, RequestError, RequestSchema
from mlops_pack.serving.slots import LoadedModel, Slots
from mlops_pack.serving.telemetry import Telemetry
from mlops_pack.spec import ModelSpec

log = logging.getLogger("mlops_pack.serving")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
RETENTION_EVERY_SECONDS = 3600


@dataclass
class ServerConfig:
    spec: ModelSpec
    models_dir: Path
    state_dir: Path
    log_dir: Path
    admin_token: str
    prediction_key: str
    image: str = ""
    # The MLflow tracking URL: the server fetches versions itself into models_dir (its
    # own folder) instead of loading what the deploy staged there.
    registry_url: str | None = None


class ModelServer:
    """The server's state and handlers; ``app()`` wires them into a Starlette app."""

    def __init__(self, config: ServerConfig) -> None:
        if config.admin_token == config.prediction_key:
            raise BadInputError("the admin token and the prediction key must differ")
        self.config = config
        self.spec = config.spec
        self.serving = config.spec.serving
        if self.serving is None:
            raise BadInputError(f"model {config.spec.name}: the spec has no 'serving' section")
        self.schema = RequestSchema(config.spec, self.serving.max_batch_rows)
        source = (
            RegistryModels(config.spec.name, config.registry_url, config.models_dir)
            if config.registry_url
            else StagedModels(config.models_dir)
        )
        self.slots = Slots(source, config.state_dir / "state.json")
        self.telemetry = Telemetry(config.spec.name)
        self.predictions = PredictionLog(config.log_dir, self.serving.log_retention_days)
        self._admin = config.admin_token.encode()
        self._key = config.prediction_key.encode()

    # Plumbing --------------------------------------------------------------------------
    def _denied(self, request: Request, secret: bytes) -> Response | None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), secret):
            return None
        self.telemetry.refused(401)
        return JSONResponse(
            {"error": "missing or wrong credentials: send 'Authorization: Bearer <secret>'"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    async def _body(self, request: Request) -> bytes:
        """The body, refused with 413 from its declared length before it is read."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.schema.max_body_bytes:
            raise RequestError(
                413, f"body of {declared} bytes exceeds {self.schema.max_body_bytes} bytes"
            )
        return await request.body()

    async def _json(self, request: Request) -> dict[str, Any]:
        try:
            body = json.loads(await self._body(request) or b"{}")
        except (ValueError, RecursionError) as exc:
            raise RequestError(400, f"body is not valid JSON ({str(exc)[:200]})") from None
        if not isinstance(body, dict):
            raise RequestError(400, "body must be a JSON object")
        return body

    def _frame(self, parsed: ParsedRequest) -> pd.DataFrame:
        return pd.DataFrame(parsed.columns, columns=self.schema.names)

    def _flags(self, scores: np.ndarray, parsed: ParsedRequest) -> list[dict[str, Any]]:
        flags: list[dict[str, Any]] = []
        if parsed.input_range_flags:
            flags.append(
                {
                    "kind": "input_range",
                    "detail": parsed.input_range_flags[:20],
                    "count": len(parsed.input_range_flags),
                }
            )
        serving = self.serving
        if serving.prediction_range is not None:
            low, high = serving.prediction_range
            outside = int(((scores < low) | (scores > high)).sum())
            if outside:
                flags.append(
                    {
                        "kind": "prediction_range",
                        "count": outside,
                        "detail": f"{outside} predictions outside [{low}, {high}]",
                    }
                )
        if serving.positive_rate_band is not None and len(scores) >= serving.band_min_rows:
            low, high = serving.positive_rate_band
            rate = float((scores >= serving.threshold).mean())
            if not low <= rate <= high:
                flags.append(
                    {
                        "kind": "positive_rate",
                        "count": 1,
                        "detail": f"batch positive rate {rate:.3f} outside [{low}, {high}]",
                    }
                )
        return flags

    # Public endpoints ------------------------------------------------------------------
    async def predict(self, request: Request) -> Response:
        denied = self._denied(request, self._key)
        if denied:
            return denied
        supplied = request.headers.get("x-request-id", "")
        request_id = supplied if REQUEST_ID.match(supplied) else uuid.uuid4().hex
        if self.slots.stable is None:
            return JSONResponse(
                {
                    "error": "no model is deployed yet; retry after the first deploy",
                    "request_id": request_id,
                },
                status_code=503,
            )
        try:
            parsed = self.schema.parse(await self._body(request))
        except RequestError as exc:
            self.telemetry.refused(exc.status)
            return JSONResponse(
                {"error": exc.message, "request_id": request_id}, status_code=exc.status
            )
        started = time.perf_counter()
        frame = self._frame(parsed)
        slot = self.slots.route()
        served: LoadedModel = self.slots.candidate if slot == "candidate" else self.slots.stable
        try:
            scores = predict(self.spec, served.model, frame)
        except Exception:
            if slot != "candidate":
                raise
            # A failing candidate must not cost the client its answer: count the error
            # against the candidate (the canary check sees it) and answer from stable.
            log.exception(
                "request %s: candidate v%s failed; answered by stable", request_id, served.version
            )
            self.telemetry.observe(served.version, slot, "error", time.perf_counter() - started, [])
            slot, served = "stable", self.slots.stable
            scores = predict(self.spec, served.model, frame)
        seconds = time.perf_counter() - started
        values = scores.tolist()
        self.telemetry.observe(served.version, slot, "ok", seconds, values)
        flags = self._flags(scores, parsed)
        for flag in flags:
            self.telemetry.violation(served.version, flag["kind"], flag["count"])
        if flags:
            log.warning(
                "request %s flagged: %s", request_id, "; ".join(str(f["detail"]) for f in flags)
            )
        body: dict[str, Any] = {
            "request_id": request_id,
            "model": self.spec.name,
            "version": served.version,
            "slot": slot,
            "predictions": values,
        }
        if self.spec.task == "classification":
            negative = next(c for c in self.spec.classes if c != self.spec.positive_class)
            cut = self.serving.threshold
            body["labels"] = [self.spec.positive_class if s >= cut else negative for s in values]
        if flags:
            body["flags"] = flags
        entry = {
            "request_id": request_id,
            "version": served.version,
            "slot": slot,
            "latency_ms": round(seconds * 1000, 3),
            "rows": len(parsed),
            "predictions": values,
            "flags": flags,
            # What the monitor compares with the reference profile, and joins labels on.
            "inputs": parsed.logged_inputs(self.schema.names),
        }
        if parsed.keys is not None:
            entry["keys"] = parsed.keys
        self.predictions.append(entry)
        after = BackgroundTask(self._after, request_id, frame, scores, served, slot)
        return JSONResponse(body, headers={"x-request-id": request_id}, background=after)

    async def _after(
        self,
        request_id: str,
        frame: pd.DataFrame,
        scores: np.ndarray,
        served: LoadedModel,
        slot: str,
    ) -> None:
        """Post-response work: the paired comparison for the canary, shadow scoring.

        A coroutine on purpose: Starlette runs it on the event loop after the answer is
        sent (a plain function would go to a thread pool), so model calls, metrics and
        the prediction log stay on one thread, with no locks.
        """
        stable, candidate = self.slots.stable, self.slots.candidate
        if candidate is None or stable is None:
            return
        if slot == "candidate":
            reference = predict(self.spec, stable.model, frame)
            self.telemetry.observe_pair(candidate.version, (scores - reference).tolist())
        elif self.slots.mode == "shadow":
            started = time.perf_counter()
            try:
                shadow = predict(self.spec, candidate.model, frame)
            except Exception:
                log.exception("request %s: shadow v%s failed", request_id, candidate.version)
                self.telemetry.observe(
                    candidate.version, "shadow", "error", time.perf_counter() - started, []
                )
                return
            seconds = time.perf_counter() - started
            values = shadow.tolist()
            self.telemetry.observe(candidate.version, "shadow", "ok", seconds, values)
            self.telemetry.observe_pair(candidate.version, (shadow - scores).tolist())
            self.predictions.append(
                {
                    "request_id": request_id,
                    "version": candidate.version,
                    "slot": "shadow",
                    "latency_ms": round(seconds * 1000, 3),
                    "predictions": values,
                    "flags": [],
                }
            )

    async def health(self, request: Request) -> Response:
        denied = self._denied(request, self._key)
        if denied:
            return denied
        ready = self.slots.stable is not None
        return JSONResponse(
            {"live": True, "ready": ready, "model": self.spec.name},
            status_code=200 if ready else 503,
        )

    async def version(self, request: Request) -> Response:
        denied = self._denied(request, self._key)
        if denied:
            return denied
        stable = self.slots.stable
        return JSONResponse(
            {
                "model": self.spec.name,
                "version": stable.version if stable else None,
                "artifact_sha256": stable.sha256 if stable else None,
                "image": self.config.image,
                "candidate": self.slots.candidate.ref() if self.slots.candidate else None,
                "mode": self.slots.mode,
            }
        )

    async def metrics(self, request: Request) -> Response:
        denied = self._denied(request, self._key)
        if denied:
            return denied
        slots = {"stable": self.slots.stable, "candidate": self.slots.candidate}
        info = {
            k: {"version": v.version, "sha256": v.sha256[:12]} if v else None
            for k, v in slots.items()
        }
        return Response(self.telemetry.render(info), media_type=CONTENT_TYPE_LATEST)

    # Admin endpoints -------------------------------------------------------------------
    async def admin(self, request: Request) -> Response:
        denied = self._denied(request, self._admin)
        if denied:
            return denied
        action = request.path_params["action"]
        try:
            body = await self._json(request)
            result = await self._admin_action(action, request.method, body)
        except RequestError as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        except BadInputError as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        except ServiceUnavailableError as exc:  # the registry did not answer: try again
            return JSONResponse({"error": str(exc)}, status_code=503)
        return JSONResponse(result)

    async def logs(self, request: Request) -> Response:
        """The prediction log files of a window's days (``start``, ``end``: ISO times with a
        zone): a worker that shares no volume with this server downloads them."""
        denied = self._denied(request, self._admin)
        if denied:
            return denied
        try:
            start, end = (
                aware_time(request.query_params.get(name, ""), name) for name in ("start", "end")
            )
        except BadInputError as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        days = await run_in_threadpool(self.predictions.window_files, start, end)
        return JSONResponse({"model": self.spec.name, "days": days})

    async def log_file(self, request: Request) -> Response:
        """One part file's whole lines, streamed (a day's file can be large). ``Range:
        bytes=N-`` sends them from byte N on (206): a worker that cached the file's start
        fetches only what was appended since. Other range forms get the whole file (200),
        as HTTP allows; N at or past the whole lines' end gets 416."""
        denied = self._denied(request, self._admin)
        if denied:
            return denied
        day, name = request.path_params["day"], request.path_params["name"]
        path = self.predictions.part_file(day, name)
        if path is None:
            return JSONResponse({"error": f"no prediction log {day}/{name}"}, status_code=404)
        length = await run_in_threadpool(complete_length, path)
        headers = {"Accept-Ranges": "bytes"}
        start = _open_range_start(request.headers.get("range", ""))
        if start is not None and start >= length:
            headers["Content-Range"] = f"bytes */{length}"
            return Response(status_code=416, headers=headers)
        if start is not None:
            headers["Content-Range"] = f"bytes {start}-{length - 1}/{length}"
        begin = start or 0
        headers["Content-Length"] = str(length - begin)
        return StreamingResponse(
            read_span(path, begin, length),
            status_code=206 if start is not None else 200,
            media_type="application/x-ndjson",
            headers=headers,
        )

    async def _admin_action(self, action: str, method: str, body: dict[str, Any]) -> Any:
        slots = self.slots
        if (action, method) == ("candidate", "POST"):
            loaded = await run_in_threadpool(
                slots.load, body.get("version", ""), body.get("sha256", "")
            )
            slots.set_candidate(loaded)
            self.telemetry.reset_stats()
            log.info("candidate slot: v%s loaded", loaded.version)
        elif (action, method) == ("candidate", "DELETE"):
            dropped = slots.drop_candidate()
            log.info("candidate slot: v%s dropped", dropped)
        elif (action, method) == ("traffic", "PUT"):
            share = body.get("share", 0.0)
            if isinstance(share, bool) or not isinstance(share, int | float):
                raise BadInputError(f"share must be a number in [0, 1], got {share!r}")
            slots.set_traffic(str(body.get("mode", "")), float(share))
            log.info("traffic: mode %s, share %s", slots.mode, slots.share)
        elif (action, method) == ("score", "POST"):
            return self._score(body)
        elif (action, method) == ("stats", "GET"):
            return {
                "slots": slots.describe(),
                "versions": {v: s.summary() for v, s in self.telemetry.stats.items()},
                "model_source": slots.source.name,
            }
        elif (action, method) == ("promote", "POST"):
            outcome = slots.promote(str(body.get("version", "")))
            log.info("promote: %s", outcome)
            return {**outcome, "slots": slots.describe()}
        elif (action, method) == ("rollback", "POST"):
            target = body or slots.previous
            if not target:
                raise BadInputError("nothing to roll back to: no previous stable version")
            loaded = await run_in_threadpool(
                slots.load, target.get("version", ""), target.get("sha256", "")
            )
            outcome = slots.replace_stable(loaded)
            log.info("stable set to v%s: %s", loaded.version, outcome["outcome"])
            return {**outcome, "slots": slots.describe()}
        else:
            raise RequestError(404, f"no admin action {method} /admin/{action}")
        return {"slots": slots.describe()}

    def _score(self, body: dict[str, Any]) -> dict[str, Any]:
        """Score rows with one slot, outside traffic, logs and metrics (the smoke test)."""
        slot = body.get("slot")
        slots = {"stable": self.slots.stable, "candidate": self.slots.candidate}
        model = slots.get(slot) if isinstance(slot, str) else None
        if model is None:
            raise BadInputError(f"slot must be 'stable' or 'candidate' and loaded, got {slot!r}")
        parsed = self.schema.parse_rows(body.get("rows"))
        started = time.perf_counter()
        scores = predict(self.spec, model.model, self._frame(parsed))
        return {
            "version": model.version,
            "predictions": scores.tolist(),
            "seconds": time.perf_counter() - started,
        }

    # Lifecycle -------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette):
        await run_in_threadpool(self.slots.source.warm)
        await run_in_threadpool(self.slots.restore)
        if self.slots.stable:
            log.info("serving stable v%s from state.json", self.slots.stable.version)
        task = asyncio.create_task(self._retention_loop())
        try:
            yield
        finally:
            task.cancel()
            self.predictions.close()

    async def _retention_loop(self) -> None:
        while True:
            try:
                removed = self.predictions.enforce_retention()
            except OSError as exc:  # keep serving; the next round tries again
                log.error("prediction log retention failed: %s", exc)
            else:
                if removed:
                    log.info("prediction log retention removed %s", removed)
            await asyncio.sleep(RETENTION_EVERY_SECONDS)

    def app(self) -> Starlette:
        routes = [
            Route("/predict", self.predict, methods=["POST"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/version", self.version, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Route("/admin/logs", self.logs, methods=["GET"]),
            Route("/admin/logs/{day}/{name}", self.log_file, methods=["GET"]),
            Route("/admin/{action}", self.admin, methods=["GET", "POST", "PUT", "DELETE"]),
        ]
        return Starlette(routes=routes, lifespan=self.lifespan)


_OPEN_RANGE = re.compile(r"^bytes=(\d{1,18})-$")


def _open_range_start(header: str) -> int | None:
    """N of ``Range: bytes=N-`` (the one form a log reader sends), None for no header or
    any other form."""
    match = _OPEN_RANGE.match(header.strip())
    return int(match.group(1)) if match else None
