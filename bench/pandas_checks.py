"""The churn spec's validation written directly in pandas: the baseline for bench_validation.

It reads the CSV with ``pandas.read_csv(chunksize=...)`` and the spec's dtypes, and checks
what ``mlops_pack.steps.validate.validate`` checks (spec checks and the GX suite), with
exact totals across chunks:

- column set (header equals the spec's columns plus the target) and dtypes (``read_csv``
  with the declared dtypes raises on a value that does not convert);
- min rows; label not null; label in the spec's classes;
- duplicates over ``data.key`` (64-bit hashes of the key, sorted at the end, as the
  library does);
- nulls per column within ``max_null_fraction``; all-null columns;
- ranges (numeric min/max) and categories (categorical values) from the spec, nulls
  ignored as in GX;
- the suite (include/expectations/churn.json): not-null, unique, regex and column-mean
  expectations. Unique and mean are computed over the whole file here, while the library
  evaluates GX per chunk (so GX's "unique" only sees duplicates inside one chunk, and the
  mean is checked on every chunk);
- label leakage (running correlation sums for numeric features, category/label pairs for
  categorical ones), as ``SpecChecks`` does;
- the sha256 of the file (the library records it in the report).

Not replicated: failing-value examples (only counts are kept), the GX validation results
and Data Docs, the JSON report and the MLflow run with its artifacts.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlops_pack.spec import ModelSpec

SUPPORTED = {
    "expect_column_values_to_not_be_null",
    "expect_column_values_to_be_unique",
    "expect_column_values_to_match_regex",
    "expect_column_mean_to_be_between",
}


def _dtypes(spec: ModelSpec) -> dict[str, Any]:
    # "str" is pandas 3's default string dtype (Arrow-backed): faster isna, isin, regex and
    # hashing than object columns of Python strings.
    types: dict[str, Any] = {
        c.name: "float64" if c.type == "numeric" else "str" for c in spec.columns
    }
    classes = spec.classes or []
    if spec.task == "regression":
        types[spec.target] = "float64"
    elif all(isinstance(c, int) for c in classes):
        # int64 cannot hold a missing label; read as float and check integrality.
        types[spec.target] = "float64"
    else:
        types[spec.target] = "str"
    return types


class PandasChecks:
    def __init__(self, spec: ModelSpec, suite: dict[str, Any] | None) -> None:
        self.spec = spec
        self.rows = 0
        self.nulls = {c.name: 0 for c in spec.columns}
        self.out_of_range = {
            c.name: 0
            for c in spec.columns
            if c.type == "numeric" and (c.min is not None or c.max is not None)
        }
        self.out_of_set = {c.name: 0 for c in spec.columns if c.type == "categorical" and c.values}
        self.label_nulls = 0
        self.label_bad = 0
        self.hashes: list[np.ndarray] = []
        listed = (suite or {}).get("expectations", [])
        self.expectations = [e for e in listed if e["type"] in SUPPORTED]
        self.skipped = [e["type"] for e in listed if e["type"] not in SUPPORTED]
        self.unique_hashes: dict[str, list[np.ndarray]] = {}
        self.expect_bad: dict[str, int] = {}
        self.sums: dict[str, tuple[float, int]] = {}
        self.numeric_leak: dict[str, np.ndarray] = {
            c.name: np.zeros(6) for c in spec.features() if c.type == "numeric"
        }
        self.pairs: dict[str, set | None] = {
            c.name: set() for c in spec.features() if c.type == "categorical"
        }

    def update(self, frame: pd.DataFrame) -> None:
        spec = self.spec
        self.rows += len(frame)
        isna = frame.isna()
        null_counts = isna.sum()
        for name in self.nulls:
            self.nulls[name] += int(null_counts[name])
        for column in spec.columns:
            if column.name in self.out_of_range:
                values = frame[column.name]
                bad = pd.Series(False, index=frame.index)
                if column.min is not None:
                    bad |= values < column.min
                if column.max is not None:
                    bad |= values > column.max
                self.out_of_range[column.name] += int(bad.sum())
            elif column.name in self.out_of_set:
                values = frame[column.name]
                outside = ~values.isin(column.values) & values.notna()
                self.out_of_set[column.name] += int(outside.sum())
        label = frame[spec.target]
        self.label_nulls += int(label.isna().sum())
        present = label.dropna()
        if spec.task == "classification":
            self.label_bad += int((~present.isin(list(spec.classes or []))).sum())
        else:
            self.label_bad += int((~np.isfinite(present.to_numpy(float))).sum())
        key = spec.data.key or spec.expected_columns()
        key_hashes = pd.util.hash_pandas_object(frame[key], index=False).to_numpy()
        self.hashes.append(key_hashes)
        self._suite(frame, key_hashes if len(key) == 1 and frame[key[0]].notna().all() else None)
        self._leakage(frame, label)

    def _suite(self, frame: pd.DataFrame, key_hashes: np.ndarray | None) -> None:
        data_key = self.spec.data.key
        for index, exp in enumerate(self.expectations):
            column = exp["kwargs"]["column"]
            values = frame[column]
            name = f"{exp['type']}({column})#{index}"
            if exp["type"] == "expect_column_values_to_not_be_null":
                bad = int(values.isna().sum())
            elif exp["type"] == "expect_column_values_to_be_unique":
                if key_hashes is not None and data_key == [column]:
                    hashes = key_hashes  # the same column, no nulls: reuse the key's hashes
                else:
                    hashes = pd.util.hash_pandas_object(values.dropna(), index=False).to_numpy()
                self.unique_hashes.setdefault(name, []).append(hashes)
                bad = 0  # counted at the end, over the whole file
            elif exp["type"] == "expect_column_values_to_match_regex":
                present = values.dropna().astype(str)
                bad = int((~present.str.match(exp["kwargs"]["regex"])).sum())
            else:  # expect_column_mean_to_be_between: exact over the file
                total, count = self.sums.get(name, (0.0, 0))
                present = values.dropna().to_numpy(float)
                self.sums[name] = (total + float(present.sum()), count + len(present))
                bad = 0
            self.expect_bad[name] = self.expect_bad.get(name, 0) + bad

    def _leakage(self, frame: pd.DataFrame, label: pd.Series) -> None:
        spec = self.spec
        y = (
            (label == spec.positive_class).astype(float).where(label.notna())
            if spec.task == "classification"
            else label.astype(float)
        )
        for name, sums in self.numeric_leak.items():
            both = frame[name].notna() & y.notna()
            x, yy = frame[name][both].to_numpy(float), y[both].to_numpy(float)
            sums += [len(x), x.sum(), yy.sum(), (x * x).sum(), (yy * yy).sum(), (x * yy).sum()]
        for name, seen in self.pairs.items():
            if seen is None or len(seen) > 2_000:
                self.pairs[name] = None  # too many categories: not a copy, stop
                continue
            both = frame[name].notna() & label.notna()
            pairs = pd.DataFrame({"x": frame[name][both], "y": label[both]}).drop_duplicates()
            seen.update(pairs.itertuples(index=False, name=None))

    def results(self) -> dict[str, Any]:
        spec = self.spec
        hashes = np.sort(np.concatenate(self.hashes)) if self.hashes else np.empty(0, np.uint64)
        duplicates = int((hashes[1:] == hashes[:-1]).sum()) if len(hashes) > 1 else 0
        failed: dict[str, int] = {}

        def check(name: str, bad: int, ok: bool | None = None) -> None:
            if not (bad == 0 if ok is None else ok):
                failed[name] = bad

        check("min_rows", max(0, spec.validation.min_rows - self.rows))
        check("label_not_null", self.label_nulls)
        check("label_values", self.label_bad)
        check("duplicates", duplicates)
        for column in spec.columns:
            nulls = self.nulls[column.name]
            fraction = nulls / self.rows if self.rows else 0.0
            check(
                f"nulls({column.name})",
                nulls,
                fraction <= column.max_null_fraction and not (self.rows and nulls == self.rows),
            )
        for name, bad in self.out_of_range.items():
            check(f"ranges({name})", bad)
        for name, bad in self.out_of_set.items():
            check(f"categories({name})", bad)
        for index, exp in enumerate(self.expectations):
            key = f"{exp['type']}({exp['kwargs']['column']})#{index}"
            bad = self.expect_bad.get(key, 0)
            if exp["type"] == "expect_column_values_to_be_unique":
                parts = self.unique_hashes.get(key, [])
                h = np.sort(np.concatenate(parts)) if parts else np.empty(0, np.uint64)
                bad = int((h[1:] == h[:-1]).sum()) if len(h) > 1 else 0
            if exp["type"] == "expect_column_mean_to_be_between":
                total, count = self.sums.get(key, (0.0, 0))
                mean = total / count if count else float("nan")
                lo, hi = exp["kwargs"].get("min_value"), exp["kwargs"].get("max_value")
                ok = count > 0 and (lo is None or mean >= lo) and (hi is None or mean <= hi)
                check(key, 0 if ok else 1, ok)
                continue
            check(key, bad)
        leaks = []
        for name, (n, sx, sy, sxx, syy, sxy) in self.numeric_leak.items():
            if n > 2:
                vx, vy = sxx / n - (sx / n) ** 2, syy / n - (sy / n) ** 2
                if vx > 0 and vy > 0 and abs((sxy / n - sx * sy / n**2) / np.sqrt(vx * vy)) > 0.999:
                    leaks.append(name)
        for name, seen in self.pairs.items():
            if seen:
                xs = {}
                for x, y in seen:
                    xs.setdefault(y, set()).add(x)
                per_x = {}
                for x, y in seen:
                    per_x.setdefault(x, set()).add(y)
                if (
                    len(xs) > 1
                    and all(len(s) == 1 for s in xs.values())
                    and all(len(s) == 1 for s in per_x.values())
                ):
                    leaks.append(name)
        check("leakage", len(leaks))
        return {
            "rows": self.rows,
            "failed": failed,
            "nulls": dict(self.nulls),
            "duplicates": duplicates,
            "skipped_expectations": self.skipped,
        }


def read_header(path: Path, spec: ModelSpec) -> tuple[list[str], list[str]]:
    with path.open("rb") as handle:
        line = handle.readline(1 << 20).decode(spec.data.encoding).lstrip("\ufeff")
    names = next(csv.reader(io.StringIO(line), delimiter=spec.data.delimiter))
    expected = spec.expected_columns()
    return [c for c in expected if c not in names], [c for c in names if c not in expected]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def validate_with_pandas(
    path: Path, spec: ModelSpec, suite_path: Path | None, chunk_rows: int
) -> dict[str, Any]:
    """Run every check; returns the row count, the failed checks and a few totals."""
    suite = json.loads(suite_path.read_text(encoding="utf-8")) if suite_path else None
    missing, extra = read_header(path, spec)
    file_sha = sha256(path)
    if missing or extra:
        return {"rows": None, "failed": {"columns": len(missing) + len(extra)}, "sha256": file_sha}
    checks = PandasChecks(spec, suite)
    try:
        reader = pd.read_csv(
            path,
            dtype=_dtypes(spec),
            usecols=spec.expected_columns(),
            chunksize=chunk_rows,
            sep=spec.data.delimiter,
            encoding=spec.data.encoding,
        )
        with reader:
            for chunk in reader:
                checks.update(chunk)
    except ValueError as exc:  # a value that does not convert to its declared dtype
        message = re.sub(r"\s+", " ", str(exc))[:200]
        return {"rows": None, "failed": {"dtypes": 1}, "error": message, "sha256": file_sha}
    out = checks.results()
    out["sha256"] = file_sha
    return out
