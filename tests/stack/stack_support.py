"""Helpers for the compose stack tests (import as ``stack_support``)."""

from __future__ import annotations

import shutil
from pathlib import Path


def docker_compose() -> str:
    found = shutil.which("docker-compose")
    assert found, "docker-compose is missing: `make test-tools` (apt-get install docker-compose)"
    return found


def env_values(path: Path) -> dict[str, str]:
    """The KEY=value lines of a .env written by ``mlops-pack stack init``."""
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
