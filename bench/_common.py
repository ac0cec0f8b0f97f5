"""Helpers shared by the benchmark scripts: paths, data generation, timing, formatting.

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
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DATA = RESULTS / "data"
SPEC = ROOT / "include" / "models" / "churn.yaml"


def churn_file(rows: int, month: int = 1, seed: int = 2026, suffix: str = ".csv",
               label_noise: float = 0.0, quiet: bool = False) -> Path:
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
        print(f"generated {path.relative_to(ROOT)} ({path.stat().st_size / 1e6:.0f} MB) "
              f"in {time.perf_counter() - started:.1f}s")
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
    return (f"{platform.python_implementation()} {platform.python_version()}, "
            f"{os.cpu_count()} CPUs ({cpu}), {mem:.0f} GiB RAM")


def versions() -> str:
    import numpy
    import pandas
    import pyarrow
    import sklearn

    out = [f"numpy {numpy.__version__}", f"pandas {pandas.__version__}",
           f"pyarrow {pyarrow.__version__}", f"scikit-learn {sklearn.__version__}"]
    for name in ("great_expectations", "mlflow"):
        try:
            module = __import__(name)
            out.append(f"{name} {module.__version__}")
        except ImportError:
            pass
    return ", ".join(out)


def header(title: str) -> None:
    print(f"== {title}")
    print(f"   {machine()}")


def fmt_rate(rows: float, seconds: float) -> str:
    return f"{rows / seconds:,.0f} rows/s" if seconds > 0 else "inf rows/s"


def write_json_result(name: str, payload: dict) -> Path:
    """Save a machine-readable copy of the figures under bench/results/."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    return path
