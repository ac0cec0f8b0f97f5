"""Deploy: the challenger into the server's candidate slot, a smoke test, then a canary.

Nothing here touches the ``champion`` alias or the stable slot: the switch of both
happens in the promote step, under the model's lock (``decide.promote``). Any failed
check drops the candidate (stable never stopped serving), tags the challenger version
as rejected with the reason, records the deploy and raises ``DeployFailedError``.

Checks, in order (each recorded with its figures):

* ``ready``: the server answers within ``serving.smoke.ready_timeout_seconds``;
* ``load``: the candidate loads (sha256, skops format, reviewed types: as in training);
* ``offline_match``: the served scores of the evaluation's holdout rows equal the
  offline scores within ``serving.smoke.tolerance``;
* ``smoke_latency_p95``: single-row requests answer within the spec's latency budget;
* ``smoke_errors``: no request of the smoke test failed;
* canary (when a stable model exists): ``canary_traffic`` (enough candidate-scored
  requests within ``max_seconds``), ``canary_error_rate``, ``canary_latency``
  (within the budget and ``max_latency_ratio`` times stable's p95),
  ``canary_prediction_shift`` (mean of candidate - stable on the same rows) and
  ``canary_client_errors`` (no client saw a failed request).

Every way out of a deploy that is not "ready to switch" (a failed check, an error, the
server going away, SIGTERM from ``docker stop`` or a timeout) leaves the server in its
safe state: canary traffic off and the candidate dropped (``finally`` in ``run``).
Server answers are classified by the shared client: a 4xx is bad input, no answer or a
5xx is ``ServiceUnavailableError`` (retried).
"""

from __future__ import annotations

import itertools
import json
import sys
import time
import uuid
from typing import Any

from mlops_pack.errors import (
    BadInputError,
    DeployFailedError,
    ServerRefusedError,
    ServiceUnavailableError,
    UntrustedArtifactError,
)
from mlops_pack.percentile import percentile
from mlops_pack.records import write_json
from mlops_pack.registry import TAG
from mlops_pack.server_client import ServerClient
from mlops_pack.spec import Serving
from mlops_pack.steps.context import StepContext
from mlops_pack.steps.served import LOAD_TIMEOUT_S, ServedSwitch

DEPLOY = "deploy.json"


class _CheckFailed(Exception):
    pass


class Deployment:
    def __init__(self, ctx: StepContext, admin: ServerClient, public: ServerClient) -> None:
        if ctx.spec.serving is None:
            raise BadInputError(f"model {ctx.spec.name}: the spec has no 'serving' section")
        self.ctx = ctx
        self.serving: Serving = ctx.spec.serving
        self.admin, self.public = admin, public
        self.switch = ServedSwitch(admin, ctx.registry, ctx.spec.name)
        self.checks: list[dict[str, Any]] = []
        self._safe = False

    def check(self, name: str, passed: bool, detail: str, **figures: Any) -> None:
        self.checks.append({"name": name, "passed": bool(passed), "detail": detail, **figures})
        if not passed:
            raise _CheckFailed(f"{name}: {detail}")

    # Smoke test ------------------------------------------------------------------------
    def smoke(self, sample: dict[str, Any]) -> None:
        smoke = self.serving.smoke
        rows, expected = sample["rows"], sample["predictions"]
        served: list[float] = []
        errors = 0
        size = self.serving.max_batch_rows
        for start in range(0, len(rows), size):
            try:
                body = self.admin.ok(
                    "POST",
                    "/admin/score",
                    {"slot": "candidate", "rows": rows[start : start + size]},
                )
            except ServerRefusedError as exc:
                self.check("offline_match", False, f"scoring holdout rows failed: {exc}")
            served += body["predictions"]
        worst = max(abs(a - b) for a, b in zip(served, expected, strict=True))
        self.check(
            "offline_match",
            worst <= smoke.tolerance,
            f"max |served - offline| = {worst:.3g} on {len(rows)} holdout rows "
            f"(tolerance {smoke.tolerance:g})",
            max_abs_diff=worst,
            rows=len(rows),
        )
        timings = []
        for row in itertools.islice(itertools.cycle(rows), smoke.latency_requests):
            started = time.perf_counter()
            status, _, _ = self.admin.call(
                "POST", "/admin/score", {"slot": "candidate", "rows": [row]}
            )
            timings.append((time.perf_counter() - started) * 1000)
            errors += status != 200
        p95 = percentile(timings, 95)
        budget = self.serving.latency_budget_ms_p95
        self.check(
            "smoke_latency_p95",
            p95 <= budget,
            f"single-row p95 {p95:.1f} ms over {len(timings)} requests (budget {budget:g} ms)",
            p95_ms=round(p95, 3),
        )
        self.check("smoke_errors", errors == 0, f"{errors} failed smoke requests", errors=errors)

    # Canary ----------------------------------------------------------------------------
    def canary(self, sample: dict[str, Any], version: str, stable: str) -> None:
        canary = self.serving.canary
        self.admin.ok("PUT", "/admin/traffic", {"mode": canary.mode, "share": canary.share})
        rows = itertools.cycle(sample["rows"])
        deadline = time.monotonic() + canary.max_seconds
        client_errors = sent = 0
        figures: dict[str, Any] = {}
        while time.monotonic() < deadline:
            if canary.synthetic_traffic:
                for _ in range(20):
                    status, _, _ = self.public.call(
                        "POST",
                        "/predict",
                        {"rows": [next(rows)]},
                        headers={"X-Request-Id": f"canary-{uuid.uuid4().hex}"},
                    )
                    sent += 1
                    client_errors += status != 200
            else:
                time.sleep(1.0)
            figures = self.admin.ok("GET", "/admin/stats")["versions"]
            if figures.get(version, {}).get("requests", 0) >= canary.requests:
                break
        self.admin.ok("PUT", "/admin/traffic", {"mode": "off", "share": 0.0})
        mine, theirs = figures.get(version, {}), figures.get(stable, {})
        seen = mine.get("requests", 0)
        self.check(
            "canary_traffic",
            seen >= canary.requests,
            f"{seen} candidate-scored requests of {canary.requests} needed within "
            f"{canary.max_seconds:g} s ({sent} synthetic requests sent)",
            requests=seen,
        )
        self.check(
            "canary_client_errors",
            client_errors == 0,
            f"{client_errors} of {sent} requests failed for the client",
            client_errors=client_errors,
        )
        rate = mine.get("error_rate", 0.0)
        self.check(
            "canary_error_rate",
            rate <= canary.max_error_rate,
            f"candidate error rate {rate:.3%} (max {canary.max_error_rate:.3%})",
            error_rate=rate,
        )
        p95, base = mine.get("latency_ms_p95"), theirs.get("latency_ms_p95")
        budget = self.serving.latency_budget_ms_p95
        limit = budget if base is None else min(budget, canary.max_latency_ratio * base)
        self.check(
            "canary_latency",
            p95 is not None and p95 <= limit,
            f"candidate p95 {p95} ms, stable p95 {base} ms (limit {limit:.1f} ms: "
            f"budget {budget:g} ms, ratio {canary.max_latency_ratio:g})",
            candidate_p95_ms=p95,
            stable_p95_ms=base,
        )
        shift = mine.get("mean_shift")
        self.check(
            "canary_prediction_shift",
            shift is not None and abs(shift) <= canary.max_mean_shift,
            f"mean (candidate - stable) {shift} on {mine.get('paired_rows', 0)} shared rows "
            f"(max |shift| {canary.max_mean_shift:g}; mean |difference| per row "
            f"{mine.get('mean_abs_diff')})",
            mean_shift=shift,
            mean_abs_diff=mine.get("mean_abs_diff"),
        )

    # The whole deploy ------------------------------------------------------------------
    def run(self, challenger_version: str, smoke_sample_location: str) -> dict[str, Any]:
        ctx, name = self.ctx, self.ctx.spec.name
        started = time.perf_counter()
        version = ctx.registry.version(name, challenger_version)
        record: dict[str, Any] = {
            "schema": "mlops_pack.deploy/1",
            "model": name,
            "version": version.version,
            "server": self.admin.url,
            "checks": self.checks,
            "dag_run_id": ctx.dag_run_id,
        }
        ready = False
        try:
            health = self.public.wait_ready(self.serving.smoke.ready_timeout_seconds)
            self.check("ready", True, f"server answered /health: {health}")
            stable = (self.switch.state().get("stable") or {}).get("version")
            record["stable_before"] = stable
            sample = self._smoke_sample(smoke_sample_location, version.version)
            self._load(version)
            self.smoke(sample)
            if stable and self.serving.canary.enabled:
                self.canary(sample, version.version, stable)
            else:
                reason = "no stable model to compare with" if not stable else "canary disabled"
                self.checks.append(
                    {"name": "canary", "passed": True, "skipped": True, "detail": reason}
                )
            ready = True
        except _CheckFailed as failed:
            self._safe_state()
            self._reject(record, str(failed), started)
        except ServiceUnavailableError as exc:
            record.update(outcome="server_unavailable", seconds=time.perf_counter() - started)
            write_json(ctx.out_dir / DEPLOY, record)
            raise ServiceUnavailableError(
                f"model server for {name} at {self.admin.url} stopped answering during the "
                f"deploy of v{version.version} ({exc}); nothing was switched: the alias did not "
                "move, and a restarted server serves its stable model",
                record,
            ) from None
        finally:
            if not ready:  # any other exit, SIGTERM included: no candidate keeps traffic
                self._safe_state()
        record.update(outcome="ready_to_switch", seconds=round(time.perf_counter() - started, 3))
        write_json(ctx.out_dir / DEPLOY, record)
        return record

    def _smoke_sample(self, location: str, version: str) -> dict[str, Any]:
        """The evaluate step's holdout rows and offline scores, for this very version."""
        sample = json.loads(self.ctx.fetch(location).read_text(encoding="utf-8"))
        if str(sample.get("version")) != version:
            raise BadInputError(
                f"{location}: the smoke sample is for v{sample.get('version')}, not v{version}; "
                "pass the smoke_sample_uri of the evaluation of this version"
            )
        return sample

    def _load(self, version) -> None:
        loading = time.perf_counter()
        try:
            sha = self.switch.loadable(version)
        except UntrustedArtifactError as exc:
            self.check("load", False, f"v{version.version} refused before loading: {exc}")
        try:
            self.admin.ok(
                "POST",
                "/admin/candidate",
                {"version": version.version, "sha256": sha},
                timeout=LOAD_TIMEOUT_S,
            )
        except ServerRefusedError as exc:
            self.check("load", False, f"candidate v{version.version} load refused: {exc}")
        self.check(
            "load",
            True,
            f"candidate v{version.version} loaded",
            seconds=round(time.perf_counter() - loading, 3),
        )

    def _safe_state(self) -> None:
        """Traffic off and the candidate dropped (one call does both); idempotent.

        Best effort: if the server cannot be reached it serves no candidate traffic
        either, and a restarted server never restores a candidate.
        """
        if self._safe:
            return
        try:
            self.admin.ok("DELETE", "/admin/candidate")
            self._safe = True
        except (ServiceUnavailableError, ServerRefusedError) as exc:
            print(f"warning: could not drop the candidate: {exc}", file=sys.stderr)

    def _reject(self, record: dict[str, Any], reason: str, started: float) -> None:
        ctx, name, version = self.ctx, self.ctx.spec.name, record["version"]
        ctx.registry.client.set_model_version_tag(name, version, f"{TAG}deploy_rejected", reason)
        ctx.registry.append_event(
            name,
            "deploy_rejected",
            {"version": version, "reason": reason, "dag_run_id": ctx.dag_run_id},
        )
        record.update(
            outcome="rolled_back", reason=reason, seconds=round(time.perf_counter() - started, 3)
        )
        write_json(ctx.out_dir / DEPLOY, record)
        raise DeployFailedError(
            f"deploy of {name} v{version} rolled back: {reason}; stable "
            f"v{record.get('stable_before')} keeps serving and the champion alias did not move",
            record,
        )


def deploy(
    ctx: StepContext,
    challenger_version: str,
    smoke_sample_location: str,
    server_url: str,
    admin_token: str,
    prediction_key: str,
) -> dict[str, Any]:
    admin = ServerClient(server_url, admin_token)
    public = ServerClient(server_url, prediction_key)
    return Deployment(ctx, admin, public).run(challenger_version, smoke_sample_location)
