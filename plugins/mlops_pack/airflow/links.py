"""Extra links on the pack's tasks: to the comparison report, the MLflow run, the served
version and the monitor's report.

Airflow computes a task's links on the worker when the task ends and keeps them as XCom,
so each link reads the record the operator kept from its step (``result_record``); a
task that ended without one shows the button disabled.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote, urlparse

from airflow.sdk import BaseOperatorLink

PREFIX = "/mlops-pack"  # where the plugin's app is mounted in the api-server


def ui_path(path: str) -> str:
    """A path under the plugin's app, behind Airflow's ``[api] base_url`` if it has one."""
    from airflow.configuration import conf

    base = urlparse(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")
    return f"{base}{PREFIX}{path}"


def _record(operator: Any) -> dict[str, Any]:
    return getattr(operator, "result_record", None) or {}


def _model(operator: Any) -> str:
    return quote(str(operator.model), safe="")


class ComparisonReportLink(BaseOperatorLink):
    """Gate task -> the decision's comparison report on the Models page."""

    name = "Comparison report"

    def get_link(self, operator, *, ti_key) -> str:
        decision = _record(operator).get("decision_id")
        if not decision:
            return ""
        return ui_path(f"/models/{_model(operator)}/decisions/{quote(decision, safe='')}")


class MlflowRunLink(BaseOperatorLink):
    """Train task -> its MLflow run, in the MLflow UI at ``MLOPS_PACK_MLFLOW_UI_URL``.

    With the embedded store there is no MLflow UI to link to; the button stays disabled
    until the variable names one.
    """

    name = "MLflow run"

    def get_link(self, operator, *, ti_key) -> str:
        base = os.environ.get("MLOPS_PACK_MLFLOW_UI_URL", "").rstrip("/")
        record = _record(operator)
        run, experiment = record.get("run_id"), record.get("experiment_id")
        if not (base and run and experiment):
            return ""
        return f"{base}/#/experiments/{quote(str(experiment))}/runs/{quote(str(run))}"


class ServedVersionLink(BaseOperatorLink):
    """Deploy task -> the model's page, where the served version and its deploys show."""

    name = "Served version"

    def get_link(self, operator, *, ti_key) -> str:
        version = _record(operator).get("version")
        if not version:
            return ""
        return ui_path(f"/models/{_model(operator)}#served")


class MonitorReportLink(BaseOperatorLink):
    """A monitor task -> the report of the event it recorded (``event_id`` in its record)."""

    name = "Monitor report"

    def get_link(self, operator, *, ti_key) -> str:
        event = _record(operator).get("event_id")
        if not event:
            return ""
        return ui_path(f"/models/{_model(operator)}/events/{quote(str(event), safe='')}")


LINKS = (ComparisonReportLink(), MlflowRunLink(), ServedVersionLink(), MonitorReportLink())
