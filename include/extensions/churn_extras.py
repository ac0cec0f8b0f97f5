"""An in-house extension: a custom metric, registered for specs, the gate and the steps.

Enable with ``MLOPS_PACK_EXTENSIONS=churn_extras`` and ``MLOPS_PACK_EXTENSIONS_DIR`` naming
this folder (step containers get it mounted read-only). Importing it must stay light: the
DAG factory imports it at parse time, so numpy is only imported inside the metric.
"""

from __future__ import annotations

from mlops_pack.metric_catalog import MetricInfo, register_metric


def top_decile_lift(y, p):
    """Churn rate among the 10% highest scores divided by the overall churn rate."""
    import numpy as np

    cutoff = np.quantile(p, 0.9)
    top = (p >= cutoff).astype(float)

    def evaluate(weights):
        overall = (weights @ y) / weights.sum(axis=1)
        in_top = (weights @ (y * top)) / (weights @ top)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(overall > 0, in_top / overall, np.nan)

    return evaluate


register_metric(
    MetricInfo("top_decile_lift", "classification", True, "Churn rate in the top decile / overall"),
    top_decile_lift,
)
