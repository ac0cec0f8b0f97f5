"""The pack installed from its wheel into a fresh Airflow environment runs a user's model.

No checkout on the path: a new venv gets apache-airflow and the wheel (with the steps
extra, for the in-process runner), then a user's own project (``dags/`` calling the
pack's factory, ``include/models`` and ``include/expectations`` beside it, data in its
own folder) is listed and run with ``airflow dags test``.

Installing Airflow and the step libraries takes minutes, so the venv is cached under
``MLOPS_PACK_TEST_CACHE`` (default ``~/.cache/mlops-pack-tests``), keyed by what decides
the dependencies (pyproject.toml, constraints.txt, the Python version). The pack itself
is rebuilt from this checkout and reinstalled (``--no-deps``) on every run.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from support import ROOT

SPEC = {
    "name": "houses",
    "description": "Sale price from size, rooms and district (a user's own model).",
    "task": "regression",
    "target": "price",
    "data": {"path": "houses/houses.csv"},
    "columns": [
        {"name": "area", "type": "numeric", "min": 10, "max": 1000},
        {"name": "rooms", "type": "numeric", "min": 1, "max": 20},
        {"name": "district", "type": "categorical", "values": ["centre", "harbour", "hills"]},
    ],
    "estimator": {"class": "sklearn.linear_model.Ridge", "params": {"alpha": 0.5}},
    "validation": {"suite": "expectations/houses.json", "min_rows": 200},
    "holdout": {"strategy": "split", "fraction": 0.25, "stratify": False},
    "metrics": ["rmse", "mae", "r2"],
    "gate": {"primary": {"metric": "rmse"}, "floors": {"r2": 0.5}},
}
SUITE = {
    "name": "houses",
    "expectations": [
        {
            "type": "expect_column_values_to_be_between",
            "kwargs": {"column": "price", "min_value": 0, "max_value": 5_000_000},
        }
    ],
}
DAG_FILE = '''"""Our retraining DAGs, from the specs in ../include/models/."""

from mlops_pack.airflow.dag_factory import build_all

globals().update(build_all())
'''


def _digest(*paths: Path) -> str:
    digest = hashlib.sha256(platform.python_version().encode())
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _run(argv: list[str], env: dict[str, str], cwd: Path, timeout: float = 900):
    done = subprocess.run(
        argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{argv}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _wheel(tmp_path: Path) -> Path:
    """Build the wheel from a copy of its inputs, so the checkout gets no build/ folder."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "plugins", source / "plugins", ignore=shutil.ignore_patterns("__pycache__")
    )
    out = tmp_path / "wheel"
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)],
        dict(os.environ),
        tmp_path,
    )
    (wheel,) = out.glob("airflow_mlops_pack-*.whl")
    return wheel


def _venv(wheel: Path, env: dict[str, str]) -> Path:
    """A venv with Airflow and the pack's dependencies, built once per dependency key."""
    from filelock import FileLock

    cache = Path(os.environ.get("MLOPS_PACK_TEST_CACHE", Path.home() / ".cache/mlops-pack-tests"))
    venv = cache / f"wheel-venv-{_digest(ROOT / 'pyproject.toml', ROOT / 'constraints.txt')}"
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(venv) + ".lock"):
        if not (venv / ".complete").exists():
            shutil.rmtree(venv, ignore_errors=True)
            started = time.monotonic()
            _run([sys.executable, "-m", "venv", str(venv)], env, cache)
            _run(
                [
                    str(venv / "bin/pip"), "install", "-q", "-c", str(ROOT / "constraints.txt"),
                    "apache-airflow", f"{wheel}[steps,airflow]",
                ],
                env, cache, timeout=3600,
            )  # fmt: skip
            seconds = time.monotonic() - started
            (venv / ".complete").write_text(json.dumps({"install_seconds": round(seconds, 1)}))
            print(f"wheel test venv installed in {seconds:.0f}s: {venv}")
    # The pack from this checkout, every run; its dependencies are already there.
    _run(
        [str(venv / "bin/pip"), "install", "-q", "--no-deps", "--force-reinstall", str(wheel)],
        env,
        cache,
    )
    return venv


def _user_project(root: Path) -> dict[str, Path]:
    """What a new user writes: a dags file, their spec and suite, their data."""
    airflow_home = root / "airflow"
    (airflow_home / "dags").mkdir(parents=True)
    (airflow_home / "dags" / "retrain.py").write_text(DAG_FILE)
    include = airflow_home / "include"
    (include / "models").mkdir(parents=True)
    (include / "models" / "houses.yaml").write_text(yaml.safe_dump(SPEC))
    (include / "expectations").mkdir()
    (include / "expectations" / "houses.json").write_text(json.dumps(SUITE))
    rng = np.random.default_rng(3)
    rows = 1_200
    area = rng.uniform(30, 300, rows).round(1)
    rooms = rng.integers(1, 8, rows)
    district = rng.choice(["centre", "harbour", "hills"], rows)
    bonus = pd.Series(district).map({"centre": 90_000, "harbour": 40_000, "hills": 0})
    price = 2_500 * area + 8_000 * rooms + bonus.to_numpy() + rng.normal(0, 20_000, rows)
    data = root / "data"
    (data / "houses").mkdir(parents=True)
    pd.DataFrame(
        {"area": area, "rooms": rooms, "district": district, "price": price.round(0)}
    ).to_csv(data / "houses" / "houses.csv", index=False)
    return {"airflow_home": airflow_home, "include": include, "data": data}


def _clean_env() -> dict[str, str]:
    """The environment without anything pointing at this checkout or the test's Airflow."""
    prefixes = ("MLOPS_PACK_", "AIRFLOW", "MLFLOW_", "PYTHONPATH", "VIRTUAL_ENV")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """The venv with this checkout's wheel installed, once per test session."""
    return _venv(_wheel(tmp_path_factory.mktemp("wheel")), _clean_env())


@pytest.mark.timeout(3600)  # the first run installs Airflow into the cached venv
def test_installed_wheel_runs_a_users_own_model(venv, tmp_path):
    bin_ = venv / "bin"
    user = _user_project(tmp_path / "project")
    env = {
        **_clean_env(),
        "AIRFLOW_HOME": str(user["airflow_home"]),  # dags folder: $AIRFLOW_HOME/dags
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "MLOPS_PACK_HOME": str(tmp_path / "project" / "store"),
        "MLOPS_PACK_DATA_DIR": str(user["data"]),
        "MLOPS_PACK_RUNNER": "inprocess",
        "GX_ANALYTICS_ENABLED": "false",
    }
    cwd = tmp_path / "project"
    # The pack comes from the venv's site-packages, not from this checkout.
    where = _run([str(bin_ / "python"), "-c", "import mlops_pack; print(mlops_pack.__file__)"],
                 env, cwd).stdout.strip()  # fmt: skip
    assert where.startswith(str(venv)), where

    spec = user["include"] / "models" / "houses.yaml"
    assert "houses.yaml: ok" in _run([str(bin_ / "mlops-pack"), "check-spec", str(spec)],
                                     env, cwd).stdout  # fmt: skip

    _run([str(bin_ / "airflow"), "db", "migrate"], env, cwd)
    # --local: parse the dags folder as the dag-processor would (no scheduler runs here).
    listed = _run([str(bin_ / "airflow"), "dags", "list", "--local", "-o", "json"], env, cwd)
    (table,) = [line for line in listed.stdout.splitlines() if line.startswith("[")]
    dag_ids = {d["dag_id"] for d in json.loads(table)}
    # include/ beside the dags folder was found without MLOPS_PACK_INCLUDE_DIR.
    assert dag_ids == {"mlops_retrain__houses", "mlops_rollback"}, dag_ids

    _run([str(bin_ / "airflow"), "dags", "test", "mlops_retrain__houses"], env, cwd)
    champion = _run(
        [
            str(bin_ / "python"), "-c",
            "from mlops_pack.registry import Registry; "
            "print(Registry().alias('houses', 'champion').version)",
        ],
        env, cwd,
    ).stdout.split()  # fmt: skip
    assert champion[-1] == "1"  # validate, train, evaluate, gate and promote all ran


@pytest.mark.timeout(3600)
def test_installed_wheel_without_specs_says_where_it_looked(venv, tmp_path):
    airflow_home = tmp_path / "empty-airflow"
    (airflow_home / "dags").mkdir(parents=True)
    env = {**_clean_env(), "AIRFLOW_HOME": str(airflow_home)}
    done = subprocess.run(
        [str(venv / "bin/python"), "-c",
         "from mlops_pack.airflow.dag_factory import build_all; build_all()"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert (
        f"no include dir with model specs (models/*.yaml): tried {airflow_home / 'include'} "
        "(beside the dags folder). Fix: set MLOPS_PACK_INCLUDE_DIR"
    ) in done.stderr, done.stderr


@pytest.mark.timeout(3600)
def test_installed_wheel_registers_the_plugin_and_the_connection_type(venv, tmp_path):
    """Entry points alone: no plugins folder, no checkout; `airflow plugins` lists the
    app, the view and the links, and the providers manager knows the connection type."""
    env = {
        **_clean_env(),
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    listed = _run([str(venv / "bin/airflow"), "plugins", "-o", "json"], env, tmp_path)
    (table,) = [line for line in listed.stdout.splitlines() if line.startswith("[")]
    (plugin,) = [p for p in json.loads(table) if p["name"] == "mlops_pack"]
    assert "airflow-mlops-pack" in plugin["source"]
    assert "'url_prefix': '/mlops-pack'" in str(plugin["fastapi_apps"])
    assert "'name': 'Models'" in str(plugin["external_views"])
    for link in ("ComparisonReportLink", "MlflowRunLink", "ServedVersionLink", "MonitorReportLink"):
        assert link in str(plugin["operator_extra_links"])
    probe = (
        "from airflow.providers_manager import ProvidersManager as P; m = P(); "
        "print(m.hooks['mlops_pack_server'].hook_name); "
        "print(m.field_behaviours['mlops_pack_server']['relabeling']['password']); "
        "print(m.connection_form_widgets['extra__mlops_pack_server__prediction_api_key']"
        ".field['schema']['title'])"
    )
    shown = _run([str(venv / "bin/python"), "-c", probe], env, tmp_path).stdout.splitlines()
    assert shown[-3:] == ["MLOps pack model server", "Admin token", "Prediction key"]
