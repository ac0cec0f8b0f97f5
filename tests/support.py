"""Constants and helpers shared by the test modules (import as ``support``)."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHURN_SPEC = ROOT / "include" / "models" / "churn.yaml"
DIABETES_SPEC = ROOT / "include" / "models" / "diabetes.yaml"


def run_cli(*args: str | Path) -> tuple[int, dict]:
    """Run one CLI command in-process; return its exit code and result.json."""
    from mlops_pack.cli import main

    argv = [str(a) for a in args]
    code = main(argv)
    out = Path(argv[argv.index("--out") + 1]) if "--out" in argv else None
    result = json.loads((out / "result.json").read_text()) if out else {}
    return code, result
