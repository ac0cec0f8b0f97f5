"""Caches built into the task image, copied to where a library wants a writable one.

Step containers run on a read-only root file system with a fresh tmpfs, so a library
that caches on disk (numba's compiled kernels, matplotlib's font list) would rebuild its
cache in every container. The image builds each cache once into a read-only folder, and
the step copies it to the library's cache folder (on the tmpfs) before the library
looks. A failed copy costs only the rebuild.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path


def seed_cache(seed_env: str, target_env: str) -> None:
    """Copy the folder named by ``seed_env`` to the one named by ``target_env``, unless
    either is unset or missing, or the target already exists."""
    seed, target = os.environ.get(seed_env), os.environ.get(target_env)
    if seed and target and Path(seed).is_dir() and not Path(target).exists():
        with contextlib.suppress(OSError):
            shutil.copytree(seed, target)
