"""Prediction requests: JSON in the spec's feature schema, checked field by field.

A request is ``{"rows": [{<feature>: <value>, ...}, ...]}``; one row is a batch of one.
Every problem becomes a ``RequestError`` whose message names the row and the field, so
a client can fix its payload without reading server logs. Values outside a numeric
column's declared ``min``/``max`` are accepted and flagged (the model can still score
them; the monitoring wants to know), while an undeclared category is refused because
the encoder has never seen it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from mlops_pack.spec import Column, ModelSpec


class RequestError(Exception):
    """A request the server refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class ParsedRequest:
    columns: dict[str, list[Any]]
    rows: list[dict[str, Any]]
    input_range_flags: list[str] = field(default_factory=list)
    keys: dict[str, list[Any]] | None = None  # the spec's key columns, when every row has them

    def logged_inputs(self, names: list[str]) -> dict[str, list[Any]]:
        """Feature values as received (JSON nulls stay null), columnar, for the log."""
        return {name: [row[name] for row in self.rows] for name in names}

    def __len__(self) -> int:
        return len(self.rows)


class RequestSchema:
    """The feature schema of one spec, compiled once for fast per-request checks."""

    def __init__(self, spec: ModelSpec, max_batch_rows: int) -> None:
        self.features: list[Column] = spec.features()
        self.names = [c.name for c in self.features]
        self._allowed = {c.name: set(c.values) for c in self.features if c.values}
        # Rows may carry the spec's key (e.g. a customer id) so later labels can be joined
        # to the prediction; the model never sees it.
        self.key_names = [k for k in spec.data.key if k not in self.names]
        self.max_batch_rows = max_batch_rows

    @property
    def max_body_bytes(self) -> int:
        """Refuse larger bodies before parsing them: about 4 KB per allowed row."""
        return 4096 * self.max_batch_rows + 1024

    def parse(self, body: bytes) -> ParsedRequest:
        if len(body) > self.max_body_bytes:
            raise RequestError(
                413,
                f"body of {len(body)} bytes exceeds {self.max_body_bytes} bytes "
                f"(serving.max_batch_rows = {self.max_batch_rows}): split the batch",
            )
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError) as exc:  # also over-long integers, deep nesting
            raise RequestError(400, f"body is not valid JSON ({str(exc)[:200]})") from None
        if not isinstance(payload, dict) or set(payload) != {"rows"}:
            raise RequestError(
                400, 'body must be a JSON object with exactly one key, "rows": a list of rows'
            )
        return self.parse_rows(payload["rows"])

    def parse_rows(self, rows: Any) -> ParsedRequest:
        """Check decoded rows (``parse`` after JSON, or an admin request's ``rows``)."""
        if not isinstance(rows, list):
            raise RequestError(400, '"rows" must be a list of objects')
        if not rows:
            raise RequestError(400, '"rows" is empty: send at least one row')
        if len(rows) > self.max_batch_rows:
            raise RequestError(
                413,
                f'"rows" has {len(rows)} rows; this model accepts at most '
                f"{self.max_batch_rows} per request (serving.max_batch_rows): split the batch",
            )
        columns: dict[str, list[Any]] = {name: [] for name in self.names}
        flags: list[str] = []
        keyed = 0
        for index, row in enumerate(rows):
            keyed += self._check_row(index, row, columns, flags)
        keys = None
        if self.key_names and keyed == len(rows):
            keys = {k: [row[k] for row in rows] for k in self.key_names}
        return ParsedRequest(columns=columns, rows=rows, input_range_flags=flags, keys=keys)

    def _check_row(
        self, index: int, row: Any, columns: dict[str, list[Any]], flags: list[str]
    ) -> bool:
        """Check one row into ``columns``; returns whether it carries every key column."""
        if not isinstance(row, dict):
            raise RequestError(422, f"rows[{index}]: expected an object of feature values")
        keyed = bool(self.key_names) and all(
            isinstance(row.get(k), str | int) and not isinstance(row.get(k), bool)
            for k in self.key_names
        )
        expected = len(self.names) + (len(self.key_names) if keyed else 0)
        if len(row) != expected or any(name not in row for name in self.names):
            missing = [n for n in self.names if n not in row]
            if missing:
                raise RequestError(422, f"rows[{index}]: missing field {missing[0]!r}")
            extra = sorted(k for k in row if k not in columns and k not in self.key_names)
            if not extra:  # a partial or non-text key
                raise RequestError(
                    422,
                    f"rows[{index}]: the key {self.key_names} must be given whole, as strings "
                    "or integers",
                )
            raise RequestError(
                422,
                f"rows[{index}]: unknown field {extra[0]!r}; the features are {self.names}"
                + (f" (and optionally the key {self.key_names})" if self.key_names else ""),
            )
        for column in self.features:
            value = row[column.name]
            columns[column.name].append(self._value(index, column, value, flags))
        return keyed

    def _value(self, index: int, column: Column, value: Any, flags: list[str]) -> Any:
        where = f"rows[{index}].{column.name}"
        if value is None:
            if column.max_null_fraction > 0:
                return math.nan if column.type == "numeric" else None
            raise RequestError(422, f"{where}: null is not allowed (the column has no nulls)")
        if column.type == "numeric":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise RequestError(
                    422, f"{where}: expected a number, got {type(value).__name__} {value!r}"
                )
            try:
                number = float(value)
            except OverflowError:  # a JSON integer with hundreds of digits
                number = math.inf
            if not math.isfinite(number):
                raise RequestError(422, f"{where}: expected a finite number")
            if (column.min is not None and number < column.min) or (
                column.max is not None and number > column.max
            ):
                flags.append(f"{where}={number} outside [{column.min}, {column.max}]")
            return number
        if not isinstance(value, str):
            raise RequestError(
                422, f"{where}: expected a string, got {type(value).__name__} {value!r}"
            )
        allowed = self._allowed.get(column.name)
        if allowed is not None and value not in allowed:
            raise RequestError(
                422,
                f"{where}: {value!r} is not an allowed category; expected one of {sorted(allowed)}",
            )
        return value
