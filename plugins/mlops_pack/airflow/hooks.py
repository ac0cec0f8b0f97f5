"""The model server's Connection: URL, admin token and prediction key in one place.

The connection type ``mlops_pack_server`` is declared in the provider info
(``provider_info.py``), so Airflow's Connection form shows the three as fields: host and
port for the URL, the password relabelled "Admin token", and "Prediction key" (kept in
the extra as ``prediction_api_key``, masked like a password).
"""

from __future__ import annotations

from dataclasses import dataclass

from airflow.sdk import BaseHook

from mlops_pack.airflow.exceptions import MlopsBadInputFailure


def server_conn_id(model: str) -> str:
    """The Airflow Connection that holds a model server's address and secrets."""
    return f"mlops_pack_server_{model}"


@dataclass(frozen=True)
class ServerAccess:
    url: str
    admin_token: str
    prediction_key: str | None

    def __repr__(self) -> str:  # never print the secrets
        return f"ServerAccess(url={self.url!r})"


class ModelServerHook(BaseHook):
    """Reads a model server's Connection; the step, not the hook, talks to the server."""

    conn_name_attr = "server_conn_id"
    default_conn_name = "mlops_pack_server_default"
    conn_type = "mlops_pack_server"
    hook_name = "MLOps pack model server"

    def __init__(self, server_conn_id: str = default_conn_name, **kwargs) -> None:
        super().__init__(**kwargs)
        self.server_conn_id = server_conn_id

    def access(self, need_prediction_key: bool = False) -> ServerAccess:
        conn_id = self.server_conn_id
        conn = self.get_connection(conn_id)
        if not conn.password:
            raise MlopsBadInputFailure(
                f"connection {conn_id}: the admin token (password) is missing; see docs/serving.md"
            )
        key = conn.extra_dejson.get("prediction_api_key")
        if need_prediction_key and not key:
            raise MlopsBadInputFailure(
                f"connection {conn_id}: extra 'prediction_api_key' is missing"
            )
        url = f"{conn.schema or 'http'}://{conn.host or '127.0.0.1'}:{conn.port}"
        return ServerAccess(url, conn.password, key or None)
