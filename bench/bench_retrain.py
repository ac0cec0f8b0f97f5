"""A whole retrain (validate -> train -> evaluate -> gate -> promote) against its pure compute.

Two retrains run one after the other in a fresh MLOPS_PACK_HOME: the first on a month-1
batch (no champion yet: it promotes), the second on a month-2 batch (scored against the
champion with the paired bootstrap: it compares). Three views of the same work:

A. ``mlops-pack retrain`` as a subprocess (``python -m mlops_pack.cli retrain``), as a
   person or a step container runs it: process wall time, and ``retrain()``'s own total
   and per-step timings from its result.json.
B. The same CLI entry point (``mlops_pack.cli.main``) in a child process that first times
   its imports, then wraps the library's functions (bench/_profiler.py) to attribute the
   run's time: reading, checks, GX, fitting, predicting, bootstrap, versus GX setup and
   Data Docs, the MLflow SQLite store, artifact copies, hashing, model save/load. Fresh
   MLOPS_PACK_HOME again.
C. The pure compute of the same work, in this process with every module already imported:
   reading the CSV and doing the GX/spec checks in plain pandas (bench/pandas_checks.py),
   reading the training data, carving the holdout and fitting the spec's pipeline,
   predicting on the holdout, the point metrics and (second run) the paired bootstrap.

The ratio reported is A's wall time over C's compute, per run.

    .venv/bin/python bench/bench_retrain.py
    .venv/bin/python bench/bench_retrain.py --rows 20000
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common

SUITE = _common.ROOT / "include" / "expectations" / "churn.json"
CLI = [sys.executable, "-m", "mlops_pack.cli"]

# Imported in this order by the instrumented child; each group's time excludes the ones
# before it (shared dependencies are charged to the first group that needs them).
IMPORT_GROUPS = [
    (
        "mlops_pack core (pydantic, yaml)",
        ["mlops_pack.cli", "mlops_pack.spec", "mlops_pack.records", "mlops_pack.gate"],
    ),
    ("numpy, pandas, pyarrow", ["numpy", "pandas", "pyarrow", "pyarrow.csv", "pyarrow.parquet"]),
    (
        "scikit-learn, scipy",
        [
            "sklearn.ensemble",
            "sklearn.pipeline",
            "sklearn.compose",
            "sklearn.impute",
            "sklearn.preprocessing",
            "sklearn.model_selection",
            "scipy.sparse",
        ],
    ),
    (
        "mlflow (client, stores, sklearn flavour), skops",
        [
            "mlflow",
            "mlflow.tracking",
            "mlflow.sklearn",
            "mlflow.artifacts",
            "mlflow.store.tracking.sqlalchemy_store",
            "mlflow.store.model_registry.sqlalchemy_store",
            "mlflow.store.artifact.local_artifact_repo",
            "skops.io",
            "filelock",
        ],
    ),
    ("great_expectations", ["great_expectations"]),
    (
        "mlops_pack steps",
        [
            "mlops_pack.steps.retrain",
            "mlops_pack.steps.validate",
            "mlops_pack.steps.train",
            "mlops_pack.steps.evaluate",
            "mlops_pack.steps.decide",
            "mlops_pack.steps.metrics",
        ],
    ),
]

# Labels of the in-run attribution (view B): data work, then orchestration.
COMPUTE = [
    "read data (CSV -> pandas)",
    "spec checks",
    "GX expectation runs",
    "holdout split + row hashes",
    "model fit",
    "batch predict",
    "metrics + paired bootstrap",
    "slice metrics",
]
OVERHEAD = [
    "GX setup (context, suite, checkpoint)",
    "GX Data Docs rebuilds",
    "Data Docs copy",
    "sha256 of files",
    "MLflow SQLite store open + schema",
    "MLflow client calls (SQLite)",
    "artifact copies (local artifact store)",
    "artifact download (mlflow.artifacts)",
    "model save: skops dump, MLmodel, env files",
    "model save: pip requirement inference",
    "model load (skops)",
    "holdout publish (parquet write)",
    "holdout load (parquet read)",
    "single-row latency probe (50 calls per model)",
]


# Child side (view B) ------------------------------------------------------------------


def _instrument(prof: Any) -> None:
    import great_expectations.checkpoint.actions as gx_actions
    import mlflow.models
    import mlflow.sklearn
    import mlflow.store.artifact.local_artifact_repo as local_repo
    import mlflow.store.model_registry.sqlalchemy_store as registry_store
    import mlflow.store.tracking.sqlalchemy_store as tracking_store
    import sklearn.pipeline
    from mlflow.tracking import MlflowClient
    from mlops_pack import registry
    from mlops_pack.steps import evaluate, holdout, metrics, spec_checks, train, validate

    c, o = COMPUTE, OVERHEAD
    prof.wrap_generator(validate, "iter_chunks", c[0])
    prof.wrap(train, "read_frame", c[0])
    prof.wrap(spec_checks.SpecChecks, "update", c[1])
    prof.wrap(validate.GxRunner, "run", c[2])
    prof.wrap(holdout, "split", c[3])
    prof.wrap(holdout, "exclusion", c[3])
    prof.wrap(sklearn.pipeline.Pipeline, "fit", c[4], absorb=True)
    prof.wrap(evaluate, "predict", c[5])
    prof.wrap(metrics, "score", c[6])
    prof.wrap(metrics, "paired_bootstrap", c[6])
    prof.wrap(evaluate, "_slices", c[7], absorb=True)

    prof.wrap(validate.GxRunner, "__init__", o[0])
    prof.wrap(gx_actions.UpdateDataDocsAction, "run", o[1])
    prof.wrap(shutil, "copytree", o[2])
    for module in (validate, train, holdout):
        prof.wrap(module, "sha256_file", o[3])
    prof.wrap(tracking_store.SqlAlchemyStore, "__init__", o[4])
    prof.wrap(registry_store.SqlAlchemyStore, "__init__", o[4])
    prof.wrap_public_methods(MlflowClient, o[5])
    for name in ("log_artifact", "log_artifacts", "download_artifacts"):
        prof.wrap(local_repo.LocalArtifactRepository, name, o[6], absorb=True)
    prof.wrap(registry.Registry, "download", o[7])
    prof.wrap(mlflow.sklearn, "save_model", o[8])
    prof.wrap(mlflow.models, "infer_pip_requirements", o[9], absorb=True)
    prof.wrap(evaluate, "load_model", o[10])
    prof.wrap(holdout, "_publish", o[11])
    prof.wrap(holdout, "load", o[12])
    prof.wrap(evaluate, "_latency", o[13], absorb=True)


def child(data: Path, out: Path, result: Path) -> None:
    imports: dict[str, float] = {}
    for label, modules in IMPORT_GROUPS:
        started = time.perf_counter()
        for module in modules:
            importlib.import_module(module)
        imports[label] = time.perf_counter() - started
    from _profiler import Profiler
    from mlops_pack.cli import main

    prof = Profiler()
    _instrument(prof)
    started = time.perf_counter()
    code = main(["retrain", "--spec", str(_common.SPEC), "--data", str(data), "--out", str(out)])
    wall = time.perf_counter() - started
    result.write_text(
        json.dumps(
            {"imports": imports, "run_wall": wall, "exit_code": code, "profile": prof.table()}
        ),
        encoding="utf-8",
    )


# Parent side --------------------------------------------------------------------------


def _env(home: Path) -> dict[str, str]:
    return dict(
        os.environ,
        MLOPS_PACK_HOME=str(home),
        GX_ANALYTICS_ENABLED="false",
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
    )


def view_a(files: list[Path], work: Path) -> list[dict[str, Any]]:
    home = work / "home-cli"
    runs = []
    for index, data in enumerate(files, 1):
        out = work / f"cli-run{index}"
        with _common.Meter() as meter:
            proc = subprocess.run(
                [
                    *CLI,
                    "retrain",
                    "--spec",
                    str(_common.SPEC),
                    "--data",
                    str(data),
                    "--out",
                    str(out),
                ],
                env=_env(home),
                capture_output=True,
                text=True,
                cwd=work,
                check=False,
            )
        wall = meter.wall
        record = json.loads((out / "result.json").read_text(encoding="utf-8"))
        if record["status"] not in ("ok", "rejected"):
            raise SystemExit(
                f"retrain {index} failed ({record['status']}): {record['error']}\n"
                f"{proc.stderr[-3000:]}"
            )
        result = record["result"]
        runs.append(
            {
                "process_wall": wall,
                "exit_code": proc.returncode,
                "verdict": result["verdict"],
                "retrain_seconds": result["seconds"],
                "timings": result["timings"],
                "champion_before": result["champion_before"],
                "challenger": result["challenger_version"],
                "meter": meter.as_dict(),
            }
        )
    return runs


def view_b(files: list[Path], work: Path) -> list[dict[str, Any]]:
    home = work / "home-instrumented"
    runs = []
    for index, data in enumerate(files, 1):
        result = work / f"instrumented-run{index}.json"
        argv = ["--child", "--data", str(data), "--out", str(work / f"instrumented-run{index}")]
        child = _common.run_child(
            __file__,
            [*argv, "--result", str(result)],
            env=_env(home),
            log=work / f"instrumented-run{index}.log",
            cwd=work,
        )
        wall, meter = child.wall, child.meter
        if not result.exists():
            raise SystemExit(f"instrumented retrain {index} failed:\n{child.tail()}")
        runs.append(
            {
                "process_wall": wall,
                "meter": meter.as_dict(),
                **json.loads(result.read_text(encoding="utf-8")),
            }
        )
    return runs


def view_c(
    files: list[Path],
    resamples_seed: tuple[int, int],
) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    import pandas_checks
    from mlops_pack.metric_catalog import metric_info
    from mlops_pack.spec import load_spec
    from mlops_pack.steps import metrics
    from mlops_pack.steps.dataset import read_frame, row_hashes
    from mlops_pack.steps.evaluate import labels, predict
    from mlops_pack.steps.holdout import split
    from mlops_pack.steps.train import build_pipeline

    spec = load_spec(_common.SPEC)
    resamples, seed = resamples_seed
    direction = {m: metric_info(m).higher_is_better for m in spec.metrics}
    runs: list[dict[str, float]] = []
    meters: list[dict[str, float]] = []
    holdout = champion = None
    for data in files:
        t: dict[str, float] = {}
        meter = _common.Meter().__enter__()
        with _common.timer(t, "validate: read + GX/spec checks in pandas"):
            checked = pandas_checks.validate_with_pandas(
                data, spec, SUITE, spec.validation.chunk_rows
            )
        assert not checked["failed"], checked
        with _common.timer(t, "train: read data"):
            frame = read_frame(data, spec)
        with _common.timer(t, "train: holdout split + row hashes"):
            if holdout is None:
                holdout = split(spec, frame)
            held = set(row_hashes(holdout, spec).to_numpy())
            train_frame = frame.loc[~row_hashes(frame, spec).isin(held).to_numpy()]
        with _common.timer(t, "train: fit"):
            model = build_pipeline(spec).fit(train_frame, train_frame[spec.target])
        with _common.timer(t, "evaluate: predict + point metrics"):
            y = labels(spec, holdout)
            new = predict(spec, model, holdout)
            scores = {m: metrics.score(m, y, new) for m in spec.metrics}
            if champion is not None:
                old = predict(spec, champion, holdout)
                scores.update({f"old_{m}": metrics.score(m, y, old) for m in spec.metrics})
        if champion is not None:
            with _common.timer(t, f"evaluate: paired bootstrap ({resamples} resamples)"):
                metrics.paired_bootstrap(
                    list(spec.metrics), y, old, new, resamples, seed, direction
                )
        champion = model if champion is None else champion  # run 1 promotes; run 2 is rejected
        meter.__exit__(None, None, None)
        runs.append(t)
        meters.append(meter.as_dict())
    return runs, meters


def import_costs() -> dict[str, float]:
    """Each heavy import alone, in a fresh interpreter (shared dependencies included)."""
    alone = {
        "pandas + pyarrow": "import pandas, pyarrow, pyarrow.csv, pyarrow.parquet",
        "scikit-learn (ensemble, pipeline)": "import sklearn.ensemble, sklearn.pipeline",
        "mlflow (client + sklearn flavour)": "import mlflow, mlflow.tracking, mlflow.sklearn",
        "great_expectations": "import great_expectations",
        "python -c pass (interpreter start)": "pass",
    }
    out = {}
    for label, statement in alone.items():
        code = (
            "import time; s = time.perf_counter(); "
            + statement
            + "; print(time.perf_counter() - s)"
        )
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env=dict(os.environ, GX_ANALYTICS_ENABLED="false"),
            check=True,
        )
        out[label] = (
            float(proc.stdout.strip().splitlines()[-1])
            if statement != "pass"
            else time.perf_counter() - started
        )
    return out


def _other(meter: dict[str, float]) -> str:
    return (
        f"other processes used {meter['other_cpu']:.1f} CPU-s = "
        f"{meter['other_cpu'] / meter['wall']:.2f} of {os.cpu_count()} cores"
    )


def _print_profile(run: dict[str, Any]) -> dict[str, float]:
    profile = {k: v["seconds"] for k, v in run["profile"].items()}
    calls = {k: v["calls"] for k, v in run["profile"].items()}
    imports = sum(run["imports"].values())
    compute = sum(profile.get(k, 0.0) for k in COMPUTE)
    overhead = sum(profile.get(k, 0.0) for k in OVERHEAD)
    rest = run["run_wall"] - compute - overhead
    startup = run["process_wall"] - run["run_wall"] - imports
    print(
        f"      process {run['process_wall']:.2f} s = interpreter start/exit {startup:.2f} + "
        f"imports {imports:.2f} + retrain {run['run_wall']:.2f}"
    )
    for label, seconds in run["imports"].items():
        print(f"         import {label:<54} {seconds:7.2f} s")
    print(f"      data work inside the run: {compute:.2f} s")
    for label in COMPUTE:
        if label in profile:
            print(f"         {label:<61} {profile[label]:7.2f} s  ({calls[label]} calls)")
    print(f"      orchestration inside the run: {overhead:.2f} s")
    for label in OVERHEAD:
        if label in profile:
            print(f"         {label:<61} {profile[label]:7.2f} s  ({calls[label]} calls)")
    print(f"      not attributed (records, locks, pydantic, gate, temp dirs, ...): {rest:.2f} s")
    return {
        "imports": imports,
        "compute": compute,
        "overhead": overhead,
        "rest": rest,
        "startup": startup,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows of each monthly batch")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="cap OpenMP/BLAS threads (default: the libraries' own choice)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.data, args.out, args.result)
        return

    _common.limit_threads(args.threads)
    from mlops_pack.spec import load_spec

    spec = load_spec(_common.SPEC)
    _common.header("bench_retrain: mlops-pack retrain wall time vs its pure compute")
    print(f"   {_common.versions()}; threads: {args.threads or 'library defaults'}")
    files = [_common.churn_file(args.rows, month=1), _common.churn_file(args.rows, month=2)]
    work = Path(tempfile.mkdtemp(prefix="bench-retrain-"))
    try:
        cli = view_a(files, work)
        instrumented = view_b(files, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    compute, compute_meters = view_c(
        files, (spec.gate.uncertainty.resamples, spec.gate.uncertainty.seed)
    )
    alone = import_costs()

    print(f"\n-- {args.rows:,} rows per batch; run 1 = month 1 (first run), run 2 = month 2")
    summary = []
    for index, (a, b, c, cm) in enumerate(
        zip(cli, instrumented, compute, compute_meters, strict=True), 1
    ):
        pure = sum(c.values())
        steps = ", ".join(f"{k} {v:.2f}" for k, v in a["timings"].items())
        print(
            f"\n   run {index}: verdict {a['verdict']} (champion before: "
            f"{a['champion_before'] or 'none'}, challenger v{a['challenger']})"
        )
        print(
            f"   A. CLI subprocess wall {a['process_wall']:7.2f} s; "
            f"retrain() {a['retrain_seconds']:.2f} s ({steps})"
        )
        print(f"      (cpu {a['meter']['cpu']:.2f} s; {_other(a['meter'])})")
        print(f"   C. pure compute        {pure:7.2f} s (cpu {cm['cpu']:.2f} s; {_other(cm)})")
        for label, seconds in c.items():
            print(f"         {label:<61} {seconds:7.2f} s")
        print(
            f"   ratio: CLI wall / compute = {a['process_wall'] / pure:.1f}x; "
            f"retrain() / compute = {a['retrain_seconds'] / pure:.1f}x"
        )
        print(
            f"   B. where the time goes (instrumented child, wall {b['process_wall']:.2f} s, "
            f"cpu {b['meter']['cpu']:.2f} s; {_other(b['meter'])}):"
        )
        parts = _print_profile(b)
        summary.append(
            {
                "run": index,
                "cli": a,
                "instrumented": b,
                "compute": c,
                "compute_meter": cm,
                "pure_compute": pure,
                "ratio_cli_wall": a["process_wall"] / pure,
                "ratio_retrain_seconds": a["retrain_seconds"] / pure,
                "parts": parts,
            }
        )
    print("\n   each heavy import alone, fresh interpreter (s):")
    for label, seconds in alone.items():
        print(f"      {label:<50} {seconds:6.2f}")
    print("\nsummary:")
    for row in summary:
        print(
            f"   run {row['run']}: CLI wall {row['cli']['process_wall']:.1f} s, retrain() "
            f"{row['cli']['retrain_seconds']:.1f} s, pure compute {row['pure_compute']:.1f} s, "
            f"ratio {row['ratio_cli_wall']:.1f}x (wall) / {row['ratio_retrain_seconds']:.1f}x "
            "(retrain())"
        )
    path = _common.write_json_result(
        "bench_retrain",
        {"machine": _common.machine(), "rows": args.rows, "runs": summary, "imports_alone": alone},
    )
    print(f"   figures saved to {path}")


if __name__ == "__main__":
    main()
