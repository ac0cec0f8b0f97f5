"""A training batch from production: a window's served rows joined with their labels.

When the monitor asks for a retrain, the freshest evidence of the world the model serves
is the window it judged: the inputs the server logged (with their keys and request time)
and the labels that arrived for them. This step writes those rows as a batch of the
spec's shape (columns, target, and the holdout's time column filled with the request
time), retains it by its sha256 like every batch that trains a version, and records a
``labelled_batch`` history event naming the window. The retrain then reads that batch
(its run overrides carry the sha256), so the out-of-time holdout is the newest labelled
traffic and ``training.window`` adds the retained batches before it.

A key (the spec's ``data.key``) names one entity: a customer served twice in the window
is one row of the batch, the newest request's, as the spec's uniqueness rule expects
(validation refuses repeated keys). Rows are streamed from the logs to the file, twice:
once to find each key's newest row, once to write; only the labels and one position per
key are held in memory. A window that cannot make a fair decision is refused before anything is
stored: too few labelled rows for the spec's training minimum and holdout, or a single
class (a classifier cannot learn from it, and AUC is undefined on its holdout).
"""

from __future__ import annotations

import csv
import math
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from mlops_pack.errors import BadInputError
from mlops_pack.hashing import sha256_file
from mlops_pack.records import write_json
from mlops_pack.spec import ModelSpec
from mlops_pack.steps import monitor_feed, retention
from mlops_pack.steps.context import StepContext

RESULT = "labelled_batch.json"


def needed_rows(spec: ModelSpec) -> int:
    """Fewest labelled rows that leave ``validation.min_rows`` to train on and
    ``holdout.min_rows`` to judge on, after the out-of-time holdout's share."""
    h = spec.holdout
    return max(
        math.ceil(spec.validation.min_rows / (1 - h.fraction)),
        math.ceil(h.min_rows / h.fraction),
    )


def _target_value(spec: ModelSpec, label: float) -> Any:
    """The label as the spec's target column holds it (the feed's 1/0 back to a class)."""
    if spec.task != "classification":
        return label
    other = next(c for c in spec.classes if c != spec.positive_class)
    return spec.positive_class if label == 1.0 else other


def _time_value(spec: ModelSpec, ts: datetime) -> Any:
    column = spec.column(spec.holdout.time_column)
    return ts.timestamp() if column.type == "numeric" else ts.isoformat()


def _rows(
    spec: ModelSpec,
    log_dir: Path,
    start: datetime,
    end: datetime,
    labels: monitor_feed.Labels,
    skipped: monitor_feed.Skipped,
    counts: dict[str, int],
):
    """The window's labelled rows, oldest first: (key or None, the spec's columns)."""
    names = [c.name for c in spec.features()]
    key_columns = list(spec.data.key)
    time_column = spec.holdout.time_column
    ids = [c.name for c in spec.columns if c.role == "id" and c.type == "categorical"]
    for record in monitor_feed.records(spec, log_dir, start, end, skipped):
        predictions = record["predictions"]
        request_id = str(record.get("request_id"))
        keys = record.get("keys") if isinstance(record.get("keys"), dict) else {}
        counts["served"] += len(predictions)
        fitting = [k for k in key_columns if _fits(keys.get(k), predictions)]
        complete = bool(key_columns) and len(fitting) == len(key_columns)
        key_values = [keys[k] for k in key_columns] if complete else None
        for row in range(len(predictions)):
            label = labels.get(request_id, row, key_values)
            if label is None:
                continue
            logged = {k: keys[k][row] for k in fitting}
            key = tuple(str(v[row]) for v in key_values) if key_values is not None else None
            out = {name: record["inputs"][name][row] for name in names}
            # An id the request did not carry is the served row's own: request id and row.
            out.update({name: f"{request_id}:{row}" for name in ids})
            out.update(logged)
            if time_column:
                out[time_column] = _time_value(spec, record["ts"])
            out[spec.target] = _target_value(spec, label)
            yield key, out


def _fits(values: Any, predictions: list[Any]) -> bool:
    return isinstance(values, list) and len(values) == len(predictions)


def build(
    ctx: StepContext,
    start: datetime,
    end: datetime,
    log_dir: Path | None = None,
    labels_dir: Path | None = None,
) -> dict[str, Any]:
    """Write, check and retain the labelled batch of [start, end); its record. The logs
    and labels are read where the spec, then the environment, puts them, unless named."""
    spec, settings = ctx.spec, ctx.registry.settings
    if start.tzinfo is None or end.tzinfo is None or not start < end:
        raise BadInputError(
            f"labelled batch: window {start.isoformat()} .. {end.isoformat()}: give two "
            "times with a time zone, the start before the end",
            {"rule": "window"},
        )
    policy = spec.monitoring_policy()
    log_dir = log_dir or settings.prediction_log_dir(spec.name, policy.log_dir)
    labels_dir = labels_dir or settings.labels_dir(spec.name, policy.labels_dir)
    skipped = monitor_feed.Skipped()
    labels = monitor_feed.read_labels(spec, labels_dir, start.date(), skipped)
    # First pass: the position of each key's newest labelled row (later rows win).
    newest: dict[tuple[str, ...], int] = {}
    scan = _rows(spec, log_dir, start, end, labels, monitor_feed.Skipped(), {"served": 0})
    for position, (key, _) in enumerate(scan):
        if key is not None:
            newest[key] = position
    counts = {"served": 0}
    columns = spec.expected_columns()
    classes: dict[str, int] = {}
    rows = superseded = 0
    fd, tmp = tempfile.mkstemp(dir=ctx.out_dir, prefix=".labelled.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, columns, delimiter=spec.data.delimiter)
            writer.writeheader()
            written = _rows(spec, log_dir, start, end, labels, skipped, counts)
            for position, (key, row) in enumerate(written):
                if key is not None and newest.get(key) != position:
                    superseded += 1  # the same entity served again later in the window
                    continue
                writer.writerow(row)
                rows += 1
                if spec.task == "classification":
                    name = str(row[spec.target])
                    classes[name] = classes.get(name, 0) + 1
        _refuse_unfit(spec, start, end, rows, counts["served"], classes)
        # Named by content: the same window's rows give the same file and the same batch.
        sha256 = sha256_file(Path(tmp))
        path = ctx.out_dir / f"labelled-{spec.name}-{sha256[:12]}.csv"
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    retained = retention.retain(ctx.registry, spec.name, path, sha256, rows)
    window = {"start": start.isoformat(), "end": end.isoformat()}
    event_id = ctx.registry.append_event(
        spec.name,
        "labelled_batch",
        {
            "data_sha256": sha256,
            "window_start": window["start"],
            "window_end": window["end"],
            "rows": rows,
            "served_rows": counts["served"],
            "superseded_rows": superseded,
            "classes": ",".join(f"{k}={v}" for k, v in sorted(classes.items())),
            "reason": ctx.overrides.reason,
            "dag_run_id": ctx.dag_run_id or "",
        },
    )
    record = {
        "schema": "mlops_pack.labelled_batch/1",
        "model": spec.name,
        "data_sha256": sha256,
        "file": path.name,
        "window": window,
        "rows": rows,
        "served_rows": counts["served"],
        "superseded_rows": superseded,
        "classes": classes,
        "time_column": spec.holdout.time_column,
        "skipped": {"total": skipped.total, "entries": skipped.entries[:20]},
        "retention": retained,
        "event_id": event_id,
    }
    write_json(ctx.out_dir / RESULT, record)
    return record


def _refuse_unfit(
    spec: ModelSpec,
    start: datetime,
    end: datetime,
    rows: int,
    served: int,
    classes: dict[str, int],
) -> None:
    where = f"labelled batch of {start.isoformat()} .. {end.isoformat()}"
    need = needed_rows(spec)
    if rows < need:
        raise BadInputError(
            f"{where}: labelled_batch.min_rows: {rows} of {served} served rows have a label; "
            f"the retrain needs at least {need} (validation.min_rows "
            f"{spec.validation.min_rows} to train after the holdout's {spec.holdout.fraction:g} "
            f"share, holdout.min_rows {spec.holdout.min_rows}). Wait for more labels, widen "
            "monitoring.window_hours, or lower those minimums",
            {"rule": "labelled_batch.min_rows", "rows": rows, "needed": need},
        )
    if spec.task == "classification" and len(classes) < 2:
        raise BadInputError(
            f"{where}: labelled_batch.classes: every labelled row has the class "
            f"{next(iter(classes), None)!r}; a classifier cannot be trained or judged on one "
            "class. Wait for labels of the other class or widen monitoring.window_hours",
            {"rule": "labelled_batch.classes", "classes": classes},
        )
