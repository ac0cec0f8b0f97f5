"""Serving latency and throughput of our model server against `mlflow models serve`.

What is measured, in one run, on one machine:

1. Latency (p50, p95, p99) and achieved throughput of ``python -m mlops_pack.serving``
   (``POST /predict``) and of ``mlflow models serve`` (``POST /invocations``), both
   serving the SAME registered version (churn v1, ``models:/churn/1``), for single-row
   requests and for 100-row batches, at a fixed request rate (open loop), and the
   maximum throughput of one sequential client (closed loop). Ratios ours/mlflow for
   every figure: below 1 is better for latency, above 1 is better for throughput.
2. The time the deploy step adds to a DAG run: ``mlops-pack deploy`` (ready, stage and
   load, offline match, smoke latency requests, then the canary) and the switch inside
   ``mlops-pack promote --server-url`` (the server's candidate becomes stable).

How:

- A fresh MLOPS_PACK_HOME in a temp dir. Churn v1 is trained with ``mlops-pack retrain``
  on a month-1 batch (it promotes: first run); v2 with validate, train and evaluate on a
  month-2 batch, then gate. If the gate rejects v2 (a month-2 model is not always better
  on the shared holdout), the gate runs again with the override
  ``{"gate": {"mode": "non_inferiority", "margin": 0.2}}`` so that the deploy and the
  switch can be timed; the printout says which happened. All CLI steps run in this
  process (``mlops_pack.cli.main``), so their figures exclude interpreter start and
  imports, which a DAG task pays on top (see bench_retrain.py for those).
- Our server is started with ``start_server_process`` and given the champion (v1) with
  ``serve_champion``. MLflow's server is ``mlflow models serve -m models:/churn/1
  --env-manager local --workers 1`` against the same SQLite registry. Both inherit
  OMP_NUM_THREADS=1 (and OpenBLAS/MKL) from this script; ours also pins itself to one
  thread with threadpoolctl. MLflow loads the skops model as saved: MLflow 3.17 gates
  every sklearn deserialisation (skops included) behind MLFLOW_ALLOW_PICKLE_DESERIALIZATION,
  whose default is true, and takes the skops trusted types from the model's own MLmodel
  file (our TRUSTED_TYPES, written by the train step), so no setting is changed for it.
- The request rows are the 200 holdout rows the evaluate step writes to
  smoke_sample.json, with v1's offline scores. Before timing, both servers score all of
  them: ours must match the offline scores, and MLflow's labels must equal ours.
  What each returns differs: ours checks every field against the spec, returns
  P(churn) and labels (threshold 0.5), logs each request to a JSONL prediction log
  and keeps metrics; MLflow's pyfunc calls ``predict`` (labels only, which is
  ``predict_proba`` plus an argmax inside scikit-learn) on a DataFrame built from
  ``dataframe_records`` without any input schema (the model has no signature). The
  model work is the same; everything around it is each server's own, and is what is
  compared.
- Load generator (this process, same machine): open loop at a fixed rate, several
  threads each with a persistent HTTP/1.1 connection (http.client); request i is due at
  start + i/rate and its latency is counted from that due time, so a server (or a
  client thread) that falls behind shows up as queueing instead of being hidden. A
  warm-up period precedes every measurement and is discarded. The closed loop is one
  client sending the next request as soon as the previous one is answered. Rounds
  alternate which server goes first; the figures pool the rounds.
- Deploy: with our server serving v1, ``deploy`` of v2 then ``promote --decision ...
  --server-url`` run in this process, with bench/_profiler.py wrappers (this process only)
  around the deploy's parts. "smoke" is the deploy step's wall time minus its canary:
  ready, stage (copy + sha256), candidate load, offline match on 200 rows, 50 single-row
  latency requests, and the step's own context/registry/record work. "canary" is the
  canary alone (the churn spec replays holdout rows until the candidate has scored 100
  requests at a 25% share). "switch" is the server part of promote (``ServedSwitch.serve``:
  GET /admin/stats + POST /admin/promote); the whole promote step (lock, alias
  compare-and-set, history) is printed next to it. The added time is deploy + switch.
- Contention: the machine (2 vCPUs) is shared. For every measurement the script reports
  the CPU-seconds the two servers and this process used and what *other* processes used
  meanwhile (from /proc/stat), as in the other benchmarks.

Run (about 4 minutes with the defaults):

    .venv/bin/python bench/bench_serving.py
    .venv/bin/python bench/bench_serving.py --seconds 10 --closed-seconds 5 --rounds 1  # quick
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
from _profiler import Profiler

INCLUDE = _common.ROOT / "include"
MLFLOW = Path(sys.executable).with_name("mlflow")
MODEL = "churn"
PERCENTILES = (50, 95, 99)
LENIENT_GATE = '{"gate": {"mode": "non_inferiority", "margin": 0.2}}'
# Environment variables that would point the registry elsewhere than the temp home.
FOREIGN_SETTINGS = ("MLFLOW_REGISTRY_URI", "MLOPS_PACK_ARTIFACT_ROOT", "MLOPS_PACK_LOCK_DIR")


# Setup: a fresh home, two trained versions ---------------------------------------------


def fresh_home(work: Path) -> Path:
    home = work / "home"
    home.mkdir()
    for name in FOREIGN_SETTINGS:
        os.environ.pop(name, None)
    os.environ.update(
        MLOPS_PACK_HOME=str(home),
        MLOPS_PACK_DATA_DIR=str(_common.DATA),
        MLFLOW_TRACKING_URI=f"sqlite:///{home / 'mlflow.db'}",
        GX_ANALYTICS_ENABLED="false",
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
    )
    return home


def run_step(argv: list[str], out: Path, log: Path, allowed: tuple[str, ...] = ("ok",)) -> dict:
    """Run one CLI step in this process (its printout goes to ``log``); returns result.json."""
    from mlops_pack.cli import main

    with (
        log.open("a", encoding="utf-8") as sink,
        contextlib.redirect_stdout(sink),
        contextlib.redirect_stderr(sink),
    ):
        main([*argv, "--spec", str(_common.SPEC), "--out", str(out)])
    record = json.loads((out / "result.json").read_text(encoding="utf-8"))
    if record["status"] not in allowed:
        raise SystemExit(f"{argv[0]} failed ({record['status']}): {record['error']}; see {log}")
    return record


def train_versions(work: Path, rows: int, log: Path) -> dict[str, Any]:
    """v1 by retrain (the champion), v2 by validate/train/evaluate/gate; returns paths."""
    month1 = _common.churn_file(rows, month=1)
    month2 = _common.churn_file(rows, month=2)
    started = time.perf_counter()
    run_step(["retrain", "--data", str(month1)], work / "v1", log)
    run_step(["validate", "--data", str(month2)], work / "v2-validate", log)
    trained = run_step(["train", "--data", str(month2)], work / "v2-train", log)
    version = str(trained["result"]["version"])
    evaluation = run_step(["evaluate", "--challenger", version], work / "v2-evaluate", log)
    uri = evaluation["result"]["evaluation_uri"]
    gate = ["gate", "--evaluation", uri]
    decision = run_step(gate, work / "v2-gate", log, allowed=("ok", "rejected"))
    lenient = decision["status"] == "rejected"
    if lenient:
        decision = run_step([*gate, "--overrides", LENIENT_GATE], work / "v2-gate-lenient", log)
    return {
        "v1_sample": work / "v1" / "smoke_sample.json",
        "v2": version,
        "smoke_sample_uri": evaluation["result"]["smoke_sample_uri"],
        "decision": (work / ("v2-gate-lenient" if lenient else "v2-gate")) / "decision.json",
        "gate_summary": decision["result"].get("summary"),
        "lenient_gate": lenient,
        "seconds": time.perf_counter() - started,
    }


# The two servers -------------------------------------------------------------------------


def start_ours(work: Path, home: Path) -> tuple[Any, int, float]:
    """Our server as a local process, serving the champion (v1); returns it, pid, seconds."""
    from mlops_pack.airflow.model_server import serve_champion, start_server_process

    started = time.perf_counter()
    served, pid = start_server_process(
        model=MODEL,
        include_dir=INCLUDE,
        home=home,
        secrets_dir=work / "secrets",
        log_file=work / "ours.log",
        port=_common.free_port(),
    )
    version = serve_champion(served)
    if version != "1":
        raise SystemExit(f"our server serves champion v{version}, expected v1")
    return served, pid, time.perf_counter() - started


def start_mlflow(work: Path, home: Path, timeout: float) -> tuple[int, int, float]:
    """``mlflow models serve`` for models:/churn/1 with one worker; returns port, pid, s."""
    port = _common.free_port()
    env = dict(os.environ, PATH=f"{MLFLOW.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    command = [str(MLFLOW), "models", "serve", "-m", f"models:/{MODEL}/1", "-h", "127.0.0.1"]
    command += ["-p", str(port), "--env-manager", "local", "--workers", "1"]
    started = time.perf_counter()
    with (work / "mlflow.log").open("ab") as out:
        process = subprocess.Popen(
            command, env=env, cwd=home, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"mlflow models serve exited ({process.returncode}); see mlflow.log")
        with contextlib.suppress(OSError, http.client.HTTPException):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/ping")
            if conn.getresponse().status == 200:
                return port, process.pid, time.perf_counter() - started
        time.sleep(0.25)
    stop_group(process.pid)
    raise SystemExit(f"mlflow models serve did not answer /ping within {timeout:.0f} s")


def stop_group(pid: int) -> None:
    """End a server this script started (its own session, so its whole process group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)


@contextlib.contextmanager
def server_workspace(prefix: str, keep: bool) -> Iterator[tuple[Path, list[int]]]:
    """A temporary folder and a list for the pids of the servers started in it: at the
    end the servers are stopped and the folder removed (``keep``: printed instead)."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    pids: list[int] = []
    try:
        yield work, pids
    finally:
        for pid in pids:
            stop_group(pid)
        if keep:
            print(f"   kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def group_cpu_seconds(pgid: int) -> float:
    """CPU-seconds used so far by the live processes of one process group (from /proc)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text(encoding="ascii").rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # pgrp; utime and stime follow at 11 and 12
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


@dataclass
class Target:
    """One server under test: where to send, how to encode rows, and its process group."""

    name: str
    port: int
    path: str
    headers: dict[str, str]
    encode: Callable[[list[dict]], bytes]
    pgid: int

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def post(self, conn: http.client.HTTPConnection, body: bytes) -> tuple[int, bytes]:
        conn.request("POST", self.path, body=body, headers=self.headers)
        response = conn.getresponse()
        return response.status, response.read()

    def answer(self, rows: list[dict]) -> Any:
        conn = self.connect()
        try:
            status, raw = self.post(conn, self.encode(rows))
        finally:
            conn.close()
        if status != 200:
            raise SystemExit(f"{self.name}: HTTP {status}: {raw[:500]!r}")
        return json.loads(raw)


def targets(served: Any, mlflow_port: int, ours_pid: int, mlflow_pid: int) -> list[Target]:
    key = served.secret("prediction_key")
    json_type = {"Content-Type": "application/json"}
    return [
        Target(
            "ours",
            served.port,
            "/predict",
            {**json_type, "Authorization": f"Bearer {key}"},
            lambda rows: json.dumps({"rows": rows}).encode(),
            ours_pid,
        ),
        Target(
            "mlflow",
            mlflow_port,
            "/invocations",
            json_type,
            lambda rows: json.dumps({"dataframe_records": rows}).encode(),
            mlflow_pid,
        ),
    ]


def check_agreement(ours: Target, theirs: Target, sample: dict[str, Any]) -> dict[str, Any]:
    """Both servers score the sample rows (100 at a time): same labels, offline scores."""
    rows, offline = sample["rows"], np.asarray(sample["predictions"])
    scores, labels, mlflow_labels = [], [], []
    for start in range(0, len(rows), 100):
        batch = rows[start : start + 100]
        answer = ours.answer(batch)
        scores += answer["predictions"]
        labels += answer["labels"]
        mlflow_labels += theirs.answer(batch)["predictions"]
    single = [ours.answer([row])["predictions"][0] for row in rows[:20]]
    single_mlflow = [theirs.answer([row])["predictions"][0] for row in rows[:20]]
    return {
        "rows": len(rows),
        "ours_max_abs_diff_vs_offline": float(np.max(np.abs(np.asarray(scores) - offline))),
        "ours_single_row_max_abs_diff": float(np.max(np.abs(np.asarray(single) - offline[:20]))),
        "label_mismatches_ours_vs_mlflow": int(np.sum(np.asarray(labels) != mlflow_labels)),
        "label_mismatches_single_row": int(np.sum(np.asarray(labels[:20]) != single_mlflow)),
        "ours_labels_vs_offline_threshold": int(np.sum(np.asarray(labels) != (offline >= 0.5))),
        "positive_labels": int(np.sum(labels)),
    }


# Load generation -----------------------------------------------------------------------


@dataclass
class Samples:
    """Per request: when it was due, sent and answered (perf_counter seconds), and if ok."""

    due: list[float] = field(default_factory=list)
    sent: list[float] = field(default_factory=list)
    done: list[float] = field(default_factory=list)
    ok: list[bool] = field(default_factory=list)
    start: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)

    def add(self, due: float, sent: float, done: float, ok: bool) -> None:
        self.due.append(due)
        self.sent.append(sent)
        self.done.append(done)
        self.ok.append(ok)


def send(target: Target, conn: http.client.HTTPConnection, body: bytes) -> tuple[bool, Any]:
    """One request; a broken connection is replaced (and the request counted as failed)."""
    try:
        status, _ = target.post(conn, body)
        return status == 200, conn
    except (OSError, http.client.HTTPException):
        conn.close()
        return False, target.connect()


def open_loop(
    target: Target, bodies: list[bytes], rate: float, seconds: float, threads: int, into: Samples
) -> None:
    """Requests due at a fixed rate; latency counts from the due time (queueing included)."""
    total = max(1, round(rate * seconds))
    counter = itertools.count()
    start = time.perf_counter() + 0.05
    into.start = start

    def worker() -> None:
        conn = target.connect()
        while (index := next(counter)) < total:
            due = start + index / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            sent = time.perf_counter()
            ok, conn = send(target, conn, bodies[index % len(bodies)])
            into.add(due, sent, time.perf_counter(), ok)
        conn.close()

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()


def closed_loop(target: Target, bodies: list[bytes], seconds: float, into: Samples) -> None:
    """One client, the next request as soon as the previous one is answered."""
    conn = target.connect()
    into.start = time.perf_counter()
    deadline = into.start + seconds
    for index in itertools.count():
        now = time.perf_counter()
        if now >= deadline:
            break
        ok, conn = send(target, conn, bodies[index % len(bodies)])
        into.add(now, now, time.perf_counter(), ok)
    conn.close()


@contextlib.contextmanager
def measured(servers: dict[str, int], into: dict[str, float]) -> Iterator[None]:
    """CPU-seconds of each server (name: pgid), this process, everything else meanwhile."""
    before = {name: group_cpu_seconds(pgid) for name, pgid in servers.items()}
    with _common.Meter() as meter:
        yield
    used = {name: group_cpu_seconds(pgid) - before[name] for name, pgid in servers.items()}
    into |= {
        **{f"server_{name}": seconds for name, seconds in used.items()},
        "loadgen": meter.cpu,
        "other": max(0.0, meter.other_cpu - sum(used.values())),
        "wall": meter.wall,
    }


@dataclass
class Scenario:
    name: str
    batch: int
    rate: float | None  # requests/s for the open loop; None: closed loop
    seconds: float


def bodies_for(target: Target, rows: list[dict], batch: int) -> list[bytes]:
    """Request bodies cycling through the sample rows, ``batch`` rows each."""
    count = len(rows) if batch == 1 else max(1, len(rows) // 10)
    starts = [(i * (1 if batch == 1 else 10)) % len(rows) for i in range(count)]
    doubled = rows + rows
    return [target.encode(doubled[s : s + batch]) for s in starts]


def run_scenario(
    scenario: Scenario,
    target: Target,
    servers: list[Target],
    rows: list[dict],
    warmup: float,
    threads: int,
) -> Samples:
    bodies = bodies_for(target, rows, scenario.batch)
    samples = Samples()
    if scenario.rate is None:
        closed_loop(target, bodies, warmup, Samples())
        with measured({t.name: t.pgid for t in servers}, samples.cpu):
            closed_loop(target, bodies, scenario.seconds, samples)
    else:
        open_loop(target, bodies, scenario.rate, warmup, threads, Samples())
        with measured({t.name: t.pgid for t in servers}, samples.cpu):
            open_loop(target, bodies, scenario.rate, scenario.seconds, threads, samples)
    return samples


def summarize(runs: list[Samples], scenario: Scenario, target: str) -> dict[str, Any]:
    """Pool the rounds: latency percentiles (ms), throughput, errors, CPU per request."""
    ok = np.concatenate([np.asarray(r.ok, dtype=bool) for r in runs])
    due = np.concatenate([np.asarray(r.due) for r in runs])
    sent = np.concatenate([np.asarray(r.sent) for r in runs])
    done = np.concatenate([np.asarray(r.done) for r in runs])
    span = sum(max(r.done) - r.start for r in runs)
    latency = (done - due)[ok] * 1000
    service = (done - sent)[ok] * 1000
    cpu = {k: sum(r.cpu[k] for r in runs) for k in runs[0].cpu}
    server_cpu = cpu[f"server_{target}"]
    out = {
        "requests": int(ok.size),
        "errors": int((~ok).sum()),
        "offered_rps": scenario.rate,
        "achieved_rps": float(ok.sum() / span),
        "rows_per_s": float(ok.sum() * scenario.batch / span),
        "server_cpu_ms_per_request": 1000 * server_cpu / max(1, ok.size),
        "server_cpu_cores": server_cpu / cpu["wall"],
        "cpu_seconds": cpu,
        "other_cores": cpu["other"] / cpu["wall"],
    }
    for p in PERCENTILES:
        out[f"p{p}_ms"] = float(np.percentile(latency, p)) if latency.size else None
        out[f"service_p{p}_ms"] = float(np.percentile(service, p)) if service.size else None
    return out


def benchmark(
    scenarios: list[Scenario],
    servers: list[Target],
    rows: list[dict],
    rounds: int,
    warmup: float,
    threads: int,
) -> dict[str, dict[str, Any]]:
    """Each scenario on each server, ``rounds`` times, alternating which server goes first."""
    runs: dict[tuple[str, str], list[Samples]] = {}
    for round_index in range(rounds):
        order = servers if round_index % 2 == 0 else servers[::-1]
        for scenario in scenarios:
            part = Scenario(scenario.name, scenario.batch, scenario.rate, scenario.seconds / rounds)
            for target in order:
                print(
                    f"   round {round_index + 1}: {scenario.name} on {target.name} "
                    f"({part.seconds:.0f} s after {warmup:.0f} s warm-up)",
                    flush=True,
                )
                samples = run_scenario(part, target, servers, rows, warmup, threads)
                runs.setdefault((scenario.name, target.name), []).append(samples)
    results: dict[str, dict[str, Any]] = {}
    for scenario in scenarios:
        results[scenario.name] = {
            t.name: summarize(runs[(scenario.name, t.name)], scenario, t.name) for t in servers
        }
    return results


# Deploy and switch ---------------------------------------------------------------------


def instrument_deploy() -> Profiler:
    """Time the deploy's parts and the promote's server switch (this process only)."""
    from mlops_pack.server_client import ServerClient
    from mlops_pack.steps import deploy, served

    prof = Profiler()
    prof.wrap(ServerClient, "wait_ready", "ready (GET /health)")
    prof.wrap(deploy, "stage", "stage (copy + sha256)")
    prof.wrap(deploy.Deployment, "smoke", "smoke (offline match + latency requests)")
    prof.wrap(deploy.Deployment, "canary", "canary (synthetic traffic)")
    prof.wrap(served.ServedSwitch, "serve", "switch (server: candidate -> stable)")
    return prof


def deploy_and_switch(work: Path, served: Any, trained: dict[str, Any], log: Path) -> dict:
    """Time ``deploy`` of v2 against our server, then ``promote --server-url`` (the switch)."""
    admin, key = work / "admin_token", work / "prediction_key"
    for path, name in ((admin, "admin_token"), (key, "prediction_key")):
        path.write_text(served.secret(name), encoding="utf-8")
        path.chmod(0o600)
    server = ["--server-url", served.url, "--admin-token-file", str(admin)]
    prof = instrument_deploy()
    started = time.perf_counter()
    record = run_step(
        [
            "deploy",
            "--challenger",
            trained["v2"],
            "--smoke-sample",
            trained["smoke_sample_uri"],
            *server,
            "--prediction-key-file",
            str(key),
        ],
        work / "deploy",
        log,
    )
    deploy_wall = time.perf_counter() - started
    deploy_parts = {k: v["seconds"] for k, v in prof.table().items()}
    prof.exclusive.clear()
    prof.calls.clear()
    started = time.perf_counter()
    promotion = run_step(
        ["promote", "--decision", str(trained["decision"]), *server], work / "promote", log
    )
    promote_wall = time.perf_counter() - started
    return {
        "deploy_wall": deploy_wall,
        "deploy_record_seconds": record["result"]["seconds"],
        "deploy_parts": deploy_parts,
        "checks": record["result"]["checks"],
        "promote_wall": promote_wall,
        "promote_parts": {k: v["seconds"] for k, v in prof.table().items()},
        "promotion": promotion["result"],
    }


def served_version(served: Any) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    conn.request(
        "GET", "/version", headers={"Authorization": f"Bearer {served.secret('prediction_key')}"}
    )
    return json.loads(conn.getresponse().read())


# Report --------------------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:5.2f}x" if a is not None and b else "   n/a"


def print_benchmark(results: dict[str, dict[str, Any]]) -> None:
    print(
        "\n-- latency in ms (from the due time; service time from the send in brackets), "
        "throughput; ratio = ours / mlflow"
    )
    for name, by_server in results.items():
        ours, theirs = by_server["ours"], by_server["mlflow"]
        offered = f"{ours['offered_rps']:g} req/s offered" if ours["offered_rps"] else "closed"
        print(f"\n   {name} ({offered})")
        print(
            f"   {'':8}{'p50':>18}{'p95':>18}{'p99':>18}{'req/s':>9}{'rows/s':>9}"
            f"{'errors':>8}{'cpu ms/req':>11}"
        )
        for label, row in (("ours", ours), ("mlflow", theirs)):
            cells = "".join(
                f"{row[f'p{p}_ms']:8.1f} ({row[f'service_p{p}_ms']:6.1f})" for p in PERCENTILES
            )
            print(
                f"   {label:<8}{cells}{row['achieved_rps']:9.1f}{row['rows_per_s']:9.0f}"
                f"{row['errors']:>4}/{row['requests']:<4}{row['server_cpu_ms_per_request']:10.1f}"
            )
        cells = "".join(
            f"{ratio(ours[f'p{p}_ms'], theirs[f'p{p}_ms']):>8} "
            f"({ratio(ours[f'service_p{p}_ms'], theirs[f'service_p{p}_ms'])})"
            for p in PERCENTILES
        )
        print(
            f"   {'ratio':<8}{cells}{ratio(ours['achieved_rps'], theirs['achieved_rps']):>9}"
            f"{ratio(ours['rows_per_s'], theirs['rows_per_s']):>9}{'':8}"
            f"{ratio(ours['server_cpu_ms_per_request'], theirs['server_cpu_ms_per_request']):>11}"
        )
        print(
            f"   other processes used {ours['other_cores']:.2f} (ours' runs) and "
            f"{theirs['other_cores']:.2f} (mlflow's runs) of {os.cpu_count()} cores; "
            f"servers used {ours['server_cpu_cores']:.2f} / {theirs['server_cpu_cores']:.2f}"
        )


def print_deploy(timing: dict[str, Any]) -> dict[str, float]:
    parts, switch = timing["deploy_parts"], timing["promote_parts"]
    canary = parts.get("canary (synthetic traffic)", 0.0)
    server_switch = switch.get("switch (server: candidate -> stable)", 0.0)
    print("\n-- deploy (in-process CLI steps; interpreter start and imports not included)")
    print(
        f"   deploy step wall {timing['deploy_wall']:.2f} s (its record: "
        f"{timing['deploy_record_seconds']:.2f} s)"
    )
    for label, seconds in parts.items():
        print(f"      {label:<52} {seconds:7.3f} s")
    rest = timing["deploy_wall"] - sum(parts.values())
    print(f"      {'rest (context, registry, candidate load, records)':<52} {rest:7.3f} s")
    for check in timing["checks"]:
        print(
            f"      check {check['name']:<24} {'pass' if check['passed'] else 'FAIL'}: "
            f"{check['detail']}"
        )
    print(
        f"   promote step wall {timing['promote_wall']:.2f} s, of which the server switch "
        f"{server_switch:.3f} s; served after: {timing['promotion'].get('served')}"
    )
    added = {
        "smoke_seconds": timing["deploy_wall"] - canary,
        "canary_seconds": canary,
        "switch_seconds": server_switch,
        "added_seconds": timing["deploy_wall"] + server_switch,
    }
    print(
        f"   added by serving: smoke {added['smoke_seconds']:.2f} s + canary "
        f"{canary:.2f} s + switch {server_switch:.3f} s = {added['added_seconds']:.2f} s"
    )
    return added


def print_contention(whole: _common.Meter, out: dict[str, Any]) -> None:
    """How busy the machine was with work other than this benchmark and its two servers."""
    cores = os.cpu_count()
    servers = sum(out["server_cpu"].values())
    other = max(0.0, whole.other_cpu - servers)
    bench, deploy = out["bench_cpu"], out["deploy_cpu"]
    print(
        f"\n   contention: whole run wall {whole.wall:.0f} s; this process {whole.cpu:.1f} CPU-s, "
        f"the servers {servers:.1f} CPU-s, other processes {other:.1f} CPU-s "
        f"({other / whole.wall:.2f} of {cores} cores)"
    )
    print(
        f"   during the load tests other processes used {bench['other'] / bench['wall']:.2f} "
        f"of {cores} cores, during deploy + promote {deploy['other'] / deploy['wall']:.2f}; "
        f"load average {_common.loadavg()} at end"
    )


def server_log_problems(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    return [line for line in text.splitlines() if "ERROR" in line or "Traceback" in line]


# Main ----------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000, help="rows of each training batch")
    parser.add_argument("--rate-single", type=float, default=20.0, help="single-row req/s")
    parser.add_argument("--rate-batch", type=float, default=5.0, help="100-row req/s")
    parser.add_argument("--batch", type=int, default=100, help="rows per batch request")
    parser.add_argument(
        "--seconds",
        type=float,
        default=24.0,
        help="open-loop seconds per scenario and server (split over rounds)",
    )
    parser.add_argument(
        "--closed-seconds",
        type=float,
        default=10.0,
        help="closed-loop seconds per scenario and server (split over rounds)",
    )
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before each part")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of server order")
    parser.add_argument("--threads", type=int, default=8, help="open-loop client threads")
    parser.add_argument(
        "--blas-threads",
        type=int,
        default=1,
        help="OMP/BLAS threads for both servers and this process",
    )
    parser.add_argument("--start-timeout", type=float, default=180.0)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, home)")
    return parser.parse_args()


def scenarios_for(args: argparse.Namespace) -> list[Scenario]:
    return [
        Scenario("single row, open loop", 1, args.rate_single, args.seconds),
        Scenario(f"{args.batch} rows, open loop", args.batch, args.rate_batch, args.seconds),
        Scenario("single row, closed loop", 1, None, args.closed_seconds),
        Scenario(f"{args.batch} rows, closed loop", args.batch, None, args.closed_seconds),
    ]


def run(args: argparse.Namespace, work: Path, pids: list[int]) -> dict[str, Any]:
    home, log = fresh_home(work), work / "steps.log"
    trained = train_versions(work, args.rows, log)
    print(
        f"   trained v1 (champion) and v{trained['v2']} in {trained['seconds']:.1f} s; gate: "
        f"{'rejected, re-gated non-inferiority 0.2' if trained['lenient_gate'] else 'promote'}"
    )
    served, ours_pid, ours_start = start_ours(work, home)
    pids.append(ours_pid)
    mlflow_port, mlflow_pid, mlflow_start = start_mlflow(work, home, args.start_timeout)
    pids.append(mlflow_pid)
    print(
        f"   started ours in {ours_start:.1f} s (incl. loading v1), mlflow in "
        f"{mlflow_start:.1f} s; serving: {served_version(served)}"
    )
    servers = targets(served, mlflow_port, ours_pid, mlflow_pid)
    sample = json.loads(trained["v1_sample"].read_text(encoding="utf-8"))
    agreement = check_agreement(servers[0], servers[1], sample)
    print(f"   agreement on {agreement['rows']} holdout rows: {agreement}")
    bench_cpu: dict[str, float] = {}
    with measured({"ours": ours_pid, "mlflow": mlflow_pid}, bench_cpu):
        results = benchmark(
            scenarios_for(args), servers, sample["rows"], args.rounds, args.warmup, args.threads
        )
    server_cpu = {"mlflow": group_cpu_seconds(mlflow_pid)}
    stop_group(mlflow_pid)
    pids.remove(mlflow_pid)
    deploy_cpu: dict[str, float] = {}
    with measured({"ours": ours_pid}, deploy_cpu):
        timing = deploy_and_switch(work, served, trained, log)
    after = served_version(served)
    server_cpu["ours"] = group_cpu_seconds(ours_pid)
    return {
        "trained": trained,
        "agreement": agreement,
        "results": results,
        "deploy": timing,
        "bench_cpu": bench_cpu,
        "deploy_cpu": deploy_cpu,
        "server_cpu": server_cpu,
        "start_seconds": {"ours": ours_start, "mlflow": mlflow_start},
        "served_after": after,
        "server_log_problems": server_log_problems(work / "ours.log"),
        "mlflow_log_problems": server_log_problems(work / "mlflow.log")[:20],
    }


def main() -> None:
    args = parse_args()
    _common.limit_threads(args.blas_threads)
    _common.header("bench_serving: our model server vs mlflow models serve, and deploy time")
    print(f"   {_common.versions()}; OMP/BLAS threads {args.blas_threads}")
    with _common.Meter() as whole, server_workspace("bench-serving-", args.keep) as (work, pids):
        out = run(args, work, pids)
    print_benchmark(out["results"])
    added = print_deploy(out["deploy"])
    print(f"\n   server after promote: {out['served_after']}")
    print(f"   our server's log: {len(out['server_log_problems'])} ERROR/Traceback lines")
    for line in out["server_log_problems"][:10]:
        print(f"      {line}")
    print_contention(whole, out)
    path = _common.write_json_result(
        "bench_serving",
        {
            "machine": _common.machine(),
            "versions": _common.versions(),
            "args": vars(args),
            "whole_meter": whole.as_dict(),
            "added": added,
            **out,
        },
    )
    print(f"   figures saved to {path}")


if __name__ == "__main__":
    main()
