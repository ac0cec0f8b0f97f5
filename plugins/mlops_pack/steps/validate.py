"""Data validation: the spec's derived checks plus a Great Expectations 1.x suite.

The file is read in chunks; each chunk goes through the spec checks (exact totals across
chunks) and through GX, which judges every expectation over the whole file (see
``steps.expectations``). The report lists every check, and GX Data Docs are built next to it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from mlops_pack.data_files import DataProblem
from mlops_pack.errors import DataValidationError, SpecError
from mlops_pack.hashing import sha256_file
from mlops_pack.records import write_json
from mlops_pack.spec import ModelSpec
from mlops_pack.steps.context import StepContext
from mlops_pack.steps.dataset import iter_chunks, read_header
from mlops_pack.steps.expectations import GxRunner
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


def validate(ctx: StepContext) -> dict[str, Any]:
    """Validate the run's data; write the report and docs; raise if an error check fails."""
    started = time.perf_counter()
    spec = ctx.spec
    path = Path(spec.data.path)
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
        path = ctx.data_path()
        report["file"] = str(path)
        header = read_header(path, spec)
        report["format"] = header.format
        if header.format != spec.data.format:
            checks.append(
                CheckResult(
                    "file format",
                    "format",
                    True,
                    f"the file is {header.format}, the spec says {spec.data.format} "
                    f"(data.format): read as {header.format}",
                )
            )
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
        path = Path(detail["file"])  # the path as resolved, when resolving was refused
        report["file"] = detail["file"]
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
        runner = GxRunner(spec, expectations, Path(root)) if expectations else None
        for chunk in iter_chunks(path, spec, spec.validation.chunk_rows, spec.expected_columns()):
            accumulator.update(chunk)
            if runner is not None and len(chunk):
                runner.run(chunk)
        results = accumulator.results()
        if runner is not None:
            runner.finish()
            results += runner.results(severity)
            runner.build_docs()
            docs = ctx.out_dir / DOCS
            if docs.exists():
                shutil.rmtree(docs)
            if runner.docs_dir().exists():
                runner.copy_docs(docs)
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
