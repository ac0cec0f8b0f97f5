"""DAG parse time of the pack's DAG file for 1, 10 and 50 model specs.

For each N a temporary include dir holds N copies of ``include/models/churn.yaml`` renamed
``m001.yaml`` ... (the ``name`` field matches the file name, as the loader requires) and
the ``expectations/`` folder; ``MLOPS_PACK_INCLUDE_DIR`` points at it. Each measurement is
a fresh interpreter that times, in order: ``import airflow``, importing ``DagBag``, and
``DagBag(<repo>/dags)`` (which imports ``dags/mlops_pack_dags.py`` and so the DAG factory,
reads the N specs and builds N retrain DAGs plus the rollback DAG). The median of 5 runs
is reported, after one discarded warm-up run per configuration.

Two more fresh-interpreter measurements make the factory's own cost visible:

* ``import airflow`` alone, timed the same way (the floor every parse pays);
* the factory called directly: the time to import ``mlops_pack.airflow.dag_factory`` (on
  top of ``import airflow``), the time of ``build_all()`` itself, and the time Airflow's
  serialization of the built DAGs takes (the dag-processor's other cost per parse).

    .venv/bin/python bench/bench_parse.py
    .venv/bin/python bench/bench_parse.py --specs 1 10 50 --repeat 5
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common

ROOT = _common.ROOT
DAGS = ROOT / "dags"
CHURN = ROOT / "include" / "models" / "churn.yaml"
EXPECTATIONS = ROOT / "include" / "expectations"


# Child side: one measurement per fresh interpreter -----------------------------------


def child(mode: str) -> None:
    out: dict[str, Any] = {}
    started = time.perf_counter()
    import airflow  # noqa: F401  (the import is what is measured)

    out["import_airflow"] = time.perf_counter() - started
    if mode == "parse":
        mark = time.perf_counter()
        from airflow.dag_processing.dagbag import DagBag

        out["import_dagbag"] = time.perf_counter() - mark
        mark = time.perf_counter()
        bag = DagBag(dag_folder=str(DAGS))
        out["parse"] = time.perf_counter() - mark
        out["dags"] = len(bag.dags)
        out["tasks"] = sum(len(d.tasks) for d in bag.dags.values())
        out["import_errors"] = {str(k): str(v)[-500:] for k, v in bag.import_errors.items()}
        out["file_durations"] = {s.file: s.duration.total_seconds() for s in bag.dagbag_stats}
    elif mode == "factory":
        mark = time.perf_counter()
        from mlops_pack.airflow import dag_factory

        out["import_factory"] = time.perf_counter() - mark
        mark = time.perf_counter()
        dags = dag_factory.build_all()
        out["build_all"] = time.perf_counter() - mark
        out["dags"] = len(dags)
        # What the dag-processor does next with every DAG of the file (Airflow's cost,
        # including its JSON-schema check), the other half of each periodic parse.
        from airflow.serialization.serialized_objects import DagSerialization

        mark = time.perf_counter()
        for dag in dags.values():
            DagSerialization.to_dict(dag)
        out["serialize"] = time.perf_counter() - mark
    print("RESULT " + json.dumps(out))


# Parent side ------------------------------------------------------------------------


def make_include(parent: Path, count: int) -> Path:
    include = parent / f"include-{count:03d}"
    (include / "models").mkdir(parents=True)
    shutil.copytree(EXPECTATIONS, include / "expectations")
    text = CHURN.read_text(encoding="utf-8")
    for index in range(1, count + 1):
        name = f"m{index:03d}"
        renamed, hits = re.subn(r"(?m)^name: churn$", f"name: {name}", text, count=1)
        if hits != 1:
            raise SystemExit(f"{CHURN}: no 'name: churn' line to rename")
        (include / "models" / f"{name}.yaml").write_text(renamed, encoding="utf-8")
    return include


def measure(mode: str, env: dict[str, str], repeat: int) -> dict[str, Any]:
    """One discarded warm-up run, then ``repeat`` runs; medians of every timed field."""
    runs = []
    log = Path(tempfile.mkdtemp(prefix="bench-parse-")) / f"{mode}.log"
    for attempt in range(repeat + 1):
        child = _common.run_child(__file__, ["--child", mode], env=env, log=log, cwd=ROOT)
        output = log.read_text(encoding="utf-8", errors="replace").splitlines()
        line = next((x for x in output if x.startswith("RESULT ")), None)
        if child.returncode != 0 or line is None:
            raise SystemExit(f"child {mode} failed ({child.returncode}):\n{child.tail()}")
        record = json.loads(line.removeprefix("RESULT "))
        record["process_wall"] = child.wall
        if attempt:  # the first run warms the page cache and writes airflow.cfg
            runs.append(record)
    timed = [k for k, v in runs[0].items() if isinstance(v, float)]
    summary = {k: statistics.median(r[k] for r in runs) for k in timed}
    summary["all"] = runs
    for key in ("dags", "tasks", "import_errors"):
        if key in runs[0]:
            summary[key] = runs[0][key]
    return summary


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--specs",
        type=int,
        nargs="+",
        default=[1, 10, 50],
        help="numbers of model specs to parse (default 1 10 50)",
    )
    parser.add_argument("--repeat", type=int, default=5, help="measured runs per point")
    parser.add_argument("--child", choices=["import", "parse", "factory"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return

    _common.header("bench_parse: DAG parse time vs number of model specs")
    work = Path(tempfile.mkdtemp(prefix="bench-parse-"))
    airflow_home = work / "airflow-home"
    airflow_home.mkdir()
    base_env = dict(
        os.environ,
        AIRFLOW_HOME=str(airflow_home),
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
    )
    results: dict[str, Any] = {}
    try:
        with _common.Meter() as meter:
            results["import_airflow"] = measure("import", base_env, args.repeat)
            for count in args.specs:
                env = dict(base_env, MLOPS_PACK_INCLUDE_DIR=str(make_include(work, count)))
                parse = measure("parse", env, args.repeat)
                if parse["import_errors"] or parse["dags"] != count + 1:
                    raise SystemExit(
                        f"N={count}: {parse['dags']} DAGs, errors {parse['import_errors']}"
                    )
                factory = measure("factory", env, args.repeat)
                results[f"specs_{count}"] = {"specs": count, "parse": parse, "factory": factory}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    bare = results["import_airflow"]
    print(f"   {meter.note()}")
    print(f"\n-- medians of {args.repeat} fresh interpreters (ms)")
    print(
        f"   bare `import airflow`: {bare['import_airflow'] * 1000:.0f} ms in-process, "
        f"{bare['process_wall'] * 1000:.0f} ms process wall (interpreter start + exit)"
    )
    print(
        f"\n   {'specs':>5} {'DAGs':>5} {'tasks':>6} {'process':>8} {'imp. af':>8} "
        f"{'imp. bag':>8} {'DagBag':>8} {'per DAG':>8} | {'imp. fac':>8} {'build_all':>9} "
        f"{'per DAG':>8} {'serialize':>9}"
    )
    for count in args.specs:
        row = results[f"specs_{count}"]
        parse, factory = row["parse"], row["factory"]
        dags = parse["dags"]
        print(
            f"   {count:>5} {dags:>5} {parse['tasks']:>6} {ms(parse['process_wall'])} "
            f"{ms(parse['import_airflow'])} {ms(parse['import_dagbag'])} {ms(parse['parse'])} "
            f"{parse['parse'] * 1000 / dags:8.1f} | {ms(factory['import_factory'])} "
            f"{ms(factory['build_all']):>9} {factory['build_all'] * 1000 / dags:8.1f} "
            f"{ms(factory['serialize']):>9}"
        )
    if len(args.specs) >= 2:
        low, high = min(args.specs), max(args.specs)
        a, b = results[f"specs_{low}"], results[f"specs_{high}"]
        slope = (b["parse"]["parse"] - a["parse"]["parse"]) / (high - low)
        fixed = a["parse"]["parse"] - slope * low
        build_slope = (b["factory"]["build_all"] - a["factory"]["build_all"]) / (high - low)
        print(
            f"\n   DagBag parse = {fixed * 1000:.0f} ms fixed + {slope * 1000:.1f} ms per spec "
            f"(from N={low} and N={high}); build_all() alone: {build_slope * 1000:.1f} ms "
            "per spec"
        )
        results["fit"] = {
            "parse_fixed": fixed,
            "parse_per_spec": slope,
            "build_all_per_spec": build_slope,
        }
    print(
        "\n   columns: process = fresh interpreter wall incl. start/exit; imp. af = "
        "`import airflow`; imp. bag = importing DagBag; DagBag = DagBag(dags/) (imports the "
        "DAG file, the factory, reads the specs, builds the DAGs); per DAG = DagBag / DAGs; "
        "imp. fac = importing mlops_pack.airflow.dag_factory after airflow; build_all = the "
        "factory call alone; serialize = DagSerialization.to_dict of every built DAG, as "
        "the dag-processor does after each parse."
    )
    path = _common.write_json_result(
        "bench_parse",
        {
            "machine": _common.machine(),
            "repeat": args.repeat,
            "meter": meter.as_dict(),
            "results": results,
        },
    )
    print(f"   figures saved to {path}")


if __name__ == "__main__":
    main()
