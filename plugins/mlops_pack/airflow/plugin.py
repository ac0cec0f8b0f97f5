"""The pack's Airflow plugin, registered through the ``airflow.plugins`` entry point.

``pip install airflow-mlops-pack`` is enough: the api-server mounts the Models app at
``/mlops-pack``, the UI shows a top-level "Models" entry (the app's page in Airflow's
frame), and the extra links of the pack's operators are listed here so ``airflow plugins``
and Admin > Plugins show them.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from mlops_pack.airflow.links import LINKS, PREFIX
from mlops_pack.airflow.models_app import create_app


class MlopsPackPlugin(AirflowPlugin):
    name = "mlops_pack"
    fastapi_apps = [  # noqa: RUF012 (Airflow reads these class attributes)
        {"app": create_app(), "url_prefix": PREFIX, "name": "mlops-pack models"}
    ]
    external_views = [  # noqa: RUF012
        {
            "name": "Models",
            "href": f"{PREFIX}/models",
            "url_route": "mlops-models",
            "destination": "nav",
            "nav_top_level": True,
        }
    ]
    operator_extra_links = list(LINKS)  # noqa: RUF012
