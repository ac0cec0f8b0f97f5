"""An in-house operator: a subclass of the pack's step operator that adds a step.

``HistoryReportOperator`` runs the ``history`` step in the same hardened container (or
in-process) as every other step and publishes the model's decision and alias history as
XCom, e.g. at the end of a rollback or retrain DAG for an audit trail.
"""

from __future__ import annotations

from typing import Any

from mlops_pack.airflow.operators import MlopsStepOperator


class HistoryReportOperator(MlopsStepOperator):
    """Publish the last ``last`` history events of a model."""

    step = "history"
    template_fields = (*MlopsStepOperator.template_fields, "last")

    def __init__(self, *, last: int = 20, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.last = last

    def xcom_value(self, record: dict[str, Any]) -> dict[str, Any]:
        events = record.get("events", [])[-int(self.last) :]
        return {"model": record.get("model"), "events": events}
