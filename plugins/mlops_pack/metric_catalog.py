"""Names and directions of the metrics the gate understands.

Pure Python on purpose: the spec and the gate need to know whether a metric is better
higher or lower without importing numpy or scikit-learn. The numeric implementations
live in ``mlops_pack.steps.metrics``; ``register_metric`` there adds a custom one to both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

Task = Literal["classification", "regression"]


@dataclass(frozen=True)
class MetricInfo:
    name: str
    task: Task
    higher_is_better: bool
    description: str


_CATALOG: dict[str, MetricInfo] = {}
# Custom metrics' implementations, kept here so registering one imports no numpy.
CUSTOM_IMPLEMENTATIONS: dict[str, Callable[[Any, Any], Callable[[Any], Any]]] = {}


def add_metric_info(info: MetricInfo) -> None:
    existing = _CATALOG.get(info.name)
    if existing is not None and existing != info:
        raise ValueError(f"metric {info.name!r} is already registered differently")
    _CATALOG[info.name] = info


for _info in (
    MetricInfo("roc_auc", "classification", True, "Area under the ROC curve"),
    MetricInfo("log_loss", "classification", False, "Cross-entropy of predicted probabilities"),
    MetricInfo("accuracy", "classification", True, "Share of correct labels at threshold 0.5"),
    MetricInfo("f1", "classification", True, "F1 of the positive class at threshold 0.5"),
    MetricInfo("brier", "classification", False, "Mean squared error of probabilities"),
    MetricInfo("rmse", "regression", False, "Root mean squared error"),
    MetricInfo("mae", "regression", False, "Mean absolute error"),
    MetricInfo("r2", "regression", True, "Coefficient of determination"),
):
    add_metric_info(_info)


def metric_info(name: str, task: Task | None = None) -> MetricInfo:
    info = _CATALOG.get(name)
    if info is None:
        raise ValueError(f"unknown metric {name!r}; known: {', '.join(sorted(_CATALOG))}")
    if task is not None and info.task != task:
        raise ValueError(f"metric {name!r} is for {info.task}, but the task is {task}")
    return info


def known_metrics() -> list[str]:
    return sorted(_CATALOG)


def register_metric(info: MetricInfo, prepare: Callable[[Any, Any], Callable[[Any], Any]]) -> None:
    """Extension point: add a custom metric usable in specs, slices and the gate.

    ``prepare(y_true, prediction)`` returns a function of a (resamples x rows) weight
    matrix giving one value per resample (see ``mlops_pack.steps.metrics.brier`` for the
    simplest example). Import numpy inside ``prepare``: this runs at DAG parse time.
    """
    add_metric_info(info)
    CUSTOM_IMPLEMENTATIONS[info.name] = prepare
