"""Helpers shared by the benchmark scripts: paths, data generation, timing, formatting,
and the harness (child processes, repeated timings, free ports, hardened containers).

Data files are generated with the library's own generator (``mlops_pack.datagen.churn``)
into ``bench/results/data/`` (git-ignored). Each file gets a sidecar ``.json`` with the
generator parameters; a file is reused only when its sidecar matches the requested
parameters exactly, so a half-written or differently-parameterised file is never reused.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DATA = RESULTS / "data"
SPEC = ROOT / "include" / "models" / "churn.yaml"
# Steps read data only from under the data directory; the benchmarks' batches live here.
os.environ.setdefault("MLOPS_PACK_DATA_DIR", str(DATA))


def churn_file(
    rows: int,
    month: int = 1,
    seed: int = 2026,
    suffix: str = ".csv",
    label_noise: float = 0.0,
    quiet: bool = False,
) -> Path:
    """Return a generated churn batch, writing it only if no identical one exists."""
    from mlops_pack.datagen import churn

    cfg = churn.ChurnConfig(rows=rows, month=month, seed=seed, label_noise=label_noise)
    noise = f"_noise{label_noise:g}" if label_noise else ""
    path = DATA / f"churn_rows{rows}_month{month:02d}_seed{seed}{noise}{suffix}"
    sidecar = path.with_name(path.name + ".json")
    wanted = {"generator": "mlops_pack.datagen.churn", **asdict(cfg)}
    if path.exists() and sidecar.exists():
        try:
            if json.loads(sidecar.read_text(encoding="utf-8")) == wanted:
                if not quiet:
                    print(f"reusing {path.relative_to(ROOT)} ({path.stat().st_size / 1e6:.0f} MB)")
                return path
        except json.JSONDecodeError:
            pass
    started = time.perf_counter()
    churn.write(cfg, path)
    sidecar.write_text(json.dumps(wanted, indent=2, sort_keys=True), encoding="utf-8")
    if not quiet:
        print(
            f"generated {path.relative_to(ROOT)} ({path.stat().st_size / 1e6:.0f} MB) "
            f"in {time.perf_counter() - started:.1f}s"
        )
    return path


@contextmanager
def timer(into: dict[str, float], name: str) -> Iterator[None]:
    """Add the wall time of the block to ``into[name]`` (seconds)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        into[name] = into.get(name, 0.0) + time.perf_counter() - started


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set size in MB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(who).ru_maxrss / 1024


PROC_STAT = Path("/proc/stat")


def _machine_seconds(stat: Path = PROC_STAT) -> tuple[float, float]:
    """CPU-seconds all CPUs of the machine spent busy since boot, and of those the steal
    (what the hypervisor gave to others while this virtual machine's CPUs had work), from
    the first line of ``stat``: user nice system idle iowait irq softirq steal."""
    try:
        fields = stat.read_text(encoding="ascii").splitlines()[0].split()[1:]
    except OSError:
        return float("nan"), float("nan")
    ticks = [int(x) for x in fields[:8]]
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - ticks[3] - ticks[4]) / tick, ticks[7] / tick


def _own_cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class Meter:
    """Wall time, this process tree's CPU time, and CPU time used by *other* processes.

    The machine has few cores and may be shared: ``other_cpu`` (CPU-seconds that processes
    outside this benchmark used meanwhile) says how much a figure may be disturbed.
    Children count once they have been waited for.
    """

    def __enter__(self) -> Meter:
        self.started = time.perf_counter()
        self._cpu0 = _own_cpu_seconds()
        self._busy0, self._steal0 = _machine_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.started
        self.cpu = _own_cpu_seconds() - self._cpu0
        busy, steal = _machine_seconds()
        self.other_cpu = max(0.0, busy - self._busy0 - self.cpu)
        # Part of other_cpu: CPU the hypervisor ran for others on this machine's CPUs.
        self.steal = steal - self._steal0

    def note(self) -> str:
        cores = self.other_cpu / self.wall if self.wall > 0 else 0.0
        return (
            f"wall {self.wall:.2f} s, cpu {self.cpu:.2f} s; other processes used "
            f"{self.other_cpu:.1f} CPU-s meanwhile ({cores:.2f} of {os.cpu_count()} cores)"
        )

    def as_dict(self) -> dict[str, float]:
        return {"wall": self.wall, "cpu": self.cpu, "other_cpu": self.other_cpu}


def limit_threads(threads: int | None) -> None:
    """Cap OpenMP/BLAS threads here and in child processes (None: library defaults).

    scikit-learn's HistGradientBoosting uses OpenMP; on a 2-core machine shared with other
    work its threads wait for each other and fit times swing by 5-10x. One thread per
    process gives steadier figures at the cost of parallel speed-up.
    """
    if not threads:
        return
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text(encoding="ascii").split()[:3])
    except OSError:
        return "?"


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs ({cpu}), {mem:.0f} GiB RAM"
    )


def versions() -> str:
    import numpy
    import pandas
    import pyarrow
    import sklearn

    out = [
        f"numpy {numpy.__version__}",
        f"pandas {pandas.__version__}",
        f"pyarrow {pyarrow.__version__}",
        f"scikit-learn {sklearn.__version__}",
    ]
    for name in ("great_expectations", "mlflow"):
        try:
            module = __import__(name)
            out.append(f"{name} {module.__version__}")
        except ImportError:
            pass
    return ", ".join(out)


def header(title: str) -> None:
    print(f"== {title}")
    print(f"   {machine()}; load average {loadavg()} at start")


def fmt_rate(rows: float, seconds: float) -> str:
    return f"{rows / seconds:,.0f} rows/s" if seconds > 0 else "inf rows/s"


def write_json_result(name: str, payload: dict) -> Path:
    """Save a machine-readable copy of the figures under bench/results/."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    text = json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n"
    path.write_text(text, encoding="utf-8")
    return path


# The harness ----------------------------------------------------------------------------


@dataclass
class Child:
    """How one ``script --child ...`` process ended; its output is in ``log``."""

    returncode: int
    wall: float
    meter: Meter
    maxrss_mb: float
    timed_out: bool
    log: Path

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-chars:]


def run_child(
    script: str | Path,
    args: Sequence[str],
    *,
    env: dict[str, str],
    log: Path,
    cwd: Path | None = None,
    timeout: float | None = None,
    give_up: Callable[[float], bool] | None = None,
    preexec: Callable[[], None] | None = None,
    python: str | None = None,
) -> Child:
    """Run ``python script *args`` in a fresh interpreter, output to ``log``.

    A benchmark measures its own work in a child so that imports, caches and allocator
    state of one measurement never leak into the next. The child is killed after
    ``timeout`` seconds, or earlier when ``give_up(elapsed)`` says it is hung. ``python``:
    another interpreter (e.g. a venv holding a competitor), default this one.
    """
    argv = [python or sys.executable, str(script), *args]
    meter = Meter().__enter__()
    started = time.perf_counter()
    with log.open("wb") as handle:
        # preexec_fn is safe here: the benchmark parents run no threads.
        proc = subprocess.Popen(
            argv,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            preexec_fn=preexec,  # noqa: PLW1509
        )
    timed_out = False
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        elapsed = time.perf_counter() - started
        if (timeout is not None and elapsed > timeout) or (give_up and give_up(elapsed)):
            timed_out = True
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.05)
    wall = time.perf_counter() - started
    meter.__exit__(None, None, None)
    return Child(
        returncode=os.waitstatus_to_exitcode(status),
        wall=wall,
        meter=meter,
        maxrss_mb=usage.ru_maxrss / 1024,
        timed_out=timed_out,
        log=log,
    )


def median_wall(argv: Sequence[str], repeat: int) -> float:
    """Median wall time of running ``argv`` to completion ``repeat`` times (seconds)."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(list(argv), check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def docker_client() -> Any:
    import docker

    return docker.APIClient(
        base_url=os.environ.get("DOCKER_HOST", "unix://var/run/docker.sock"), timeout=60
    )


def docker_run(
    image: str,
    args: Sequence[str],
    *,
    mounts: Sequence[Any] = (),
    user: str = "65534:65534",
    entrypoint: str | None = "python",
    network_mode: str = "none",
) -> list[str]:
    """``docker run --rm`` argv with exactly the hardening a step container gets.

    The flags are read from ``mlops_pack.airflow.container.host_config`` (the host config
    the operators create step containers with), so a probe can never drift from what a
    step runs under; a setting this translation does not know stops the benchmark.
    """
    from mlops_pack.airflow import container

    spec = container.ContainerSpec(
        image=image,
        command=list(args),
        name="bench-probe",
        user=user,
        mounts=list(mounts),
        network_mode=network_mode,
    )
    config = dict(container.host_config(docker_client(), spec))
    argv = ["docker", "run", "--rm", "--user", user]
    flags: dict[str, Callable[[Any], list[str]]] = {
        "NetworkMode": lambda v: ["--network", v],
        "ReadonlyRootfs": lambda v: ["--read-only"],
        "Tmpfs": lambda v: [x for k, o in v.items() for x in ("--tmpfs", f"{k}:{o}")],
        "CapDrop": lambda v: [x for c in v for x in ("--cap-drop", c)],
        "SecurityOpt": lambda v: [x for o in v for x in ("--security-opt", o)],
        "PidsLimit": lambda v: ["--pids-limit", str(v)],
        "Memory": lambda v: ["--memory", str(v)],
        "MemorySwap": lambda v: ["--memory-swap", str(v)],
        "NanoCpus": lambda v: ["--cpus", f"{v / 1e9:g}"],
        "CpuShares": lambda v: ["--cpu-shares", str(v)],
        "Mounts": lambda v: [x for m in v for x in ("--mount", _mount_flag(m))],
    }
    for key, value in config.items():
        if key in flags:
            argv += flags[key](value)
        elif value:  # e.g. a new hardening setting: refuse to probe without it
            raise SystemExit(f"bench: no docker run flag for host config {key}={value!r}")
    if entrypoint is not None:
        argv += ["--entrypoint", entrypoint]
    return [*argv, image, *args]


def _mount_flag(mount: dict[str, Any]) -> str:
    flag = f"type={mount['Type']},source={mount['Source']},target={mount['Target']}"
    return flag + (",readonly" if mount.get("ReadOnly") else "")
