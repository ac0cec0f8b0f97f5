"""Shared fixtures: a fresh embedded MLflow store per test and generated data per session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """Churn months 1-2, a label-noised batch and the diabetes CSV, generated once."""
    from mlops_pack.datagen import churn, diabetes

    root = tmp_path_factory.mktemp("data")
    for name, cfg in {
        "churn_month_01.csv": churn.ChurnConfig(rows=8_000, month=1),
        "churn_month_02.csv": churn.ChurnConfig(rows=8_000, month=2),
        "churn_noisy.csv": churn.ChurnConfig(rows=8_000, month=3, label_noise=0.35),
    }.items():
        churn.write(cfg, root / "churn" / name)
    diabetes.write(root / "diabetes" / "diabetes.csv")
    return root


@pytest.fixture
def store(tmp_path, monkeypatch, data_dir) -> Path:
    """A fresh MLflow store and lock dir for one test, with the session's data."""
    home = tmp_path / "mlops-home"
    monkeypatch.setenv("MLOPS_PACK_HOME", str(home))
    monkeypatch.setenv("MLOPS_PACK_DATA_DIR", str(data_dir))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return home


@pytest.fixture
def registry(store):
    from mlops_pack.registry import Registry

    return Registry()


@pytest.fixture(scope="session")
def task_image() -> str:
    from support import build_task_image

    return build_task_image()


@pytest.fixture
def answering() -> Iterator:
    """Starts stand-in servers (``support.Answering``: a status and a JSON body for every
    request) and stops them after the test."""
    from support import Answering

    started: list[Answering] = []

    def start(status: int, body=None, headers=None) -> Answering:
        started.append(Answering(status, body, headers))
        return started[-1]

    yield start
    for server in started:
        server.shutdown()
        server.server_close()
