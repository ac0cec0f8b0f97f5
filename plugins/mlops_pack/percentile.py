"""The one percentile the pack reports for latencies: nearest rank, no interpolation.

Evaluation (the gate's latency budget), the deploy smoke test and the model server's
canary figures all call it, so a p95 means the same thing wherever it is compared.
"""

from __future__ import annotations

from collections.abc import Iterable


def percentile(values: Iterable[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of a non-empty collection."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of an empty collection")
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]
