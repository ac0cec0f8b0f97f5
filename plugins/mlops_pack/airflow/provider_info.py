"""Provider info (``apache_airflow_provider`` entry point): the model server's
connection type, with its form fields declared here so the api-server shows them
without importing the hook."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def get_provider_info() -> dict:
    try:
        installed = version("airflow-mlops-pack")
    except PackageNotFoundError:  # running from a source checkout without install
        installed = "0.0.0"
    return {
        "package-name": "airflow-mlops-pack",
        "name": "MLOps pack",
        "description": "Retrain, gate and deploy scikit-learn models (airflow-mlops-pack).",
        "versions": [installed],
        "connection-types": [
            {
                "connection-type": "mlops_pack_server",
                "hook-class-name": "mlops_pack.airflow.hooks.ModelServerHook",
                "hook-name": "MLOps pack model server",
                "conn-fields": {
                    "prediction_api_key": {
                        "label": "Prediction key",
                        "description": "Bearer key for /predict, /health and /metrics",
                        "schema": {"type": ["string", "null"], "format": "password"},
                    }
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["login"],
                    "relabeling": {"password": "Admin token", "host": "Server host"},
                    "placeholders": {
                        "host": "127.0.0.1",
                        "port": "8181",
                        "schema": "http",
                        "password": "token for /admin/* (only Airflow holds it)",
                    },
                },
            }
        ],
    }
