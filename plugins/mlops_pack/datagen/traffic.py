"""Traffic for a running model server, and the labels that arrive later (``mlops-pack simulate``).

Each simulated day draws fresh churn rows (``datagen.churn``), sends them to the server
in batches with request ids, and writes the true labels to the label feed as if they
arrived ``label_delay_days`` later: ``<labels_dir>/date=<D+k>/<request day>.csv`` with
``request_id,row,label``. Days are stamped by the simulator, not by the clock, so a
month of traffic runs in a minute (time compression); the server still logs each
request under the day it really received it.

Drift starts on ``onset_day`` (0-based) and applies to every later day: covariate and
concept drift as the generator defines them, and ``label_noise`` (0.5 makes the labels
coin flips: nothing can be learnt from them, the scenario where retraining cannot help).
"""

from __future__ import annotations

import csv
import io
import math
import os
import tempfile
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from mlops_pack.errors import BadInputError
from mlops_pack.server_client import ServerClient
from mlops_pack.spec import ModelSpec

LABEL_COLUMNS = ("request_id", "row", "label")


@dataclass(frozen=True)
class Scenario:
    days: int = 30
    rows_per_day: int = 500
    batch_rows: int = 100
    start: date = date(2026, 1, 1)
    label_delay_days: int = 2
    onset_day: int = 0
    covariate_drift: float = 0.0
    concept_drift: float = 0.0
    label_noise: float = 0.0
    seed: int = 2026

    def __post_init__(self) -> None:
        for name in ("days", "rows_per_day", "batch_rows"):
            if getattr(self, name) < 1:
                raise BadInputError(f"simulate: --{name.replace('_', '-')} must be at least 1")
        if self.label_delay_days < 0 or self.onset_day < 0:
            raise BadInputError("simulate: --label-delay-days and --onset-day must be >= 0")
        from mlops_pack.datagen import churn

        try:  # the generator owns the knobs' ranges
            churn.ChurnConfig(
                rows=0,
                covariate_drift=self.covariate_drift,
                concept_drift=self.concept_drift,
                label_noise=self.label_noise,
            )
        except ValueError as exc:
            knob = str(exc).split()[0].replace("_", "-")
            raise BadInputError(f"simulate: --{knob}: {exc}") from None


def day_rows(scenario: Scenario, day: int):
    """The generated rows of one simulated day (drift knobs on from ``onset_day``)."""
    from mlops_pack.datagen import churn

    drifting = day >= scenario.onset_day
    return churn.frame(
        churn.ChurnConfig(
            rows=scenario.rows_per_day,
            # Month only names the customer ids; the seed makes each day's draw distinct.
            month=1 + day % 999,
            seed=scenario.seed * 1000 + day,
            covariate_drift=scenario.covariate_drift if drifting else 0.0,
            concept_drift=scenario.concept_drift if drifting else 0.0,
            label_noise=scenario.label_noise if drifting else 0.0,
        )
    )


def _json_rows(frame, columns: list[str]) -> list[dict[str, Any]]:
    """Rows as the server takes them: the spec's features and keys, NaN as null.

    The keys are sent so the server logs them: a retrain's labelled batch then carries
    each customer's own id, as any other batch does.
    """
    rows = frame[columns].to_dict(orient="records")
    for row in rows:
        for name, value in row.items():
            if isinstance(value, float) and math.isnan(value):
                row[name] = None
    return rows


def write_labels(labels_dir: Path, arrival: date, name: str, lines: list[tuple]) -> Path:
    """One label file in the feed, made visible only once complete (rename)."""
    folder = Path(labels_dir) / f"date={arrival.isoformat()}"
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(LABEL_COLUMNS)
    writer.writerows(lines)
    target = folder / f"{name}.csv"
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(buffer.getvalue())
        os.chmod(tmp, 0o644)  # read by the monitor's container user, not only by us
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def simulate(
    spec: ModelSpec, client: ServerClient, labels_dir: Path, scenario: Scenario
) -> dict[str, Any]:
    """Send every day's traffic, then write its labels; returns what was sent and written."""
    features = [c.name for c in spec.features()] + list(spec.data.key)
    max_batch = spec.serving.max_batch_rows if spec.serving else scenario.batch_rows
    batch_rows = min(scenario.batch_rows, max_batch)
    days, requests, rows_sent, label_files = [], 0, 0, []
    for day in range(scenario.days):
        stamp = scenario.start + timedelta(days=day)
        frame = day_rows(scenario, day)
        labels = frame[spec.target].tolist()
        rows = _json_rows(frame, features)
        lines: list[tuple] = []
        score_sum = 0.0
        for batch, first in enumerate(range(0, len(rows), batch_rows)):
            request_id = f"sim-{stamp.isoformat()}-{batch:05d}"
            chunk = rows[first : first + batch_rows]
            status, body, _ = client.call(
                "POST", "/predict", {"rows": chunk}, headers={"X-Request-Id": request_id}
            )
            if status != 200:
                message = body.get("error") if isinstance(body, dict) else body
                raise BadInputError(
                    f"simulate: the server refused request {request_id} (HTTP {status}: "
                    f"{message}); check --spec matches the served model"
                )
            score_sum += sum(body["predictions"])
            lines.extend((request_id, row, labels[first + row]) for row in range(len(chunk)))
            requests += 1
        arrival = stamp + timedelta(days=scenario.label_delay_days)
        label_files.append(
            str(write_labels(labels_dir, arrival, f"sim-{stamp.isoformat()}", lines))
        )
        rows_sent += len(rows)
        days.append(
            {
                "day": stamp.isoformat(),
                "labels_arrive": arrival.isoformat(),
                "rows": len(rows),
                "drifting": day >= scenario.onset_day,
                "mean_prediction": round(score_sum / len(rows), 4),
                "positive_rate": round(sum(labels) / len(rows), 4),
            }
        )
    return {
        "model": spec.name,
        "days": days,
        "requests": requests,
        "rows": rows_sent,
        "label_files": label_files,
        "labels_dir": str(labels_dir),
    }
