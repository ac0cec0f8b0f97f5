"""Local Docker setup shared by ``make demo`` and ``make up``: engine, task image, store."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

NOBODY = 65534


def docker_ready() -> bool:
    """Whether a Docker engine answers; without one the steps run in-process."""
    try:
        return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0
    except FileNotFoundError:
        return False


def build_task_image(root: Path) -> str:
    """Build (or reuse) the content-tagged task image and return its tag."""
    out = subprocess.run(
        [str(root / "include/docker/build_task_image.sh")],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip().splitlines()[-1]


def give_store_to_containers(store: Path, *readable: Path) -> None:
    """Step containers run as the store's owner, or as nobody when root owns it.

    Under root, hand the store to nobody and make the given parent and data dirs
    traversable, so containers can write records and read batches.
    """
    if os.geteuid() != 0:
        return
    os.chown(store, NOBODY, NOBODY)
    for path in readable:
        path.chmod(0o755)
