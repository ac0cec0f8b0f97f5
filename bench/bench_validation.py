"""Validation throughput of the churn spec, library versus plain pandas, and peak memory.

For each size in --rows this script generates (or reuses) a churn CSV with the library's
generator, then validates it twice, each time in a fresh child process:

- library: ``mlops_pack.steps.validate.validate`` through a ``StepContext`` (header, sha256,
  chunked typed read, spec checks, the GX suite with Data Docs, the JSON report and the
  MLflow 'validate' run), with a fresh MLOPS_PACK_HOME;
- pandas: the same checks written directly in pandas (bench/pandas_checks.py), reading the
  CSV with ``read_csv(chunksize=...)``.

Throughput is rows divided by the wall time of the validation call; imports are timed
separately and excluded (they are a fixed cost, reported on their own). The library's
time is also broken down (read, spec checks, GX, Data Docs, MLflow) by wrapping the
library's functions from the child process (the library is not modified).

Then the memory section validates the largest file with the library in a child process
under a memory cap smaller than the file: first RLIMIT_AS (address space), then a memory
cgroup (v2 or v1) created under this process's own cgroup, if possible. The child's peak
RSS comes from wait4() (ru_maxrss); the cgroup's own peak and OOM counters are read too.

    .venv/bin/python bench/bench_validation.py                      # 1M and 10M rows
    .venv/bin/python bench/bench_validation.py --rows 100000 --mem-rows 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common

SUITE = _common.ROOT / "include" / "expectations" / "churn.json"
# Where the library's validate() time goes; indented names are part of the one above.
PARTS = [
    "sha256 of the file",
    "read + parse (arrow CSV -> pandas)",
    "spec checks (SpecChecks.update)",
    "GX setup (context, suite, checkpoint)",
    "GX checkpoint runs",
    "  of which Data Docs rebuilds",
    "MLflow 'validate' run",
    "  of which SQLite store open + schema",
    "  of which artifact copies (report, docs)",
]


# Child side ---------------------------------------------------------------------------


def _rss_now_mb() -> float:
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _vm_peak_mb() -> float:
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmPeak:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _instrument(parts: dict[str, float], counters: dict[str, Any]) -> None:
    """Wrap library functions (in this child only) to time where validation goes."""
    import great_expectations.checkpoint.actions as gx_actions
    from mlops_pack.steps import validate as v

    def wrap(owner: Any, name: str, key: str) -> None:
        original = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                parts[key] = parts.get(key, 0.0) + time.perf_counter() - started

        setattr(owner, name, timed)

    original_chunks = v.iter_chunks

    def iter_chunks(*args: Any, **kwargs: Any):
        source = original_chunks(*args, **kwargs)
        while True:
            started = time.perf_counter()
            try:
                chunk = next(source)
            except StopIteration:
                parts[PARTS[1]] = parts.get(PARTS[1], 0.0) + time.perf_counter() - started
                return
            parts[PARTS[1]] = parts.get(PARTS[1], 0.0) + time.perf_counter() - started
            counters["chunks"].append(len(chunk))
            counters["rss_mb"] = max(counters["rss_mb"], _rss_now_mb())
            yield chunk

    v.iter_chunks = iter_chunks
    import mlflow.store.model_registry.sqlalchemy_store as registry_store
    import mlflow.store.tracking.sqlalchemy_store as tracking_store
    from mlflow.tracking import MlflowClient

    wrap(v, "sha256_file", PARTS[0])
    wrap(v.SpecChecks, "update", PARTS[2])
    wrap(v.GxRunner, "__init__", PARTS[3])
    wrap(v.GxRunner, "run", PARTS[4])
    wrap(gx_actions.UpdateDataDocsAction, "run", PARTS[5])
    wrap(v, "_log_to_mlflow", PARTS[6])
    wrap(tracking_store.SqlAlchemyStore, "__init__", PARTS[7])
    wrap(registry_store.SqlAlchemyStore, "__init__", PARTS[7])
    wrap(MlflowClient, "log_artifact", PARTS[8])
    wrap(MlflowClient, "log_artifacts", PARTS[8])


def child_library(data: Path, result: Path, instrument: bool) -> None:
    started = time.perf_counter()
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations  # noqa: F401
    import mlflow.tracking  # noqa: F401
    from mlops_pack.spec import RunOverrides
    from mlops_pack.steps.context import StepContext
    from mlops_pack.steps.validate import validate

    imports = time.perf_counter() - started
    result.with_suffix(".imported").touch()
    parts: dict[str, float] = {}
    counters: dict[str, Any] = {"chunks": [], "rss_mb": 0.0}
    if instrument:
        _instrument(parts, counters)
    out = Path(tempfile.mkdtemp(prefix="bench-validate-out-"))
    ctx = StepContext.load(_common.SPEC, out, overrides=RunOverrides(data_path=str(data)))
    started, cpu_started = time.perf_counter(), time.process_time()
    report = validate(ctx)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    failed = {c["name"]: c["unexpected_count"] for c in report["checks"] if not c["success"]}
    result.write_text(
        json.dumps(
            {
                "rows": report["rows"],
                "status": report["status"],
                "seconds": seconds,
                "cpu": cpu,
                "report_seconds": report["seconds"],
                "imports": imports,
                "parts": parts,
                "chunks": counters["chunks"],
                "rss_max_during_scan_mb": counters["rss_mb"],
                "maxrss_mb": _common.peak_rss_mb(),
                "vm_peak_mb": _vm_peak_mb(),
                "failed": failed,
                "nulls": {
                    c["name"].removeprefix("nulls in "): c["unexpected_count"]
                    for c in report["checks"]
                    if c["rule"] == "nulls"
                },
                "data_docs_bytes": sum(
                    p.stat().st_size for p in (out / "data_docs").rglob("*") if p.is_file()
                ),
            }
        ),
        encoding="utf-8",
    )
    shutil.rmtree(out, ignore_errors=True)


def child_pandas(data: Path, result: Path, chunk_rows: int) -> None:
    started = time.perf_counter()
    import pandas  # noqa: F401
    import pandas_checks
    from mlops_pack.spec import load_spec

    imports = time.perf_counter() - started
    result.with_suffix(".imported").touch()
    spec = load_spec(_common.SPEC)
    chunk_rows = chunk_rows or spec.validation.chunk_rows
    started, cpu_started = time.perf_counter(), time.process_time()
    out = pandas_checks.validate_with_pandas(data, spec, SUITE, chunk_rows)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    result.write_text(
        json.dumps(
            {
                "rows": out["rows"],
                "status": "failed" if out["failed"] else "passed",
                "seconds": seconds,
                "cpu": cpu,
                "imports": imports,
                "failed": out["failed"],
                "nulls": out.get("nulls", {}),
                "skipped": out.get("skipped_expectations", []),
                "maxrss_mb": _common.peak_rss_mb(),
                "vm_peak_mb": _vm_peak_mb(),
            }
        ),
        encoding="utf-8",
    )


# Parent side --------------------------------------------------------------------------


def run_child(
    kind: str,
    data: Path,
    *,
    chunk_rows: int = 0,
    instrument: bool = True,
    preexec=None,
    timeout: float = 3600,
    import_timeout: float = 120,
) -> dict[str, Any]:
    """Run one validation in a fresh process; returns its figures plus exit information.

    The child touches a marker once its imports are done; a child that has not got there
    within ``import_timeout`` seconds is hung (see the RLIMIT_AS notes) and is killed.
    """
    work = Path(tempfile.mkdtemp(prefix=f"bench-validation-{kind}-"))
    result = work / "result.json"
    log = work / "child.log"
    env = dict(
        os.environ,
        MLOPS_PACK_HOME=str(work / "home"),
        GX_ANALYTICS_ENABLED="false",
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
    )
    args = ["--child", kind, "--data", str(data), "--result", str(result)]
    args += ["--chunk-rows", str(chunk_rows)]
    if not instrument:
        args.append("--no-instrument")
    marker = result.with_suffix(".imported")
    child = _common.run_child(
        __file__,
        args,
        env=env,
        log=log,
        cwd=work,
        timeout=timeout,
        give_up=lambda elapsed: elapsed > import_timeout and not marker.exists(),
        preexec=preexec,
    )
    out: dict[str, Any] = {}
    if result.exists():
        out = json.loads(result.read_text(encoding="utf-8"))
    out.update(
        {
            "exit_code": child.returncode,
            "process_wall": child.wall,
            "timed_out": child.timed_out,
            "imports_done": marker.exists(),
            "meter": child.meter.as_dict(),
            "child_maxrss_mb": child.maxrss_mb,
            "log_tail": child.tail(1500),
        }
    )
    if child.returncode < 0:
        out["signal"] = signal.Signals(-child.returncode).name
    shutil.rmtree(work, ignore_errors=True)
    return out


def _describe_failure(run: dict[str, Any]) -> str:
    if run["exit_code"] == 0:
        return "ok"
    if run.get("timed_out"):
        where = "after its imports" if run["imports_done"] else "during its imports"
        return f"hung {where}: killed after {run['process_wall']:.0f} s"
    tail = [line for line in run["log_tail"].splitlines() if line.strip()]
    last = tail[-1][:160] if tail else ""
    return f"exit {run['exit_code']}{' (' + run['signal'] + ')' if 'signal' in run else ''}: {last}"


def _median_run(kind: str, path: Path, repeat: int, chunk_rows: int) -> dict[str, Any]:
    """Run ``repeat`` fresh children; keep the one with the median time, note the spread."""
    runs = []
    for _ in range(repeat):
        run = run_child(kind, path, chunk_rows=chunk_rows)
        if run["exit_code"] != 0:
            raise SystemExit(f"{kind} validation failed: {_describe_failure(run)}")
        runs.append(run)
    runs.sort(key=lambda r: r["seconds"])
    chosen = runs[len(runs) // 2]
    chosen["all_seconds"] = [r["seconds"] for r in runs]
    return chosen


def throughput(rows_list: list[int], chunk_rows: int, repeat: int) -> list[dict[str, Any]]:
    table = []
    for rows in rows_list:
        path = _common.churn_file(rows)
        size_mb = path.stat().st_size / 1e6
        print(
            f"\n-- {rows:,} rows, {size_mb:,.0f} MB CSV"
            + (f" (median of {repeat} fresh processes each)" if repeat > 1 else "")
        )
        lib = _median_run("library", path, repeat, 0)
        pan = _median_run("pandas", path, repeat, chunk_rows)
        if repeat > 1:
            print(
                f"   all runs (s): library {[round(x, 2) for x in lib['all_seconds']]}, "
                f"pandas {[round(x, 2) for x in pan['all_seconds']]}"
            )
        lib_rate, pan_rate = rows / lib["seconds"], rows / pan["seconds"]
        mlflow_seconds = lib["parts"].get(PARTS[6], 0.0)
        scan = lib["seconds"] - mlflow_seconds
        print(
            f"   library validate(): {lib['seconds']:8.2f} s  {lib_rate:12,.0f} rows/s   "
            f"(cpu {lib['cpu']:.2f} s; imports {lib['imports']:.2f} s excluded; "
            f"peak RSS {lib['child_maxrss_mb']:,.0f} MB)"
        )
        print(
            f"     without MLflow  : {scan:8.2f} s  {rows / scan:12,.0f} rows/s   "
            f"(checks + GX + Data Docs; the MLflow run took {mlflow_seconds:.2f} s)"
        )
        print(
            f"   plain pandas      : {pan['seconds']:8.2f} s  {pan_rate:12,.0f} rows/s   "
            f"(cpu {pan['cpu']:.2f} s; imports {pan['imports']:.2f} s excluded; "
            f"peak RSS {pan['child_maxrss_mb']:,.0f} MB)"
        )
        print(
            f"   ratio pandas/library rows/s: {pan_rate / lib_rate:.2f}x end to end, "
            f"{pan_rate / (rows / scan):.2f}x without the MLflow run; "
            f"cpu time ratio library/pandas {lib['cpu'] / pan['cpu']:.2f}x"
        )
        for kind, run in (("library", lib), ("pandas", pan)):
            m = run["meter"]
            print(
                f"   other processes used {m['other_cpu']:.1f} CPU-s during the {kind} child "
                f"({m['other_cpu'] / m['wall']:.2f} of {os.cpu_count()} cores)"
            )
        print(
            f"   library status {lib['status']}, pandas status {pan['status']}; "
            f"null counts agree: {lib['nulls'] == pan['nulls']}; "
            f"library failed checks {lib['failed'] or 'none'}, pandas {pan['failed'] or 'none'}"
        )
        print(
            f"   library breakdown (s) of validate() {lib['seconds']:.2f} s "
            f"(the report's own 'seconds' field: {lib['report_seconds']:.2f}):"
        )
        for name in PARTS:
            print(f"      {name:<50} {lib['parts'].get(name, 0.0):8.2f}")
        sizes = lib["chunks"]
        small = [s for s in sizes if s < chunk_rows // 10]
        print(
            f"   library chunks: {len(sizes)} ({len(small)} of them under "
            f"{chunk_rows // 10:,} rows: "
            f"{small[:6]}{' ...' if len(small) > 6 else ''}); Data Docs copied: "
            f"{lib['data_docs_bytes'] / 1e6:.1f} MB"
        )
        table.append(
            {
                "rows": rows,
                "file_mb": size_mb,
                "library": lib,
                "pandas": pan,
                "library_rows_per_s": lib_rate,
                "pandas_rows_per_s": pan_rate,
                "library_rows_per_s_without_mlflow": rows / scan,
                "ratio_pandas_over_library": pan_rate / lib_rate,
            }
        )
    return table


# Memory cap -------------------------------------------------------------------------


def _own_cgroup() -> tuple[str, Path] | None:
    """(version, directory) of this process's memory cgroup: v2 if mounted with the memory
    controller, else v1. A child group made there stays inside our own limits."""
    lines = Path("/proc/self/cgroup").read_text(encoding="ascii").splitlines()
    root = Path("/sys/fs/cgroup")
    controllers = root / "cgroup.controllers"
    if controllers.exists() and "memory" in controllers.read_text(encoding="ascii").split():
        for line in lines:
            if line.startswith("0::"):
                return "v2", root / line[3:].lstrip("/")
    for line in lines:
        _, names, rel = line.split(":", 2)
        if "memory" in names.split(","):
            base = root / "memory" / rel.lstrip("/")
            if base.exists():
                return "v1", base
    return None


def _make_cgroup(limit_bytes: int) -> tuple[str, Path] | tuple[None, str]:
    found = _own_cgroup()
    if found is None:
        return None, "no memory cgroup controller found"
    version, base = found
    group = base / f"bench-validation-{os.getpid()}"
    try:
        group.mkdir()
        if version == "v2":
            (group / "memory.max").write_text(str(limit_bytes), encoding="ascii")
            if (group / "memory.swap.max").exists():
                (group / "memory.swap.max").write_text("0", encoding="ascii")
        else:
            (group / "memory.limit_in_bytes").write_text(str(limit_bytes), encoding="ascii")
            memsw = group / "memory.memsw.limit_in_bytes"
            if memsw.exists():
                memsw.write_text(str(limit_bytes), encoding="ascii")
    except OSError as exc:
        if group.exists():
            group.rmdir()
        return None, f"cannot create a {version} memory cgroup under {base}: {exc}"
    return version, group


def _cgroup_stats(version: str, group: Path) -> dict[str, Any]:
    def read(name: str) -> str:
        path = group / name
        return path.read_text(encoding="ascii") if path.exists() else ""

    if version == "v2":
        events = dict(line.split() for line in read("memory.events").splitlines() if line)
        peak = read("memory.peak").strip()
        return {
            "peak_mb": int(peak) / 2**20 if peak else float("nan"),
            "oom_kills": int(events.get("oom_kill", 0)),
        }
    oom = dict(line.split() for line in read("memory.oom_control").splitlines() if line)
    return {
        "peak_mb": int(read("memory.max_usage_in_bytes") or 0) / 2**20,
        "oom_kills": int(oom.get("oom_kill", 0)),
    }


def _capped_run(kind: str, path: Path, cap: int, method: str, timeout: float) -> dict[str, Any]:
    """Run one validation under an RLIMIT_AS or cgroup memory cap of ``cap`` MiB."""
    limit = cap * 2**20
    if method == "rlimit_as":

        def rlimit() -> None:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

        run = run_child(kind, path, instrument=False, preexec=rlimit, timeout=timeout)
        return {
            "method": "RLIMIT_AS",
            "exit_code": run["exit_code"],
            "outcome": _describe_failure(run),
            "child_maxrss_mb": run["child_maxrss_mb"],
            "seconds": run.get("seconds"),
        }
    version, group = _make_cgroup(limit)
    if version is None:
        return {"method": "cgroup", "error": str(group)}
    procs = group / "cgroup.procs"

    def join() -> None:
        procs.write_text(str(os.getpid()), encoding="ascii")

    try:
        run = run_child(kind, path, instrument=False, preexec=join, timeout=timeout)
        stats = _cgroup_stats(version, group)
    finally:
        for _ in range(50):
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)
    return {
        "method": f"cgroup {version}",
        "exit_code": run["exit_code"],
        "outcome": _describe_failure(run),
        "child_maxrss_mb": run["child_maxrss_mb"],
        "seconds": run.get("seconds"),
        **stats,
    }


def _print_capped(kind: str, rows: int, cap: int, run: dict[str, Any]) -> None:
    if "error" in run:
        print(f"   {kind:<7} {run['method']}: not available ({run['error']})")
        return
    extra = ""
    if run["method"].startswith("cgroup"):
        extra = f"; cgroup peak charge {run['peak_mb']:,.0f} MiB, OOM kills {run['oom_kills']}"
    done = (
        f"; {rows:,} rows in {run['seconds']:.1f} s ({rows / run['seconds']:,.0f} rows/s)"
        if run["exit_code"] == 0 and run.get("seconds")
        else ""
    )
    print(
        f"   {kind:<7} {run['method']} {cap} MiB: {run['outcome']}; peak RSS "
        f"{run['child_maxrss_mb']:,.0f} MiB{extra}{done}"
    )


def memory_cap(
    rows: int,
    caps: list[int] | None,
    uncapped: dict[str, dict[str, Any]] | None,
) -> dict[str, Any]:
    path = _common.churn_file(rows)
    file_mib = path.stat().st_size / 2**20
    caps = caps or [int(file_mib * 0.85)]
    print(f"\n-- memory: validating {rows:,} rows ({file_mib:,.0f} MiB CSV) under caps {caps} MiB")
    out: dict[str, Any] = {
        "rows": rows,
        "file_mib": file_mib,
        "caps_mib": caps,
        "uncapped": {},
        "capped": [],
    }
    uncapped = uncapped or {}
    for kind in ("library", "pandas"):
        run = uncapped.get(kind) or run_child(kind, path, instrument=False)
        out["uncapped"][kind] = {
            k: run.get(k) for k in ("child_maxrss_mb", "vm_peak_mb", "seconds", "process_wall")
        }
        print(
            f"   {kind:<7} uncapped: peak RSS {run['child_maxrss_mb']:,.0f} MiB = "
            f"{run['child_maxrss_mb'] / file_mib:.2f}x the file; peak address space (VmPeak) "
            f"{run.get('vm_peak_mb', float('nan')):,.0f} MiB"
        )
    # Generous: a capped run may be slower (reclaim), but one that hangs must not block.
    timeout = 120 + 4 * max(out["uncapped"][k]["process_wall"] for k in ("library", "pandas"))
    for cap in caps:
        for method in ("rlimit_as", "cgroup"):
            for kind in ("library", "pandas"):
                run = _capped_run(kind, path, cap, method, timeout)
                _print_capped(kind, rows, cap, run)
                out["capped"].append({"kind": kind, "cap_mib": cap, **run})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument(
        "--chunk-rows",
        type=int,
        default=0,
        help="pandas read_csv chunk size (default: validation.chunk_rows)",
    )
    parser.add_argument(
        "--mem-rows",
        type=int,
        default=None,
        help="rows of the file for the memory-cap runs (default: largest --rows)",
    )
    parser.add_argument(
        "--mem-cap-mb",
        type=int,
        nargs="+",
        default=None,
        help="memory caps in MiB (default: 85%% of the file size)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="fresh processes per measurement; the median is reported",
    )
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument(
        "--skip-throughput",
        action="store_true",
        help="only the memory-cap runs (on --mem-rows or the largest --rows)",
    )
    parser.add_argument("--child", choices=["library", "pandas"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--no-instrument", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "library":
        child_library(args.data, args.result, not args.no_instrument)
        return
    if args.child == "pandas":
        child_pandas(args.data, args.result, args.chunk_rows)
        return

    from mlops_pack.spec import load_spec

    chunk_rows = args.chunk_rows or load_spec(_common.SPEC).validation.chunk_rows
    _common.header("bench_validation: churn spec validation, library vs plain pandas")
    print(f"   {_common.versions()}")
    table = [] if args.skip_throughput else throughput(sorted(args.rows), chunk_rows, args.repeat)
    payload: dict[str, Any] = {"throughput": table, "machine": _common.machine()}
    if not args.skip_memory:
        mem_rows = args.mem_rows or max(args.rows)
        # Reuse the throughput run's uncapped figures when it used the same file.
        same = next(
            (
                {"library": t["library"], "pandas": t["pandas"]}
                for t in table
                if t["rows"] == mem_rows
            ),
            None,
        )
        payload["memory"] = memory_cap(mem_rows, args.mem_cap_mb, same)
    print("\nsummary:")
    for row in table:
        print(
            f"   {row['rows']:>11,} rows: library {row['library_rows_per_s']:>10,.0f} rows/s, "
            f"pandas {row['pandas_rows_per_s']:>10,.0f} rows/s, pandas/library "
            f"{row['ratio_pandas_over_library']:.2f}x"
        )
    name = "bench_validation_memory" if args.skip_throughput else "bench_validation"
    print(f"   figures saved to {_common.write_json_result(name, payload)}")


if __name__ == "__main__":
    main()
