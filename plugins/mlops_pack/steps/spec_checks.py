"""Checks derived from the spec that plain expectations let through.

Great Expectations passes an empty frame and an all-NaN column on most per-row checks,
and has no notion of a label or a training key. These checks accumulate over chunks so
a file larger than memory is checked exactly, holding only 8 bytes per row (the key hash
used for duplicate detection) plus small per-column counters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlops_pack.spec import ModelSpec

EXAMPLES = 5
MAX_LEAKAGE_CATEGORIES = 1_000


@dataclass
class CheckResult:
    name: str
    rule: str
    success: bool
    message: str
    unexpected_count: int = 0
    examples: list[Any] = field(default_factory=list)
    source: str = "spec"
    severity: str = "error"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "rule": self.rule,
            "source": self.source,
            "severity": self.severity,
            "success": self.success,
            "message": self.message,
            "unexpected_count": int(self.unexpected_count),
            "examples": [_plain(v) for v in self.examples[:EXAMPLES]],
        }


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value if isinstance(value, (int, float, str, bool, type(None))) else str(value)


@dataclass
class _Leak:
    # Running sums for the correlation of a numeric feature with the label.
    n: int = 0
    sx: float = 0.0
    sy: float = 0.0
    sxx: float = 0.0
    syy: float = 0.0
    sxy: float = 0.0
    # Category -> labels seen, and label -> categories seen (a copy is a bijection).
    forward: dict[Any, set] = field(default_factory=dict)
    backward: dict[Any, set] = field(default_factory=dict)
    gave_up: bool = False


class SpecChecks:
    """Accumulate per-chunk observations; ``results()`` turns them into checks."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.rows = 0
        self.nulls = {c.name: 0 for c in spec.columns}
        self.label_nulls = 0
        self.label_bad = 0
        self.label_bad_examples: list[Any] = []
        self.classes_seen: set[Any] = set()
        self.key_hashes: list[np.ndarray] = []
        self.dup_examples: list[Any] = []
        self.leaks = {c.name: _Leak() for c in spec.features()}

    def update(self, frame: pd.DataFrame) -> None:
        spec = self.spec
        self.rows += len(frame)
        for name in self.nulls:
            self.nulls[name] += int(frame[name].isna().sum())
        label = frame[spec.target]
        self.label_nulls += int(label.isna().sum())
        present = label.dropna()
        if spec.task == "classification":
            allowed = set(spec.classes or [])
            bad = present[~present.isin(list(allowed))]
            self.classes_seen.update(present.unique().tolist())
        else:
            values = present.to_numpy(dtype=float)
            bad = present[~np.isfinite(values)]
        self.label_bad += len(bad)
        self.label_bad_examples.extend(bad.head(EXAMPLES).tolist())
        key_columns = spec.data.key or spec.expected_columns()
        hashes = pd.util.hash_pandas_object(frame[key_columns], index=False).to_numpy()
        self.key_hashes.append(hashes)
        if len(self.dup_examples) < EXAMPLES:
            dups = frame.loc[frame.duplicated(key_columns, keep="first"), key_columns]
            self.dup_examples.extend(
                "|".join(str(v) for v in row) for row in dups.head(EXAMPLES).itertuples(index=False)
            )
        self._update_leakage(frame, label)

    def _update_leakage(self, frame: pd.DataFrame, label: pd.Series) -> None:
        spec = self.spec
        if spec.task == "classification":
            y = (label == spec.positive_class).astype(float).where(label.notna())
        else:
            y = label.astype(float)
        for column in spec.features():
            leak = self.leaks[column.name]
            if leak.gave_up:
                continue
            x = frame[column.name]
            both = x.notna() & y.notna()
            if column.type == "numeric":
                xv, yv = x[both].to_numpy(float), y[both].to_numpy(float)
                leak.n += len(xv)
                leak.sx += xv.sum()
                leak.sy += yv.sum()
                leak.sxx += (xv * xv).sum()
                leak.syy += (yv * yv).sum()
                leak.sxy += (xv * yv).sum()
                continue
            pairs = pd.DataFrame({"x": x[both], "y": label[both]}).drop_duplicates()
            for xv, yv in pairs.itertuples(index=False):
                leak.forward.setdefault(xv, set()).add(yv)
                leak.backward.setdefault(yv, set()).add(xv)
            if len(leak.forward) > MAX_LEAKAGE_CATEGORIES or any(
                len(s) > 1 for s in leak.forward.values()
            ):
                leak.gave_up = True  # not a copy; stop spending memory on it

    def results(self) -> list[CheckResult]:
        spec = self.spec
        out = [
            CheckResult(
                "min_rows",
                "min_rows",
                self.rows >= spec.validation.min_rows,
                f"{self.rows} rows; the spec requires at least {spec.validation.min_rows} "
                "(validation.min_rows)",
                unexpected_count=max(0, spec.validation.min_rows - self.rows),
            ),
            CheckResult(
                "label not null",
                "label_not_null",
                self.label_nulls == 0,
                f"{self.label_nulls} rows have no value in label {spec.target!r}; "
                "drop or label them",
                unexpected_count=self.label_nulls,
            ),
            CheckResult(
                "label values",
                "label_values",
                self.label_bad == 0,
                f"{self.label_bad} labels outside "
                + (
                    f"classes {spec.classes}" if spec.task == "classification" else "finite numbers"
                ),
                unexpected_count=self.label_bad,
                examples=self.label_bad_examples,
            ),
        ]
        if spec.task == "classification":
            out.append(self._classes())
        for column in spec.columns:
            nulls = self.nulls[column.name]
            fraction = nulls / self.rows if self.rows else 0.0
            ok = fraction <= column.max_null_fraction and not (self.rows and nulls == self.rows)
            out.append(
                CheckResult(
                    f"nulls in {column.name}",
                    "nulls",
                    ok,
                    f"{nulls} of {self.rows} values are null ({fraction:.1%}); column "
                    f"{column.name!r} allows {column.max_null_fraction:.1%} (max_null_fraction)"
                    + ("; the column is entirely null" if self.rows and nulls == self.rows else ""),
                    unexpected_count=nulls,
                )
            )
        out.append(self._duplicates())
        out.extend(self._leakage())
        return out

    def _classes(self) -> CheckResult:
        # A batch with one class trains a model that cannot score the other (or does not
        # train at all); no severity setting can make that usable, so it is always an error.
        absent = [c for c in self.spec.classes or [] if c not in self.classes_seen]
        return CheckResult(
            "label classes",
            "label_classes",
            not absent,
            f"no row has class {absent} in label {self.spec.target!r}; a classifier needs "
            f"rows of every declared class {self.spec.classes}: add them or fix the spec's "
            "classes"
            if absent
            else "every declared class is present",
            unexpected_count=len(absent),
            examples=absent,
        )

    def _duplicates(self) -> CheckResult:
        hashes = np.concatenate(self.key_hashes) if self.key_hashes else np.empty(0, np.uint64)
        hashes.sort()
        duplicated = int((hashes[1:] == hashes[:-1]).sum()) if len(hashes) > 1 else 0
        over = f"key {self.spec.data.key}" if self.spec.data.key else "all columns"
        return CheckResult(
            "duplicate rows",
            "duplicates",
            duplicated == 0,
            f"{duplicated} rows repeat an earlier row over {over}; de-duplicate the batch",
            unexpected_count=duplicated,
            examples=self.dup_examples,
        )

    def _leakage(self) -> list[CheckResult]:
        found = []
        for name, leak in self.leaks.items():
            if leak.gave_up:
                continue
            copied = False
            if leak.n > 2:
                vx = leak.sxx / leak.n - (leak.sx / leak.n) ** 2
                vy = leak.syy / leak.n - (leak.sy / leak.n) ** 2
                if vx > 0 and vy > 0:
                    corr = (leak.sxy / leak.n - leak.sx * leak.sy / leak.n**2) / np.sqrt(vx * vy)
                    copied = abs(corr) > 0.999
            elif leak.forward:
                copied = len(leak.backward) > 1 and all(len(s) == 1 for s in leak.backward.values())
            if copied:
                found.append(name)
        return [
            CheckResult(
                "label leakage",
                "leakage",
                not found,
                f"features {found} are copies of label {self.spec.target!r}; remove them from the "
                "data or the spec"
                if found
                else "no feature is a copy of the label",
                unexpected_count=len(found),
                examples=found,
            )
        ]
