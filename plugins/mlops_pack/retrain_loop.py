"""Names the monitor, its DAG and the retrain DAG share: the Asset, the reason, the options.

Light on purpose (standard library only): the DAG factory reads it at parse time.
"""

from __future__ import annotations

import re
from typing import Any

INCIDENT_REASON = re.compile(r"^monitor incident (\S+):")
ACKNOWLEDGE, PAUSE, ROLL_BACK = "Acknowledge", "Pause retraining", "Roll back"
ESCALATION_OPTIONS = (ACKNOWLEDGE, PAUSE, ROLL_BACK)


def retrain_asset_uri(model: str) -> str:
    """The Asset a model's monitor emits on and its retrain DAG listens to.

    A scheme of the pack's own: no storage behind it, it names an intent ("retrain this
    model"), so Airflow needs no normalizer for it, and one URI per model keeps the
    models' retrains apart.
    """
    return f"mlops-pack://{model}/retrain"


def incident_reason(incident_id: str, status: str, summary: str) -> str:
    """The retrain run's reason, which ties its gate decision to the incident."""
    return f"monitor incident {incident_id}: {status}: {summary}"[:500]


def monitor_event_extra(events: Any) -> dict[str, Any] | None:
    """The ``extra`` of the newest retrain Asset event among a run's triggering events.

    When several events were absorbed by one run, the newest one speaks; they all belong
    to one model (one retrain Asset per model).
    """
    if not events:
        return None
    found = []
    for asset in events:
        if str(getattr(asset, "uri", "")).endswith("/retrain"):
            found.extend(events[asset])
    if not found:
        return None
    return dict(getattr(found[-1], "extra", None) or {})
