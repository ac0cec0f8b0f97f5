"""Reading what the monitor judges: prediction logs and the label feed, line by line.

Prediction logs (written by the model server): ``<log_dir>/date=YYYY-MM-DD/part-*.jsonl``,
one JSON object per request with ``ts``, ``request_id``, ``version``, ``slot``,
``predictions``, ``flags``, ``inputs`` (``{feature: [values]}``, raw as received) and,
when the request carried the spec's key columns, ``keys`` (``{column: [values]}``).

Label feed: ``<labels_dir>/date=YYYY-MM-DD/*.csv``, the date being the day the labels
arrived, with a header of either ``request_id,row,label`` (``row``: 0-based position of
the row in its request) or the spec's ``data.key`` columns then ``label``. A later
label for the same row replaces an earlier one (files are read oldest day first, then
by name).

Nothing here loads a whole window: logs are read one line at a time and handed on in
chunks of about ``CHUNK_ROWS`` rows; only labels, and the (score, label) pairs they
match, are kept. Any line that cannot be used (torn, not JSON, wrong fields, a bad
label) is reported in ``skipped`` with its file, line number and reason and the rest
of the file is still read.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import msgspec

from mlops_pack.feed_layout import label_partitions, log_partitions
from mlops_pack.spec import ModelSpec

CHUNK_ROWS = 50_000
MAX_SKIPPED = 200  # reported one by one; beyond this only counted
_DECODER = msgspec.json.Decoder()


@dataclass
class Skipped:
    entries: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0

    def add(self, file: Path, line: int | None, reason: str) -> None:
        self.total += 1
        if len(self.entries) < MAX_SKIPPED:
            self.entries.append({"file": str(file), "line": line, "reason": reason})


# Labels -------------------------------------------------------------------------------


@dataclass
class Labels:
    by_request: dict[tuple[str, int], float] = field(default_factory=dict)
    by_key: dict[tuple[str, ...], float] = field(default_factory=dict)
    files: int = 0

    def __len__(self) -> int:
        return len(self.by_request) + len(self.by_key)

    def get(self, request_id: str, row: int, key_values: list[list] | None) -> float | None:
        """A served row's label: by its request id and row, else by its key (the request's
        key columns, one list per column; the key is built only when needed)."""
        label = self.by_request.get((request_id, row))
        if label is None and key_values is not None:
            label = self.by_key.get(tuple(str(values[row]) for values in key_values))
        return label


def _label_value(spec: ModelSpec, text: str) -> float:
    """The label as the metrics see it: 1/0 for the positive class, or the number."""
    text = text.strip()
    if spec.task == "classification":
        allowed = {str(c): c for c in spec.classes}
        if text not in allowed:
            raise ValueError(f"label {text[:40]!r} is not one of {sorted(allowed)}")
        return 1.0 if allowed[text] == spec.positive_class else 0.0
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("label is not a finite number")
    return value


def read_labels(spec: ModelSpec, root: Path, since: date, skipped: Skipped) -> Labels:
    """Every label that arrived on or after ``since`` (labels arrive after predictions)."""
    labels = Labels()
    key_columns = list(spec.data.key)
    for folder in label_partitions(root, since):
        for path in sorted(folder.glob("*.csv")):
            labels.files += 1
            _read_label_file(spec, path, key_columns, labels, skipped)
    return labels


def _read_label_file(
    spec: ModelSpec, path: Path, key_columns: list[str], labels: Labels, skipped: Skipped
) -> None:
    by_request = ["request_id", "row", "label"]
    by_key = [*key_columns, "label"]
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle)
            header = [h.strip() for h in next(reader, [])]
            if header == by_request:
                mode = "request"
            elif key_columns and header == by_key:
                mode = "key"
            else:
                expected = f"'{','.join(by_request)}'"
                if key_columns:
                    expected += f" or '{','.join(by_key)}'"
                skipped.add(path, 1, f"header {','.join(header)[:80]!r}: expected {expected}")
                return
            for line, row in enumerate(reader, start=2):
                if not row or row == [""]:
                    continue
                if len(row) != len(header):
                    skipped.add(path, line, f"{len(row)} fields, expected {len(header)}")
                    continue
                try:
                    value = _label_value(spec, row[-1])
                    if mode == "request":
                        labels.by_request[(row[0], int(row[1]))] = value
                    else:
                        labels.by_key[tuple(row[:-1])] = value
                except ValueError as exc:
                    skipped.add(path, line, str(exc))
    except UnicodeDecodeError as exc:
        skipped.add(path, None, f"not UTF-8 text ({exc.reason}); the rest of the file is lost")
    except csv.Error as exc:
        skipped.add(path, None, f"unreadable CSV ({exc}); the rest of the file is lost")


# Prediction logs ------------------------------------------------------------------------


@dataclass
class Chunk:
    """Served rows of one or more log records, columnar."""

    inputs: dict[str, list[Any]]
    scores: list[float]  # the champion's scores only (prediction drift, performance)
    labelled: list[tuple[float, float]]  # (score, label) of the champion's labelled rows
    flags: dict[str, int]
    rows: int = 0
    requests: int = 0


def _new_chunk(names: list[str]) -> Chunk:
    return Chunk({name: [] for name in names}, [], [], {})


def read_window(
    spec: ModelSpec,
    root: Path,
    start: datetime,
    end: datetime,
    champion: str | None,
    labels: Labels,
    skipped: Skipped,
) -> Iterator[Chunk]:
    """Chunks of the served rows logged in [start, end), oldest partition first."""
    names = [c.name for c in spec.features()]
    key_columns = list(spec.data.key)
    chunk = _new_chunk(names)
    for record in records(spec, root, start, end, skipped):
        _add(chunk, record, champion, labels, key_columns)
        if chunk.rows >= CHUNK_ROWS:
            yield chunk
            chunk = _new_chunk(names)
    if chunk.rows or chunk.requests:
        yield chunk


def records(
    spec: ModelSpec, root: Path, start: datetime, end: datetime, skipped: Skipped
) -> Iterator[dict[str, Any]]:
    """The usable, non-shadow log records of [start, end), one at a time, oldest
    partition first; ``ts`` is parsed to a datetime."""
    names = [c.name for c in spec.features()]
    for folder in log_partitions(root, start, end):
        for path in sorted(folder.glob("part-*.jsonl")):
            with path.open("rb") as handle:
                for line_number, raw in enumerate(handle, start=1):
                    record = _record(raw, path, line_number, names, skipped)
                    if record is None or record.get("slot") == "shadow":
                        continue
                    ts = _timestamp(record.get("ts"))
                    if ts is None:
                        skipped.add(path, line_number, "no valid 'ts' timestamp")
                        continue
                    if start <= ts < end:
                        record["ts"] = ts
                        yield record


def _record(
    raw: bytes, path: Path, line: int, names: list[str], skipped: Skipped
) -> dict[str, Any] | None:
    if not raw.strip():
        return None
    record, problem = _parse(raw, names)
    if problem:
        skipped.add(path, line, problem)
    return record


def _decode(raw: bytes) -> Any:
    """One line's JSON. msgspec decodes the lines about twice as fast as the standard
    library (decoding is most of the monitor's time); a line it refuses is tried again
    with ``json``, which also reads the NaN and Infinity literals the server's
    ``json.dumps`` writes for such values."""
    try:
        return _DECODER.decode(raw)
    except msgspec.DecodeError:
        return json.loads(raw)


def _parse(raw: bytes, names: list[str]) -> tuple[dict[str, Any] | None, str | None]:
    """A usable log record, or why the line is not one."""
    if not raw.endswith(b"\n"):
        return None, "torn line (no end of line: the writer stopped mid-record)"
    try:
        record = _decode(raw)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        return None, "not a JSON object"
    if record.get("slot") == "shadow":
        return record, None
    inputs, predictions = record.get("inputs"), record.get("predictions")
    if not isinstance(predictions, list):
        return None, "no 'predictions' list"
    if not isinstance(inputs, dict) or any(
        not isinstance(inputs.get(n), list) or len(inputs[n]) != len(predictions) for n in names
    ):
        return None, (
            "no 'inputs' with one value per prediction for every feature "
            "(logged by a server before inputs were recorded?)"
        )
    return record, None


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else None


def _add(
    chunk: Chunk,
    record: dict[str, Any],
    champion: str | None,
    labels: Labels,
    key_columns: list[str],
) -> None:
    predictions = record["predictions"]
    for name, values in chunk.inputs.items():
        values.extend(record["inputs"][name])
    chunk.rows += len(predictions)
    chunk.requests += 1
    for flag in record.get("flags") or []:
        if isinstance(flag, dict) and isinstance(flag.get("kind"), str):
            count = flag.get("count")
            chunk.flags[flag["kind"]] = chunk.flags.get(flag["kind"], 0) + (
                count if isinstance(count, int) else 1
            )
    if champion is None or str(record.get("version")) != champion:
        return
    chunk.scores.extend(predictions)
    if not len(labels):
        return
    request_id = str(record.get("request_id"))
    keys = record.get("keys")
    key_values = None
    if (
        key_columns
        and isinstance(keys, dict)
        and all(
            isinstance(keys.get(k), list) and len(keys[k]) == len(predictions) for k in key_columns
        )
    ):
        key_values = [keys[k] for k in key_columns]
    for row, score in enumerate(predictions):
        label = labels.get(request_id, row, key_values)
        if label is not None:
            chunk.labelled.append((score, label))
