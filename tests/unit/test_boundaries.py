"""The two code worlds stay apart: light modules load no heavy library, steps no Airflow."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("sklearn", "pandas", "great_expectations", "mlflow", "numpy", "skops")


def _loaded_after(imports: str) -> set[str]:
    code = f"import sys; {imports}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return {name.split(".")[0] for name in out.stdout.split()}


def test_shared_modules_load_no_heavy_library():
    loaded = _loaded_after(
        "import mlops_pack.spec, mlops_pack.gate, mlops_pack.records, "
        "mlops_pack.registry, mlops_pack.errors, mlops_pack.cli"
    )
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_step_world_never_imports_airflow():
    loaded = _loaded_after(
        "import mlops_pack.steps.retrain, mlops_pack.steps.holdout_refresh, "
        "mlops_pack.datagen.churn, mlops_pack.steps.validate"
    )
    assert "airflow" not in loaded
