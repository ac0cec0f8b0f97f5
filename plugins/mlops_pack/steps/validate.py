"""Data validation: the spec's derived checks plus a Great Expectations 1.x suite.

The file is read in chunks; each chunk goes through the spec checks (exact totals across
chunks) and through GX (per-row expectations add up exactly across chunks; aggregate
expectations such as a column mean are evaluated per chunk, and a chunk failing fails the
check). The report lists every check, and GX Data Docs are built next to it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from mlops_pack.errors import DataValidationError, SpecError
from mlops_pack.hashing import sha256_file
from mlops_pack.records import write_json
from mlops_pack.spec import ModelSpec
from mlops_pack.steps.context import StepContext
from mlops_pack.steps.dataset import DataProblem, iter_chunks, read_header
from mlops_pack.steps.spec_checks import CheckResult, SpecChecks

REPORT = "validation.json"
DOCS = "data_docs"


def derived_expectations(spec: ModelSpec) -> list[dict[str, Any]]:
    """Range and category expectations generated from the spec's columns."""
    out = []
    for column in spec.columns:
        if column.type == "numeric" and (column.min is not None or column.max is not None):
            out.append(
                {
                    "type": "expect_column_values_to_be_between",
                    "kwargs": {
                        "column": column.name,
                        "min_value": column.min,
                        "max_value": column.max,
                    },
                    "meta": {"rule": "ranges"},
                }
            )
        if column.type == "categorical" and column.values:
            out.append(
                {
                    "type": "expect_column_values_to_be_in_set",
                    "kwargs": {"column": column.name, "value_set": list(column.values)},
                    "meta": {"rule": "categories"},
                }
            )
    return out


def load_suite(path: Path) -> dict[str, Any]:
    try:
        suite = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(f"{path}: expectation suite not found (validation.suite)") from None
    except json.JSONDecodeError as exc:
        raise SpecError(f"{path}: line {exc.lineno}: invalid JSON ({exc.msg})") from None
    if not isinstance(suite, dict) or not isinstance(suite.get("expectations"), list):
        raise SpecError(f"{path}: expected an object with an 'expectations' list")
    return suite


class _GxRunner:
    """One file-backed GX project in a temp dir: validation results and Data Docs."""

    def __init__(self, spec: ModelSpec, expectations: list[dict[str, Any]], root: Path) -> None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        import great_expectations as gx
        from great_expectations.core.expectation_suite import ExpectationSuite

        self.context = gx.get_context(mode="file", project_root_dir=str(root))
        self.context.variables.progress_bars = {"globally": False}
        suite = self.context.suites.add(
            ExpectationSuite(name=f"{spec.name}_suite", expectations=expectations)
        )
        asset = self.context.data_sources.add_pandas("batch").add_dataframe_asset(spec.name)
        definition = gx.ValidationDefinition(
            data=asset.add_batch_definition_whole_dataframe("chunk"), suite=suite, name=spec.name
        )
        definition = self.context.validation_definitions.add(definition)
        self.checkpoint = self.context.checkpoints.add(
            gx.Checkpoint(
                name=spec.name,
                validation_definitions=[definition],
                actions=[],  # Data Docs are built once, after the last chunk
                result_format={"result_format": "SUMMARY", "partial_unexpected_count": 5},
            )
        )
        self.totals: dict[str, dict[str, Any]] = {}

    def run(self, frame) -> None:
        result = self.checkpoint.run(batch_parameters={"dataframe": frame})
        for validation in result.run_results.values():
            for item in validation.results:
                config = item.expectation_config
                column = config.kwargs.get("column", "")
                key = f"{config.type}({column})"
                entry = self.totals.setdefault(
                    key,
                    {
                        "type": config.type,
                        "column": column,
                        "success": True,
                        "unexpected": 0,
                        "examples": [],
                        "meta": dict(config.meta or {}),
                        "exception": None,
                    },
                )
                entry["success"] &= bool(item.success)
                entry["unexpected"] += int(item.result.get("unexpected_count") or 0)
                entry["examples"].extend(item.result.get("partial_unexpected_list") or [])
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
            message = entry["exception"] or (
                f"{entry['type']}{where}: {entry['unexpected']} unexpected values, e.g. "
                f"{entry['examples'][:3]}; fix the data or {fix}"
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


def validate(ctx: StepContext) -> dict[str, Any]:
    """Validate the run's data; write the report and docs; raise if an error check fails."""
    started = time.perf_counter()
    spec = ctx.spec
    path = ctx.data_path()
    severity = dict(spec.validation.severity)
    report: dict[str, Any] = {
        "schema": "mlops_pack.validation/1",
        "model": spec.name,
        "file": str(path),
        "spec_sha256": spec.sha256(),
    }
    checks: list[CheckResult] = []
    rows = None
    try:
        header = read_header(path, spec)
        report["data_sha256"] = sha256_file(path)
        checks.append(
            CheckResult(
                "column set",
                "columns",
                not header.missing and not header.extra,
                f"missing {header.missing}, unexpected {header.extra}; the file must have exactly "
                "the spec's columns plus the target"
                if header.missing or header.extra
                else "exact",
                unexpected_count=len(header.missing) + len(header.extra),
                examples=header.missing + header.extra,
            )
        )
        if not header.missing:
            scanned, rows = _scan(ctx, path, severity)
            checks += scanned
    except DataProblem as problem:
        detail = problem.payload
        checks.append(
            CheckResult(
                problem.rule, problem.rule, False, f"{detail['message']}. Fix: {detail['fix']}"
            )
        )
    for check in checks:
        if check.source == "spec":
            check.severity = severity.get(check.rule, "error")
    errors = [c for c in checks if not c.success and c.severity == "error"]
    warnings = [c for c in checks if not c.success and c.severity == "warn"]
    report.update(
        {
            "status": "failed" if errors else "passed",
            "rows": rows,
            "checks": [c.as_dict() for c in checks],
            "errors": [f"{c.rule}: {c.message}" for c in errors],
            "warnings": [f"{c.rule}: {c.message}" for c in warnings],
            "seconds": round(time.perf_counter() - started, 3),
        }
    )
    write_json(ctx.out_dir / REPORT, report)
    _log_to_mlflow(ctx, report)
    if errors:
        first = errors[0]
        raise DataValidationError(
            f"{path}: validation failed: {first.rule}: {first.message}"
            + (
                f" (+{len(errors) - 1} more failed checks, see {REPORT})" if len(errors) > 1 else ""
            ),
            report,
        )
    return report


def _scan(ctx: StepContext, path: Path, severity: dict[str, str]) -> tuple[list[CheckResult], int]:
    spec = ctx.spec
    expectations = derived_expectations(spec)
    if spec.validation.suite:
        expectations += load_suite(ctx.include_path(spec.validation.suite))["expectations"]
    accumulator = SpecChecks(spec)
    with tempfile.TemporaryDirectory(prefix="gx-") as root:
        runner = _GxRunner(spec, expectations, Path(root)) if expectations else None
        for chunk in iter_chunks(path, spec, spec.validation.chunk_rows, spec.expected_columns()):
            accumulator.update(chunk)
            if runner is not None and len(chunk):
                runner.run(chunk)
        results = accumulator.results()
        if runner is not None:
            results += runner.results(severity)
            runner.build_docs()
            docs = ctx.out_dir / DOCS
            if docs.exists():
                shutil.rmtree(docs)
            if runner.docs_dir().exists():
                shutil.copytree(runner.docs_dir(), docs)
    return results, accumulator.rows


def _log_to_mlflow(ctx: StepContext, report: dict[str, Any]) -> None:
    """Store the report and the docs as artifacts of a 'validate' run in the model's experiment."""
    registry = ctx.registry
    experiment = registry.experiment_id(f"mlops-pack/{ctx.spec.name}")
    tags = {
        "mlops.step": "validate",
        "mlops.status": report["status"],
        "mlops.data_sha256": report.get("data_sha256", ""),
        "mlops.spec_sha256": report["spec_sha256"],
    }
    if ctx.dag_run_id:
        tags["mlops.dag_run_id"] = ctx.dag_run_id
    run = registry.client.create_run(experiment, run_name="validate", tags=tags)
    registry.client.log_artifact(run.info.run_id, str(ctx.out_dir / REPORT))
    if (ctx.out_dir / DOCS).exists():
        registry.client.log_artifacts(run.info.run_id, str(ctx.out_dir / DOCS), DOCS)
    registry.client.set_terminated(
        run.info.run_id, "FINISHED" if report["status"] == "passed" else "FAILED"
    )
    report["mlflow_run_id"] = run.info.run_id
