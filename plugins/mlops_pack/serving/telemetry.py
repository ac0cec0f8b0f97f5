"""Prometheus metrics and the per-version figures the deploy step compares.

The exposition is written by hand (a few counters and one histogram) rather than
adding a client library to the image. Canary figures are kept per model version since
the candidate was loaded: request and error counts, recent latencies, and the paired
prediction shift, i.e. the mean of candidate - stable on the very same rows.
"""

from __future__ import annotations

import bisect
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from mlops_pack.percentile import percentile

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
RECENT = 20_000


@dataclass
class VersionStats:
    requests: int = 0
    errors: int = 0
    rows: int = 0
    prediction_sum: float = 0.0
    latencies: deque = field(default_factory=lambda: deque(maxlen=RECENT))
    paired_rows: int = 0
    paired_diff: float = 0.0
    paired_abs_diff: float = 0.0

    def summary(self) -> dict[str, Any]:
        p95 = percentile(self.latencies, 95) if self.latencies else None
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": self.errors / self.requests if self.requests else 0.0,
            "rows": self.rows,
            "mean_prediction": self.prediction_sum / self.rows if self.rows else None,
            "latency_ms_p95": None if p95 is None else round(p95 * 1000, 3),
            "paired_rows": self.paired_rows,
            # Signed: how far the candidate's prediction distribution sits from stable's
            # on the same rows; the absolute mean shows per-row disagreement (informative).
            "mean_shift": self.paired_diff / self.paired_rows if self.paired_rows else None,
            "mean_abs_diff": self.paired_abs_diff / self.paired_rows if self.paired_rows else None,
        }


def _labels(values: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in values.items())
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Telemetry:
    def __init__(self, model: str) -> None:
        self.model = model
        self.requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self.predictions: dict[tuple[str, str], int] = defaultdict(int)
        self.violations: dict[tuple[str, str], int] = defaultdict(int)
        self.rejected: dict[int, int] = defaultdict(int)
        self.histograms: dict[tuple[str, str], list[int]] = {}
        self.latency_sum: dict[tuple[str, str], float] = defaultdict(float)
        self.stats: dict[str, VersionStats] = defaultdict(VersionStats)

    def reset_stats(self) -> None:
        """Start the canary comparison afresh (when a candidate is loaded)."""
        self.stats.clear()

    def observe(
        self, version: str, slot: str, status: str, seconds: float, predictions: list[float]
    ) -> None:
        self.requests[(version, slot, status)] += 1
        key = (version, status)
        counts = self.histograms.setdefault(key, [0] * (len(BUCKETS) + 1))
        counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.latency_sum[key] += seconds
        stats = self.stats[version]
        stats.requests += 1
        stats.latencies.append(seconds)
        if status == "ok":
            self.predictions[(version, slot)] += len(predictions)
            stats.rows += len(predictions)
            stats.prediction_sum += float(sum(predictions))
        else:
            stats.errors += 1

    def observe_pair(self, candidate_version: str, diffs: list[float]) -> None:
        """``diffs``: candidate minus stable prediction, row by row, on the same rows."""
        stats = self.stats[candidate_version]
        stats.paired_rows += len(diffs)
        stats.paired_diff += float(sum(diffs))
        stats.paired_abs_diff += float(sum(abs(d) for d in diffs))

    def violation(self, version: str, kind: str, count: int = 1) -> None:
        self.violations[(version, kind)] += count

    def refused(self, status: int) -> None:
        self.rejected[status] += 1

    def render(self, slots: dict[str, dict[str, str] | None]) -> str:
        m = {"model": self.model}
        out = [
            "# HELP mlops_pack_requests_total Prediction requests by model version, slot, status.",
            "# TYPE mlops_pack_requests_total counter",
        ]
        for (version, slot, status), n in sorted(self.requests.items()):
            labels = _labels({**m, "version": version, "slot": slot, "status": status})
            out.append(f"mlops_pack_requests_total{labels} {n}")
        out += [
            "# HELP mlops_pack_request_seconds Prediction latency by model version and status.",
            "# TYPE mlops_pack_request_seconds histogram",
        ]
        for (version, status), counts in sorted(self.histograms.items()):
            base = {**m, "version": version, "status": status}
            running = 0
            for bound, n in zip((*BUCKETS, float("inf")), counts, strict=True):
                running += n
                le = "+Inf" if bound == float("inf") else repr(bound)
                out.append(
                    f"mlops_pack_request_seconds_bucket{_labels({**base, 'le': le})} {running}"
                )
            total = self.latency_sum[(version, status)]
            out.append(f"mlops_pack_request_seconds_sum{_labels(base)} {total:.6f}")
            out.append(f"mlops_pack_request_seconds_count{_labels(base)} {running}")
        out += [
            "# HELP mlops_pack_predictions_total Rows scored, by model version and slot.",
            "# TYPE mlops_pack_predictions_total counter",
        ]
        for (version, slot), n in sorted(self.predictions.items()):
            labels = _labels({**m, "version": version, "slot": slot})
            out.append(f"mlops_pack_predictions_total{labels} {n}")
        out += [
            "# HELP mlops_pack_range_violations_total Flagged inputs, predictions and batches.",
            "# TYPE mlops_pack_range_violations_total counter",
        ]
        for (version, kind), n in sorted(self.violations.items()):
            labels = _labels({**m, "version": version, "kind": kind})
            out.append(f"mlops_pack_range_violations_total{labels} {n}")
        out += [
            "# HELP mlops_pack_refused_requests_total Requests refused before scoring, by status.",
            "# TYPE mlops_pack_refused_requests_total counter",
        ]
        for status, n in sorted(self.rejected.items()):
            out.append(
                f"mlops_pack_refused_requests_total{_labels({**m, 'status': str(status)})} {n}"
            )
        out += [
            "# HELP mlops_pack_model_info The model version loaded in each slot.",
            "# TYPE mlops_pack_model_info gauge",
        ]
        for slot, info in sorted(slots.items()):
            if info:
                labels = _labels({**m, "slot": slot, **info})
                out.append(f"mlops_pack_model_info{labels} 1")
        return "\n".join(out) + "\n"
