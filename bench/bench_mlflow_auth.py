"""What MLflow's basic authentication costs the tracking server, per request.

Three servers in turn, each as the test suite starts one (SQLite backend, proxied
artifacts, one worker): without authentication (the baseline), behind it as the compose
stack runs it (include/mlflow/serve.py, successful password checks cached), and behind
it with the cache off (``MLFLOW_AUTH_CACHE_SECONDS=0``: every request checks the scrypt
hash). The client makes the calls a step makes most, a registered model read and a
metric write, in turn; the figure is the server's CPU (its processes' user and system
time) per request, and its ratio to the baseline.

    .venv/bin/python bench/bench_mlflow_auth.py
    .venv/bin/python bench/bench_mlflow_auth.py --requests 600 --uncached-requests 40
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
import psutil
from services import mlflow_passwords, mlflow_server


def server_cpu(port: str) -> float:
    """CPU-seconds of the server's processes (the one listening on ``port`` and its
    children)."""
    total = 0.0
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(port in part for part in proc.info["cmdline"] or []):
                for one in (proc, *proc.children(recursive=True)):
                    times = one.cpu_times()
                    total += times.user + times.system
        except psutil.Error:
            continue
    return total


def measure(label: str, requests: int, passwords: dict[str, str] | None) -> dict:
    from mlflow import MlflowClient

    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        os.environ.pop(name, None)
    with mlflow_server(Path(tempfile.mkdtemp(prefix="bench-auth-")) / "mlflow", passwords) as url:
        if passwords:
            os.environ["MLFLOW_TRACKING_USERNAME"] = "mlops-pack"
            os.environ["MLFLOW_TRACKING_PASSWORD"] = passwords["MLFLOW_PACK_PASSWORD"]
        client = MlflowClient(url, registry_uri=url)
        client.create_registered_model("bench")
        run = client.create_run(client.create_experiment("bench"))
        for _ in range(5):  # warm: imports, the first password check
            client.get_registered_model("bench")
        port = url.rsplit(":", 1)[1]
        before, started = server_cpu(port), time.perf_counter()
        for i in range(requests // 2):
            client.get_registered_model("bench")
            client.log_metric(run.info.run_id, "x", float(i))
        wall, cpu = time.perf_counter() - started, server_cpu(port) - before
    done = 2 * (requests // 2)
    return {
        "label": label,
        "requests": done,
        "wall_ms_per_request": round(1000 * wall / done, 1),
        "server_cpu_ms_per_request": round(1000 * cpu / done, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--uncached-requests", type=int, default=40)
    args = parser.parse_args()
    _common.header("MLflow's basic authentication: server CPU per request")
    results = [measure("no authentication (baseline)", args.requests, None)]
    stack = "basic auth, checks cached (the stack)"
    results.append(measure(stack, args.requests, mlflow_passwords()))
    os.environ["MLFLOW_AUTH_CACHE_SECONDS"] = "0"
    results.append(measure("basic auth, no cache", args.uncached_requests, mlflow_passwords()))
    base = results[0]["server_cpu_ms_per_request"]
    for row in results:
        row["cpu_ratio_to_baseline"] = round(row["server_cpu_ms_per_request"] / base, 2)
        print(
            f"{row['label']:<40} {row['requests']:>5} requests: "
            f"{row['server_cpu_ms_per_request']:>7.1f} ms server CPU per request "
            f"({row['cpu_ratio_to_baseline']:.2f}x), {row['wall_ms_per_request']:.1f} ms wall"
        )
    path = _common.write_json_result(
        "mlflow_auth", {"results": results, "machine": _common.machine()}
    )
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
