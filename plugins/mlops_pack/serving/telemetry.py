"""Prometheus metrics and the per-version figures the deploy step compares.

The counters are kept here, in plain dicts the canary figures share, and exposed through
``prometheus_client``'s collector interface, which writes the exposition format (names,
label escaping, histogram buckets). Canary figures are kept per model version since
the candidate was loaded: request and error counts, recent latencies, and the paired
prediction shift, i.e. the mean of candidate - stable on the very same rows.
"""

from __future__ import annotations

import bisect
import itertools
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

    def render(self, slots: dict[str, dict[str, str] | None]) -> bytes:
        """The Prometheus text exposition of every metric, with the slots' versions."""
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Snapshot(self, slots))
        return generate_latest(registry)


class _Snapshot:
    """A collector over the telemetry's counts at one instant (one scrape)."""

    def __init__(self, telemetry: Telemetry, slots: dict[str, dict[str, str] | None]) -> None:
        self.telemetry = telemetry
        self.slots = slots

    def collect(self):
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        t = self.telemetry
        model = t.model
        counters = (
            ("mlops_pack_requests", "Prediction requests by model version, slot, status.",
             ("version", "slot", "status"), t.requests),
            ("mlops_pack_predictions", "Rows scored, by model version and slot.",
             ("version", "slot"), t.predictions),
            ("mlops_pack_range_violations", "Flagged inputs, predictions and batches.",
             ("version", "kind"), t.violations),
            ("mlops_pack_refused_requests", "Requests refused before scoring, by status.",
             ("status",), {(str(k),): n for k, n in t.rejected.items()}),
        )  # fmt: skip
        for name, doc, labels, counts in counters:
            family = CounterMetricFamily(name, doc, labels=("model", *labels))
            for key, n in sorted(counts.items()):
                family.add_metric((model, *key), n)
            yield family
        latency = HistogramMetricFamily(
            "mlops_pack_request_seconds",
            "Prediction latency by model version and status.",
            labels=("model", "version", "status"),
        )
        bounds = [*(repr(b) for b in BUCKETS), "+Inf"]
        for (version, status), counts in sorted(t.histograms.items()):
            latency.add_metric(
                (model, version, status),
                list(zip(bounds, itertools.accumulate(counts), strict=True)),
                t.latency_sum[(version, status)],
            )
        yield latency
        info = GaugeMetricFamily(
            "mlops_pack_model_info",
            "The model version loaded in each slot.",
            labels=("model", "slot", "version", "sha256"),
        )
        for slot, loaded in sorted(self.slots.items()):
            if loaded:
                info.add_metric((model, slot, loaded["version"], loaded["sha256"]), 1)
        yield info
