"""Helpers for the model server tests (import as ``serving_support``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml
from support import ROOT


def write_spec(include: Path, **serving: object) -> Path:
    """include/models/churn.yaml with the serving section changed as given."""
    spec = yaml.safe_load((ROOT / "include/models/churn.yaml").read_text())
    spec["serving"]["canary"]["requests"] = 40
    for key, value in serving.items():
        spec["serving"][key] = value
    (include / "models").mkdir(parents=True, exist_ok=True)
    if not (include / "expectations").exists():
        shutil.copytree(ROOT / "include" / "expectations", include / "expectations")
    path = include / "models" / "churn.yaml"
    path.write_text(yaml.safe_dump(spec))
    for item in [include, *include.rglob("*")]:
        item.chmod(0o755 if item.is_dir() else 0o644)
    return path


def sample_rows(served_state: dict) -> tuple[list[dict], list[float]]:
    """The smoke sample the evaluate step wrote for v2: holdout rows and v2's scores."""
    sample = next((served_state["work"] / "v2-evaluate").glob("smoke_sample.json"))
    data = json.loads(sample.read_text())
    return data["rows"], data["predictions"]


def restart_server(served_state: dict) -> None:
    """Start the fixture's server again (same port, home and secrets), replacing the old one."""
    from mlops_pack.airflow.model_server import start_server

    served_state["server"] = start_server(
        served_state["client"],
        model="churn",
        include_dir=served_state["include"],
        home=served_state["home"],
        image=served_state["image"],
        secrets_dir=served_state["secrets"],
        port=served_state["server"].port,
    )
