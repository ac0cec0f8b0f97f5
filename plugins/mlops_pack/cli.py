"""``mlops-pack``: the command line for people and for step containers.

Every step command writes ``result.json`` in its ``--out`` directory, whatever happens:
``status``, the exit code, the step's record or the error's payload. Statuses and exit
codes come from one table, ``mlops_pack.errors.EXIT_CODES``: 0 ok, 1 error (internal or
infrastructure, retried), 2 bad input, 3 challenger rejected, 4 champion moved during
promotion, 5 deploy failed and rolled back, 6 a version did not reproduce.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlops_pack.errors import (
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_REJECTED,
    BadInputError,
    MlopsPackError,
    NotReproducedError,
    StepTerminated,
    status_of,
)
from mlops_pack.iso_time import aware_time
from mlops_pack.records import write_json


def _overrides(args: argparse.Namespace):
    from pydantic import ValidationError

    from mlops_pack.errors import SpecError
    from mlops_pack.spec import RunOverrides, format_validation_error

    raw: dict[str, Any] = {}
    if getattr(args, "overrides", None):
        text = args.overrides
        if not text.lstrip().startswith("{"):
            text = Path(text).read_text(encoding="utf-8")
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"--overrides: invalid JSON ({exc.msg})") from None
    if getattr(args, "data", None):
        raw["data_path"] = str(args.data)
    if getattr(args, "reason", None):
        raw["reason"] = args.reason
    try:
        return RunOverrides.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(format_validation_error("run overrides", exc)) from None


def _context(args: argparse.Namespace):
    from mlops_pack.steps.context import StepContext

    out = (
        Path(args.out)
        if args.out
        else Path(".mlops") / "runs" / f"{Path(args.spec).stem}-{time.strftime('%Y%m%dT%H%M%S')}"
    )
    return StepContext.load(args.spec, out, overrides=_overrides(args), dag_run_id=args.run_id)


# Commands: each returns (exit code, record) ------------------------------------------


def cmd_check_spec(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """Schema rules, then what only scikit-learn can tell: the estimator exists, suits the
    task and takes the params. Every file is checked; any failure makes the exit code 2."""
    from mlops_pack.errors import SpecError
    from mlops_pack.spec import load_spec
    from mlops_pack.steps.estimator_check import make_estimator

    checked, failed = {}, []
    for path in args.specs:
        try:
            spec = load_spec(path)
            make_estimator(spec, str(path))
        except SpecError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed.append(str(exc))
            continue
        checked[spec.name] = spec.sha256()
        print(f"{path}: ok (sha256 {spec.sha256()[:12]})")
    if failed:
        raise SpecError(
            f"{len(failed)} of {len(args.specs)} spec files failed the checks above",
            {"errors": failed, "specs": checked},
        )
    return EXIT_OK, {"specs": checked}


def cmd_stack_init(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    from mlops_pack.stack_env import init_stack

    record = init_stack(Path(args.dir), Path(args.include) if args.include else None)
    print(f"wrote {record['env_file']} (mode 600) and {record['secrets_dir']}")
    return EXIT_OK, record


def cmd_stack_tls(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    from mlops_pack.stack_tls import init_tls

    include = Path(args.include) if args.include else None
    record = init_tls(Path(args.dir), args.name, include, args.server_name)
    servers = "".join(f", {stem}.pem" for stem in record["servers"])
    print(
        f"wrote {record['tls_dir']}: ca.pem, mlflow.pem for {', '.join(record['names'])}"
        f"{servers} (each with its -key.pem; {record['valid_days']} days); start the "
        "stack with -f docker-compose.yaml -f docker-compose.tls.yaml"
    )
    if record["tls_dir_in_env"] != record["tls_dir"]:  # the user's setting stands
        print(
            f"note: .env keeps STACK_TLS_DIR={record['tls_dir_in_env']}, so the stack "
            f"uses the files there, not these; edit .env to use {record['tls_dir']}"
        )
    else:
        print("and STACK_TLS_DIR into .env")
    if args.name:  # MLflow answers only the Host headers it lists (docker-compose.yaml)
        print(
            f"and {', '.join(args.name)} (with any port) into .env's MLFLOW_ALLOWED_NAMES: "
            "the MLflow server answers clients that use those names once it is restarted"
        )
    return EXIT_OK, record


def cmd_stack_dashboards(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    from mlops_pack.dashboards import write_dashboards
    from mlops_pack.prometheus_tls import write_twin
    from mlops_pack.stack_env import served_models

    include = Path(args.include)
    for path in write_dashboards(include, served_models(include)):
        print(f"wrote {path}")
    if (include / "prometheus" / "prometheus.yml").is_file():
        print(f"wrote {write_twin(include)}")
    else:  # an include folder of specs only: no Prometheus configuration to derive from
        print(f"no {include / 'prometheus' / 'prometheus.yml'}: prometheus.tls.yml not written")
    return EXIT_OK, {}


def cmd_schema(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    from mlops_pack.spec import spec_json_schema

    if args.markdown:
        import yaml

        from mlops_pack.spec_reference import spec_reference_markdown

        examples = (
            [
                yaml.safe_load(path.read_text(encoding="utf-8"))
                for path in sorted(Path(args.examples).glob("*.yaml"))
            ]
            if args.examples
            else []
        )
        text = spec_reference_markdown(spec_json_schema(), examples)
    else:
        text = json.dumps(spec_json_schema(), indent=2, sort_keys=True) + "\n"
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return EXIT_OK, {}


def cmd_generate(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    if args.dataset == "diabetes":
        from mlops_pack.datagen import diabetes

        path = diabetes.write(args.output)
    else:
        from mlops_pack.datagen import churn

        cfg = churn.ChurnConfig(
            rows=args.rows,
            month=args.month,
            seed=args.seed,
            covariate_drift=args.covariate_drift,
            concept_drift=args.concept_drift,
            label_noise=args.label_noise,
        )
        path = churn.write(cfg, args.output)
    print(f"wrote {path}")
    return EXIT_OK, {"path": str(path)}


def cmd_validate(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    from mlops_pack.steps.validate import validate

    report = validate(_context(args))
    print(
        f"validation {report['status']}: {report['rows']} rows, {len(report['warnings'])} warnings"
    )
    for warning in report["warnings"]:
        print(f"  warn: {warning}")
    return EXIT_OK, report


def cmd_train(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    from mlops_pack.steps.train import train

    result = train(_context(args))
    print(
        f"trained {result['model']} v{result['version']} on {result['train_rows']} rows "
        f"in {result['fit_seconds']}s (sha256 {result['artifact_sha256'][:12]}); "
        + _holdout_counts(result)
    )
    return EXIT_OK, result


def _holdout_counts(result: dict[str, Any]) -> str:
    """How many rows the holdout has and how many the training data lost to it."""
    return (
        f"holdout {result['holdout_rows']} rows held out, {result['holdout_rows_excluded']} "
        f"rows excluded from training (by {result['holdout_excluded_by']})"
    )


def cmd_evaluate(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    from mlops_pack.steps.evaluate import evaluate

    version = args.challenger
    if args.train_result:
        version = json.loads(Path(args.train_result).read_text(encoding="utf-8"))["version"]
    if not version:
        raise BadInputError("evaluate needs --challenger VERSION or --train-result FILE")
    record = evaluate(_context(args), str(version))
    champion = record["champion"]
    print(
        f"evaluated v{record['challenger']['version']} against "
        f"{'v' + champion['version'] if champion else 'no champion'} on "
        f"{record['holdout_rows']} holdout rows in {record['seconds']}s"
    )
    return EXIT_OK, record


def cmd_gate(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    from mlops_pack.gate import decision_table
    from mlops_pack.steps.decide import decision_json, gate

    decision = gate(_context(args), args.evaluation)
    # The summary (it starts with the verdict) first, then the table once: this output
    # is the gate task's log.
    print(decision.summary)
    print(decision_table(decision, summary=False))
    return (EXIT_OK if decision.verdict == "promote" else EXIT_REJECTED), decision_json(decision)


def _switch(ctx, args: argparse.Namespace):
    """The served-model switch when the step was given a model server, else None."""
    if not args.server_url:
        if ctx.spec.serving is not None:
            print(
                f"warning: model {ctx.spec.name} is served, but no --server-url was given: "
                "only the alias moves; the model server keeps serving what it serves",
                file=sys.stderr,
            )
        return None
    from mlops_pack.server_client import ServerClient
    from mlops_pack.steps.served import ServedSwitch

    admin = ServerClient(args.server_url, _secret(args.admin_token_file, "--admin-token-file"))
    return ServedSwitch(admin, ctx.registry, ctx.spec.name)


def _secret(path: str | None, flag: str) -> str:
    if not path:
        raise BadInputError(f"{flag} is required with --server-url")
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise BadInputError(f"{flag}: cannot read {path} ({exc.strerror})") from None


def cmd_deploy(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    from mlops_pack.steps.deploy import deploy

    record = deploy(
        _context(args),
        str(args.challenger),
        args.smoke_sample,
        args.server_url,
        _secret(args.admin_token_file, "--admin-token-file"),
        _secret(args.prediction_key_file, "--prediction-key-file"),
    )
    passed = sum(c["passed"] for c in record["checks"])
    print(
        f"deploy {record['model']} v{record['version']}: {passed}/{len(record['checks'])} "
        f"checks passed in {record['seconds']}s; ready to switch"
    )
    return EXIT_OK, record


def cmd_promote(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    from mlops_pack.steps.decide import promote

    ctx = _context(args)
    record = promote(ctx, Path(args.decision), args.approved_by, _switch(ctx, args))
    print(
        f"{record['outcome']}: {record['model']} champion is v{record['champion']} "
        f"(previous v{record['previous']})"
    )
    return EXIT_OK, record


def cmd_record_approval(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    from mlops_pack.steps.approval import record_approval

    record = record_approval(_context(args), Path(args.response), Path(args.decision))
    print(
        f"approval recorded: {record['option']} by {record['approver']} "
        f"for decision {record['decision_id']} (v{record['challenger_version']})"
    )
    return EXIT_OK, record


def cmd_rollback(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    from mlops_pack.steps.decide import rollback

    ctx = _context(args)
    record = rollback(ctx, args.reason, args.to_version, _switch(ctx, args))
    print(f"{record['outcome']}: {record['model']} champion is v{record['champion']}")
    return EXIT_OK, record


def cmd_retrain(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    from mlops_pack.gate import decision_table
    from mlops_pack.records import DecisionRecord
    from mlops_pack.steps.retrain import retrain

    ctx = _context(args)
    result = retrain(ctx, args.approved_by)
    print(decision_table(DecisionRecord.model_validate(result["decision"])))
    steps = ", ".join(f"{k} {v:.2f}s" for k, v in result["timings"].items())
    print(
        f"\n{result['model']}: {result['verdict']} in {result['seconds']:.2f}s ({steps}); "
        f"trained on {result['train_rows']} rows, {_holdout_counts(result)}; "
        f"results in {ctx.out_dir}"
    )
    return (EXIT_OK if result["verdict"] == "promote" else EXIT_REJECTED), result


def cmd_holdout_refresh(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    from mlops_pack.steps.holdout_refresh import refresh_and_rescore

    record = refresh_and_rescore(_context(args), args.reason)
    print(
        f"holdout refreshed: {(record['old_holdout_sha256'] or 'none')[:12]} -> "
        f"{record['holdout_sha256'][:12]} ({record['rows']} rows); champion re-scored: "
        f"{record['champion_metrics']}"
    )
    return EXIT_OK, record


def cmd_reproduce(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    from mlops_pack.steps.reproduce import reproduce

    record = reproduce(_context(args), args.version)
    if not record["reproduced"]:
        raise NotReproducedError(record["summary"], record)
    artifact = record["artifact"]
    print(
        f"{record['summary']} (content sha256 {artifact['retrained_content_sha256'][:12]}; "
        f"archive sha256 {'equal' if artifact['sha256_equal'] else 'differs, as skops saves do'})"
        f" in {record['seconds']}s"
    )
    return EXIT_OK, record


def cmd_history(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    from mlops_pack.registry import Registry
    from mlops_pack.spec import load_spec

    name = load_spec(args.spec).name
    events = Registry().history(name)
    for event in events:
        fields = ", ".join(f"{k}={v}" for k, v in event.items() if k not in ("event_id", "kind"))
        if event["kind"] == "approval":  # who answered what, first: the line people look for
            fields = (
                f"{event.get('option')} by {event.get('approver')} at "
                f"{event.get('responded_at')} for decision {event.get('decision_id')}; {fields}"
            )
        print(f"{event['kind']:<18} {fields}")
    return EXIT_OK, {"model": name, "events": events}


def cmd_data(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    from mlops_pack.registry import Registry
    from mlops_pack.spec import load_spec
    from mlops_pack.steps import retention

    spec = load_spec(args.spec)
    record = retention.prune(Registry(), spec, apply=args.action == "prune" and args.apply)
    policy = ", ".join(f"{k}={v}" for k, v in record["policy"].items() if v is not None)
    print(f"{spec.name}: retained batches (policy: {policy or 'keep everything'})")
    for batch in record["batches"]:
        versions = ",".join(f"v{v}" for v in batch["versions"]) or "-"
        print(
            f"  {batch['sha256'][:12]}  {batch['retained_at']}  {batch['rows']:>9} rows "
            f"{batch['bytes']:>12} B  {versions:<12} {'keep' if batch['keep'] else 'PRUNE'}: "
            f"{batch['why']}"
        )
    if args.action == "prune":
        verb = "pruned" if record["applied"] else "would prune (dry run; --apply to prune)"
        print(f"{verb} {len(record['pruned'])} batches, {record['bytes_freed']} bytes")
    return EXIT_OK, record


def cmd_decide_retrain(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    from mlops_pack.steps.loop import decide

    now = aware_time(args.now, "--now") if args.now else None
    record = decide(_context(args), Path(args.monitor), now)
    print(f"{record['model']}: {record['status']} -> {record['action']}: {record['why']}")
    return EXIT_OK, record


def cmd_labelled_batch(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    from mlops_pack.steps.labelled_batch import build

    start, end = aware_time(args.start, "--start"), aware_time(args.end, "--end")
    record = build(
        _context(args),
        start,
        end,
        log_dir=Path(args.log_dir) if args.log_dir else None,
        labels_dir=Path(args.labels_dir) if args.labels_dir else None,
    )
    print(
        f"{record['model']}: labelled batch {record['data_sha256'][:12]}: {record['rows']} of "
        f"{record['served_rows']} served rows labelled in {args.start} .. {args.end} "
        f"(classes {record['classes']}; {record['skipped']['total']} log/label lines skipped)"
    )
    return EXIT_OK, record


def cmd_record_escalation(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    from mlops_pack.steps.loop import record_escalation_answer

    record = record_escalation_answer(_context(args), Path(args.response), Path(args.loop))
    print(
        f"escalation answer recorded: {record['option']} by {record['approver']} "
        f"for incident {record['incident_id']}"
    )
    return EXIT_OK, record


def cmd_resume_retraining(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    from mlops_pack.steps.loop import resume_retraining

    record = resume_retraining(_context(args), args.reason)
    print(f"{record['model']}: automatic retraining resumed ({args.reason})")
    return EXIT_OK, record


def cmd_simulate(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    from datetime import date

    from mlops_pack.datagen.traffic import Scenario, simulate
    from mlops_pack.server_client import ServerClient
    from mlops_pack.spec import load_spec

    try:
        start = date.fromisoformat(args.start_date) if args.start_date else date.today()
    except ValueError:
        raise BadInputError(
            f"--start-date: {args.start_date!r} is not a date; use YYYY-MM-DD"
        ) from None
    scenario = Scenario(
        days=args.days,
        rows_per_day=args.rows_per_day,
        batch_rows=args.batch_rows,
        start=start,
        label_delay_days=args.label_delay_days,
        onset_day=args.onset_day,
        covariate_drift=args.covariate_drift,
        concept_drift=args.concept_drift,
        label_noise=args.label_noise,
        seed=args.seed,
    )
    key = _secret(args.prediction_key_file, "--prediction-key-file")
    record = simulate(
        load_spec(args.spec), ServerClient(args.server_url, key), Path(args.labels_dir), scenario
    )
    print(
        f"simulated {len(record['days'])} days: {record['requests']} requests, "
        f"{record['rows']} rows; {len(record['label_files'])} label files in {args.labels_dir} "
        f"(delay {scenario.label_delay_days} days)"
    )
    if args.out:
        write_json(Path(args.out) / "simulation.json", record)
    return EXIT_OK, record


def cmd_monitor(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """One window of served traffic against the champion's reference profile.

    An alarm is a normal outcome (exit 0); the record's ``status`` says which.
    """
    from mlops_pack.steps.monitor import monitor

    end = aware_time(args.end, "--end") if args.end else None
    if args.hours is not None and not 0 < args.hours <= 24 * 366:
        raise BadInputError(f"--hours {args.hours}: expected a number of hours in (0, 8784]")
    record = monitor(
        _context(args),
        log_dir=Path(args.log_dir) if args.log_dir else None,
        labels_dir=Path(args.labels_dir) if args.labels_dir else None,
        end=end,
        hours=args.hours,
    )
    print(
        f"monitor {record['model']} v{record['champion_version']}: {record['status']} "
        f"({record['window']['rows']} rows, {record['window']['labelled_rows']} labelled, "
        f"{record['skipped_total']} lines skipped)"
    )
    for alarm in record["alarms"]:
        print(f"  {alarm['kind']}: {alarm['summary']}")
    return EXIT_OK, record


# Parser ------------------------------------------------------------------------------


def _step(sub, name: str, func, help_text: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text)
    parser.add_argument(
        "--spec", required=True, help="model spec YAML (include/models/<name>.yaml)"
    )
    parser.add_argument("--out", help="work directory for result files (default .mlops/runs/...)")
    parser.add_argument("--run-id", help="the orchestrator's run id, recorded in every record")
    parser.add_argument("--overrides", help="run overrides as JSON text or a JSON file")
    parser.set_defaults(func=func, writes_result=True)
    return parser


def _server_args(parser: argparse.ArgumentParser, required: bool = False) -> None:
    parser.add_argument("--server-url", required=required, help="the model server, http://...")
    parser.add_argument("--admin-token-file", required=required, help="file with the admin token")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlops-pack", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check-spec", help="validate model spec files")
    p.add_argument("specs", nargs="+")
    p.set_defaults(func=cmd_check_spec, writes_result=False)

    p = sub.add_parser("schema", help="print the model spec JSON schema")
    p.add_argument("--output")
    p.add_argument(
        "--markdown", action="store_true", help="the spec reference (docs/spec-reference.md)"
    )
    p.add_argument("--examples", help="with --markdown: a folder of spec files to quote")
    p.set_defaults(func=cmd_schema, writes_result=False)

    _stack_commands(sub)

    _example_commands(sub)

    for name, func, text in (
        ("validate", cmd_validate, "validate a data batch"),
        ("train", cmd_train, "train and register a challenger"),
        ("retrain", cmd_retrain, "validate, train, evaluate, gate, promote"),
    ):
        p = _step(sub, name, func, text)
        p.add_argument("--data", help="data file, overriding the spec's data.path")
        if name == "retrain":
            p.add_argument("--approved-by", help="approver, when the spec requires approval")
    p = _step(sub, "evaluate", cmd_evaluate, "score challenger and champion on the holdout")
    p.add_argument("--challenger", help="challenger model version")
    p.add_argument("--train-result", help="train.json from the train step")
    p = _step(sub, "gate", cmd_gate, "decide from an evaluation record")
    p.add_argument("--evaluation", required=True, help="evaluation.json path or artifact URI")
    p.add_argument("--reason", help="why this run happens, recorded in the decision")
    p = _step(sub, "deploy", cmd_deploy, "load, smoke-test and canary the challenger")
    p.add_argument("--challenger", required=True, help="challenger model version")
    p.add_argument(
        "--smoke-sample", required=True, help="the evaluate step's smoke_sample_uri (or a path)"
    )
    _server_args(p, required=True)
    p.add_argument("--prediction-key-file", required=True)
    p = _step(sub, "promote", cmd_promote, "move the champion alias (compare-and-set)")
    p.add_argument("--decision", required=True)
    p.add_argument("--approved-by")
    _server_args(p)
    p = _step(sub, "record-approval", cmd_record_approval, "record an approval answer")
    p.add_argument("--response", required=True, help="the approval task's answer (JSON)")
    p.add_argument("--decision", required=True, help="the decision it answered (JSON)")
    p = _step(sub, "rollback", cmd_rollback, "move champion back to previous (or a version)")
    p.add_argument("--reason", required=True)
    p.add_argument("--to-version")
    _server_args(p)
    p = _step(sub, "refresh-holdout", cmd_holdout_refresh, "replace the pinned holdout (recorded)")
    p.add_argument("--data", required=True, help="data to carve the new holdout from")
    p.add_argument("--reason", required=True)
    _record_commands(sub)
    _loop_commands(sub)
    return parser


def _loop_commands(sub) -> None:
    """What the monitor DAG runs after the monitor step, and a person's resume."""
    p = _step(sub, "decide-retrain", cmd_decide_retrain, "trigger, hold or escalate a retrain")
    p.add_argument("--monitor", required=True, help="the monitor step's result.json")
    p.add_argument("--now", help="the decision's time, ISO (default: the clock)")
    p = _step(sub, "labelled-batch", cmd_labelled_batch, "a training batch from served rows")
    p.add_argument("--start", required=True, help="the window's start, ISO with a time zone")
    p.add_argument("--end", required=True, help="the window's end (exclusive)")
    _feed_arguments(p)
    p = _step(sub, "record-escalation", cmd_record_escalation, "record an escalation answer")
    p.add_argument("--response", required=True, help="the escalation task's answer (JSON)")
    p.add_argument("--loop", required=True, help="the decide-retrain record it answered")
    p = _step(sub, "resume-retraining", cmd_resume_retraining, "lift a pause on retraining")
    p.add_argument("--reason", required=True)


def _example_commands(sub) -> None:
    """Example data, and example traffic for a running model server."""
    p = sub.add_parser("generate", help="write example data")
    p.add_argument("dataset", choices=["churn", "diabetes"])
    p.add_argument("--output", required=True, help=".csv or .parquet (churn), .csv (diabetes)")
    p.add_argument("--rows", type=int, default=20_000)
    p.add_argument("--month", type=int, default=1)
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--covariate-drift", type=float, default=0.0)
    p.add_argument("--concept-drift", type=float, default=0.0)
    p.add_argument("--label-noise", type=float, default=0.0)
    p.set_defaults(func=cmd_generate, writes_result=False)
    p = sub.add_parser(
        "simulate", help="send generated traffic to a model server and write delayed labels"
    )
    p.add_argument("--spec", required=True, help="the served model's spec (churn features)")
    p.add_argument("--server-url", required=True, help="the model server, http://...")
    p.add_argument("--prediction-key-file", required=True, help="file with the prediction key")
    p.add_argument("--labels-dir", required=True, help="the label feed's root folder")
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--rows-per-day", type=int, default=500)
    p.add_argument("--batch-rows", type=int, default=100, help="rows per request")
    p.add_argument("--start-date", help="first simulated day, YYYY-MM-DD (default today)")
    p.add_argument("--label-delay-days", type=int, default=2, help="labels of day D arrive D+k")
    p.add_argument("--onset-day", type=int, default=0, help="0-based day the drift starts")
    p.add_argument("--covariate-drift", type=float, default=0.0)
    p.add_argument("--concept-drift", type=float, default=0.0)
    p.add_argument("--label-noise", type=float, default=0.0, help="0.5: labels are coin flips")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--out", help="folder for simulation.json (per-day summary)")
    p.set_defaults(func=cmd_simulate, writes_result=False)


def _feed_arguments(p) -> None:
    """Where a window's prediction logs and labels are (a step without a shared file
    system gets copies of the window's days, and is told where)."""
    p.add_argument("--log-dir", help="prediction logs (default: spec, then environment)")
    p.add_argument("--labels-dir", help="label feed (default: spec, then environment)")


def _monitor_command(sub) -> None:
    p = _step(sub, "monitor", cmd_monitor, "judge a window of served predictions")
    _feed_arguments(p)
    p.add_argument("--end", help="window end, ISO-8601 with time zone (default: now)")
    p.add_argument("--hours", type=float, help="window length (default monitoring.window_hours)")
    p.set_defaults(flat_result=True)


def _stack_commands(sub) -> None:
    p = sub.add_parser("stack", help="the docker-compose stack: secrets, TLS, dashboards")
    stack = p.add_subparsers(dest="stack_command", required=True)
    p = stack.add_parser("init", help="write .env and the model servers' secrets (once)")
    p.add_argument("--dir", default=".", help="the folder of docker-compose.yaml")
    p.add_argument("--include", help="include dir with the model specs (default DIR/include)")
    p.set_defaults(func=cmd_stack_init, writes_result=False)
    p = stack.add_parser(
        "tls", help="write a CA and the certificates of MLflow and the model servers (once)"
    )
    p.add_argument("--dir", default=".", help="the folder of docker-compose.yaml")
    p.add_argument(
        "--name",
        action="append",
        default=[],
        help="another name (or IP) clients on other hosts reach MLflow by; repeatable",
    )
    p.add_argument(
        "--server-name",
        action="append",
        default=[],
        metavar="MODEL=NAME",
        help="another name (or IP) clients reach MODEL's server by; repeatable",
    )
    p.add_argument("--include", help="include dir with the model specs (default DIR/include)")
    p.set_defaults(func=cmd_stack_tls, writes_result=False)
    p = stack.add_parser(
        "dashboards",
        help="write a Grafana dashboard per served model, and prometheus.tls.yml",
    )
    p.add_argument("--include", default="include")
    p.set_defaults(func=cmd_stack_dashboards, writes_result=False)


def _record_commands(sub) -> None:
    """Commands over what the registry keeps: history, retained data, reproduction; and
    over what the served model did: monitoring."""
    _monitor_command(sub)
    _step(sub, "history", cmd_history, "print the model's decision and alias history")
    p = sub.add_parser("data", help="list or prune the retained raw data batches")
    p.add_argument("action", choices=["list", "prune"])
    p.add_argument("--spec", required=True)
    p.add_argument("--apply", action="store_true", help="prune for real (default: dry run)")
    p.set_defaults(func=cmd_data, writes_result=False)
    p = _step(sub, "reproduce", cmd_reproduce, "retrain a version from its records and compare")
    p.add_argument("--version", required=True, help="the model version to reproduce")


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into ``StepTerminated`` so ``finally`` blocks run (``docker stop``).

    Only where nobody else handles it: in a step container or a shell, not inside an
    Airflow task process (the in-process runner), whose own handler stays in charge.
    """
    mine = (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    )
    if mine:
        signal.signal(signal.SIGTERM, _terminated)
    try:
        yield
    finally:
        if mine:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _terminated(signum: int, frame: Any) -> None:
    raise StepTerminated("the step was stopped (SIGTERM) before it finished")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code, record, error = EXIT_INTERNAL, {}, None
    try:
        from mlops_pack import mlflow_credentials
        from mlops_pack.extensions import load_extensions

        # A step container's MLflow credentials come as a file (never its environment).
        mlflow_credentials.load_named_file()
        # MLflow's client reads each run again when it ends, only to print the run's
        # address: a request to the tracking server per run, for a line in the middle of
        # this command's output (the result carries the run's id; the task's links lead to
        # MLflow). MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT=false brings it back.
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        load_extensions()
        with _stop_on_sigterm():
            code, record = args.func(args)
    except Exception as exc:
        from mlops_pack.registry_versions import refusal

        known = exc if isinstance(exc, MlopsPackError) else refusal(exc)
        if known is not None:
            code, record, error = known.exit_code, known.payload, str(known)
            print(f"error: {known}", file=sys.stderr)
        else:  # an internal error: keep the traceback for the log
            traceback.print_exc()
            error = f"{type(exc).__name__}: {exc}"
    if getattr(args, "flat_result", False) and error is None and getattr(args, "out", None):
        # The monitor's record is its result: its status (healthy, drift, ...) is what a
        # caller branches on, next to the exit code every step reports.
        write_json(
            Path(args.out) / "result.json",
            {"step": args.command, "exit_code": code, "error": None, **record},
        )
    elif args.writes_result and getattr(args, "out", None):
        write_json(
            Path(args.out) / "result.json",
            {
                "step": args.command,
                "status": status_of(code),
                "exit_code": code,
                "error": error,
                "result": record,
            },
        )
    return code


if __name__ == "__main__":
    raise SystemExit(main())
