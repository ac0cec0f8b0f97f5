"""Drift between a window's binned counts and the reference profile's, and the rule.

The rule, for each feature (and, as its own family, the score): drift is declared when
- the population stability index (PSI) over the reference bins is at least the spec's
  ``psi_threshold``: an effect size, so a huge window does not fire on a tiny shift the
  way a p-value alone does (it only gets more certain of a small PSI); and
- a chi-square test of the same bins (window counts against reference counts, a 2 x k
  table) rejects "same distribution" after Holm's step-down correction over all the
  features tested in the window, at family-wise level ``alpha``: with ten features and
  no correction, ten chances to fire on noise.
A window with fewer rows than ``monitoring.min_rows`` gives no drift verdict at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Empty bins get this share before the log, so PSI stays finite (a common choice).
FLOOR = 1e-4


@dataclass(frozen=True)
class Distance:
    psi: float
    p_value: float
    rows: int


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """Population stability index of two count vectors over the same bins."""
    ref = np.maximum(reference / max(reference.sum(), 1), FLOOR)
    cur = np.maximum(current / max(current.sum(), 1), FLOOR)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def chi_square_p(reference: np.ndarray, current: np.ndarray) -> float:
    """p-value of the chi-square test that both count vectors come from one distribution
    (Pearson's test of the 2 x k table, without continuity correction)."""
    from scipy.special import chdtrc

    table = np.vstack([reference, current]).astype(np.float64)
    table = table[:, table.sum(axis=0) > 0]
    total = table.sum()
    if table.shape[1] < 2 or table[1].sum() == 0 or table[0].sum() == 0:
        return 1.0
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / total
    statistic = float(((table - expected) ** 2 / expected).sum())
    return float(chdtrc(table.shape[1] - 1, statistic))


def distance(reference: np.ndarray, current: np.ndarray) -> Distance:
    return Distance(psi(reference, current), chi_square_p(reference, current), int(current.sum()))


def holm(p_values: dict[str, float], alpha: float) -> dict[str, bool]:
    """Holm's step-down procedure: which hypotheses are rejected at family-wise ``alpha``."""
    ordered = sorted(p_values, key=lambda name: p_values[name])
    rejected = dict.fromkeys(p_values, False)
    total = len(ordered)
    for rank, name in enumerate(ordered):
        if p_values[name] > alpha / (total - rank):
            break
        rejected[name] = True
    return rejected


def judge(
    distances: dict[str, Distance], psi_threshold: float, alpha: float
) -> dict[str, dict[str, float | bool]]:
    """Each entry's figures and verdict under the rule above (one Holm family)."""
    rejected = holm({name: d.p_value for name, d in distances.items()}, alpha)
    return {
        name: {
            "distance": _round(d.psi),
            "threshold": psi_threshold,
            "p_value": d.p_value,
            "significant": rejected[name],
            "drifted": bool(d.psi >= psi_threshold and rejected[name]),
            "rows": d.rows,
        }
        for name, d in distances.items()
    }


def _round(value: float) -> float:
    return round(value, 6) if math.isfinite(value) else value
