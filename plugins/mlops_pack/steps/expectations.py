"""Great Expectations over a file read in chunks, with every verdict about the whole file.

A chunk is a batch to GX, so only expectations that judge each row on its own add up
over chunks. The others are placed by what they need:

- per-row expectations (values in a set, between bounds, matching a regex, ...) run on
  every chunk; their unexpected counts add up exactly;
- uniqueness (``expect_column_values_to_be_unique``, ``expect_compound_columns_to_be_unique``)
  is decided over the whole file from a 64-bit hash per row, like the duplicate check;
- other expectations that name columns (a mean, a quantile, values increasing, ...) run
  once, after the last chunk, on those columns gathered from every chunk (numbers as
  8-byte floats, text as categories): memory grows with the rows, for those columns only;
- expectations on the table as a whole (row count, column list) run on the single chunk
  of a small file and are refused on a file that spans several chunks.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_pack.spec import ModelSpec
from mlops_pack.steps.spec_checks import EXAMPLES, CheckResult

# Map metrics whose verdict on one row depends on the other rows.
UNIQUE_METRICS = {"column_values.unique", "compound_columns.unique"}
ORDER_METRICS = {"column_values.increasing", "column_values.decreasing"}
COLUMN_KWARGS = ("column", "column_A", "column_B", "column_list")


def named_columns(kwargs: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for name in COLUMN_KWARGS:
        value = kwargs.get(name)
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, list):
            out.extend(str(v) for v in value)
    return out


def scope(expectation: dict[str, Any]) -> str:
    """``row``, ``unique``, ``file`` or ``table``: where the expectation can be judged."""
    from great_expectations.expectations.registry import get_expectation_impl

    try:
        metric = getattr(get_expectation_impl(expectation["type"]), "map_metric", None)
    except Exception:  # an unknown type: GX reports it on the first chunk
        return "row"
    if metric in UNIQUE_METRICS:
        return "unique"
    if metric and metric not in ORDER_METRICS:
        return "row"
    return "file" if named_columns(expectation.get("kwargs") or {}) else "table"


def _key(kind: str, kwargs: dict[str, Any]) -> tuple[str, str]:
    column = kwargs.get("column") or ",".join(named_columns(kwargs))
    return f"{kind}({column})", column


def _entry(kind: str, column: str, meta: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "type": kind,
        "column": column,
        "success": True,
        "unexpected": 0,
        "examples": [],
        "observed": None,
        "meta": dict(meta or {}),
        "exception": None,
    }


class _Unique:
    """Exact-up-to-hash uniqueness over every chunk (8 bytes per row)."""

    def __init__(self, expectation: dict[str, Any]) -> None:
        kwargs = expectation.get("kwargs") or {}
        self.kind = expectation["type"]
        self.columns = named_columns(kwargs)
        self.key, self.column = _key(self.kind, kwargs)
        self.meta = expectation.get("meta")
        self.hashes: list[np.ndarray] = []
        self.examples: list[Any] = []

    def update(self, frame: pd.DataFrame) -> None:
        values = frame[self.columns].dropna(how="all")
        self.hashes.append(pd.util.hash_pandas_object(values, index=False).to_numpy())
        if len(self.examples) < EXAMPLES:
            repeated = values[values.duplicated(keep=False)].head(EXAMPLES)
            self.examples.extend(
                "|".join(str(v) for v in row) for row in repeated.itertuples(index=False)
            )

    def entry(self) -> dict[str, Any]:
        hashes = np.sort(np.concatenate(self.hashes)) if self.hashes else np.empty(0, np.uint64)
        same = hashes[1:] == hashes[:-1]
        # Like GX, every row whose value occurs more than once is unexpected.
        repeated = np.zeros(len(hashes), dtype=bool)
        repeated[1:] |= same
        repeated[:-1] |= same
        entry = _entry(self.kind, self.column, self.meta)
        entry["unexpected"] = int(repeated.sum())
        entry["success"] = entry["unexpected"] == 0
        entry["examples"] = self.examples[:EXAMPLES]
        return entry


def _compact(frame: pd.DataFrame) -> pd.DataFrame:
    """Text as categories and small integers narrowed: the gathered columns stay small."""
    out = {}
    for name, column in frame.items():
        if column.dtype == object:
            out[name] = column.astype("category")
        elif pd.api.types.is_integer_dtype(column.dtype):
            out[name] = pd.to_numeric(column, downcast="integer")
        else:
            out[name] = column
    return pd.DataFrame(out)


def _gather(parts: list[pd.DataFrame]) -> pd.DataFrame:
    from pandas.api.types import union_categoricals

    out = {}
    for name in parts[0].columns:
        series = [p[name] for p in parts]
        if isinstance(series[0].dtype, pd.CategoricalDtype):
            out[name] = pd.Series(union_categoricals(series, ignore_order=True)).astype(object)
        else:
            out[name] = pd.concat(series, ignore_index=True)
    return pd.DataFrame(out)


class GxRunner:
    """One file-backed GX project in a temp dir: validation results and Data Docs."""

    def __init__(self, spec: ModelSpec, expectations: list[dict[str, Any]], root: Path) -> None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        import great_expectations as gx

        self.spec = spec
        self.context = gx.get_context(mode="file", project_root_dir=str(root))
        self.context.variables.progress_bars = {"globally": False}
        self.asset = self.context.data_sources.add_pandas("batch").add_dataframe_asset(spec.name)
        self.batch = self.asset.add_batch_definition_whole_dataframe("batch")
        scoped: dict[str, list[dict[str, Any]]] = {"row": [], "unique": [], "file": [], "table": []}
        for expectation in expectations:
            scoped[scope(expectation)].append(expectation)
        self.per_chunk = self._checkpoint("chunk", scoped["row"] + scoped["table"])
        self.whole = self._checkpoint("file", scoped["file"])
        self.unique = [_Unique(e) for e in scoped["unique"]]
        self.gathered = sorted({c for e in scoped["file"] for c in named_columns(e["kwargs"])})
        self.table = {_key(e["type"], e.get("kwargs") or {})[0] for e in scoped["table"]}
        self.parts: list[pd.DataFrame] = []
        self.chunks = 0
        self.totals: dict[str, dict[str, Any]] = {}

    def _checkpoint(self, name: str, expectations: list[dict[str, Any]]):
        if not expectations:
            return None
        import great_expectations as gx
        from great_expectations.core.expectation_suite import ExpectationSuite

        suite = self.context.suites.add(
            ExpectationSuite(name=f"{self.spec.name}_{name}", expectations=expectations)
        )
        definition = self.context.validation_definitions.add(
            gx.ValidationDefinition(data=self.batch, suite=suite, name=f"{self.spec.name}_{name}")
        )
        return self.context.checkpoints.add(
            gx.Checkpoint(
                name=f"{self.spec.name}_{name}",
                validation_definitions=[definition],
                actions=[],  # Data Docs are built once, after the last chunk
                result_format={"result_format": "SUMMARY", "partial_unexpected_count": 5},
            )
        )

    def run(self, frame: pd.DataFrame) -> None:
        """Judge one chunk; keep what the whole-file expectations need."""
        self.chunks += 1
        if self.per_chunk is not None:
            self._merge(self.per_chunk.run(batch_parameters={"dataframe": frame}))
        for unique in self.unique:
            unique.update(frame)
        if self.gathered:
            self.parts.append(_compact(frame[self.gathered]))

    def finish(self) -> None:
        """Judge what needs the whole file, after the last chunk."""
        if self.whole is not None and self.parts:
            gathered, self.parts = _gather(self.parts), []
            self._merge(self.whole.run(batch_parameters={"dataframe": gathered}))
        for unique in self.unique:
            self.totals[unique.key] = unique.entry()
        if self.chunks > 1:
            for key in self.table & self.totals.keys():
                self.totals[key]["success"] = False
                self.totals[key]["exception"] = (
                    f"{key} judges the table as a whole, and this file spans {self.chunks} "
                    f"chunks of validation.chunk_rows={self.spec.validation.chunk_rows} rows: "
                    "raise chunk_rows above the file's row count or remove it from the suite "
                    "(the spec's min_rows and column checks cover row counts and columns)"
                )

    def _merge(self, result) -> None:
        for validation in result.run_results.values():
            for item in validation.results:
                config = item.expectation_config
                key, column = _key(config.type, config.kwargs)
                entry = self.totals.setdefault(key, _entry(config.type, column, config.meta))
                entry["success"] &= bool(item.success)
                entry["unexpected"] += int(item.result.get("unexpected_count") or 0)
                entry["examples"].extend(item.result.get("partial_unexpected_list") or [])
                if item.result.get("observed_value") is not None:
                    entry["observed"] = item.result["observed_value"]
                info = item.exception_info or {}
                if info.get("raised_exception"):
                    entry["exception"] = info.get("exception_message")

    def results(self, severity: dict[str, str]) -> list[CheckResult]:
        out = []
        for key, entry in self.totals.items():
            rule = entry["meta"].get("rule", "expectations")
            level = entry["meta"].get("severity") or severity.get(rule, "error")
            where = f" on column {entry['column']!r}" if entry["column"] else ""
            fix = "the spec's column bounds" if rule in ("ranges", "categories") else "the suite"
            observed = entry["observed"]
            if observed is not None and not entry["unexpected"]:
                shown = f"{observed:.4g}" if isinstance(observed, float) else observed
                found = f"observed {shown}"  # an aggregate: its value says more than a count
            else:
                found = f"{entry['unexpected']} unexpected values, e.g. {entry['examples'][:3]}"
            message = entry["exception"] or (
                f"{entry['type']}{where}: {found}; fix the data or {fix}"
            )
            out.append(
                CheckResult(
                    key,
                    rule,
                    entry["success"],
                    message,
                    entry["unexpected"],
                    entry["examples"],
                    source="great_expectations",
                    severity=level,
                )
            )
        return out

    def build_docs(self) -> None:
        self.context.build_data_docs()

    def docs_dir(self) -> Path:
        return Path(self.context.root_directory) / "uncommitted" / "data_docs" / "local_site"

    def copy_docs(self, to: Path) -> None:
        """Copy the Data Docs pages to ``to``, with the local files they reference.

        GX writes its whole static folder into every site: 4 MB of fonts, logos and
        tutorial GIFs, stored again with every validation run (about 20 more uploads per
        retrain on an MLflow server). Its pages inline their styles and reference one of
        those files, the favicon; what a page references is kept, so a GX release whose
        pages use more keeps working. The pages show GX's logo from GX's own server, the
        navigation bar's with this site's data-context id in the address: they show the
        site's copy of the logo instead, so opening the docs reports nothing to GX.
        """
        site = self.docs_dir().resolve()
        referenced: set[Path] = set()
        for page in site.rglob("*.html"):
            html = _REMOTE_LOGO.sub(_local_logo(page, site), page.read_text(encoding="utf-8"))
            _place(to / page.relative_to(site)).write_text(html, encoding="utf-8")
            for ref in _LOCAL_REF.findall(html):
                target = (page.parent / ref).resolve()
                # Pages (every .html of the site) are written above, logo changed.
                if target.is_file() and target.is_relative_to(site) and target.suffix != ".html":
                    referenced.add(target)
        for path in referenced:
            shutil.copyfile(path, _place(to / path.relative_to(site)))


# A page's references to files of its own site: relative src, href and CSS url() values,
# anchors and queries cut off (absolute addresses and in-page anchors are not files of the site).
_LOCAL_REF = re.compile(
    r"""(?:(?:src|href)=["']|url\(["']?)(?![a-z][a-z0-9+.-]*:|/|#)([^"'#?)\s]+)""", re.I
)
# GX's logos on its own server (the navigation bar's carries the data-context id).
_REMOTE_LOGO = re.compile(r"""https://great-expectations-web-assets\.[^"'\s)]*\.png[^"'\s)]*""")


def _place(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _local_logo(page: Path, site: Path) -> str:
    depth = len(page.relative_to(site).parts) - 1
    return "../" * depth + "static/images/logo-long.png"
