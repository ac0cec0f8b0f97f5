"""Validate one CSV with the churn spec at a given chunk size; print rows, time and peak RSS.

Run it inside a memory cgroup to show a file larger than the memory given is validated
(see docs/benchmarks.md). Usage: validate_under_cap.py DATA.csv CHUNK_ROWS
"""

from __future__ import annotations

import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    data, chunk_rows = Path(sys.argv[1]).absolute(), int(sys.argv[2])
    root = Path(tempfile.mkdtemp(prefix="validate-cap-"))
    import os

    os.environ["MLOPS_PACK_HOME"] = str(root / "home")
    os.environ["MLOPS_PACK_DATA_ROOTS"] = str(data.parent)  # the file may live anywhere
    shutil.copytree(ROOT / "include" / "expectations", root / "expectations")
    spec = yaml.safe_load((ROOT / "include" / "models" / "churn.yaml").read_text())
    spec["validation"]["chunk_rows"] = chunk_rows
    (root / "models").mkdir()
    (root / "models" / "churn.yaml").write_text(yaml.safe_dump(spec))
    from mlops_pack.spec import RunOverrides
    from mlops_pack.steps.context import StepContext
    from mlops_pack.steps.validate import validate

    ctx = StepContext.load(
        root / "models" / "churn.yaml", root / "out", overrides=RunOverrides(data_path=str(data))
    )
    started = time.perf_counter()
    report = validate(ctx)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    seconds = time.perf_counter() - started
    size = data.stat().st_size >> 20
    print(f"status {report['status']}, {report['rows']:,} rows in {seconds:.1f} s, ")
    print(f"peak RSS {peak} MiB, file {size} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
