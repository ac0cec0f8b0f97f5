"""Loading in-house extensions: custom metrics and the like, named in the environment.

``MLOPS_PACK_EXTENSIONS`` lists importable modules (comma-separated). Each is imported
before a step runs and before DAGs are built, so what it registers (for example a metric
through ``mlops_pack.metric_catalog.register_metric``) is known to spec validation, the
gate and the steps alike.

``MLOPS_PACK_EXTENSIONS_DIR`` (optional) is a folder holding those modules. It is put on
``sys.path`` before the import, here and in every step container: the Docker runner
mounts it read-only into the container and points the variable at the mount, so one
setting serves Airflow's processes, the in-process runner and the task image alike.
The other way is an image built ``FROM`` the task image with the modules installed.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from mlops_pack.errors import SpecError

GUIDE = "docs/extending.md"


def extensions_dir() -> Path | None:
    """The folder named by ``MLOPS_PACK_EXTENSIONS_DIR``, checked; None when unset."""
    raw = os.environ.get("MLOPS_PACK_EXTENSIONS_DIR", "").strip()
    if not raw:
        return None
    path = Path(raw).absolute()
    if not path.is_dir():
        raise SpecError(
            f"MLOPS_PACK_EXTENSIONS_DIR={raw}: not a directory; point it at the folder that "
            f"holds your extension modules, or unset it ({GUIDE})"
        )
    return path


def load_extensions(names: str | None = None) -> list[str]:
    raw = os.environ.get("MLOPS_PACK_EXTENSIONS", "") if names is None else names
    wanted = [part.strip() for part in raw.split(",") if part.strip()]
    if not wanted:
        return []
    folder = extensions_dir()
    if folder is not None and str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    for name in wanted:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            where = f"MLOPS_PACK_EXTENSIONS_DIR ({folder})" if folder else "sys.path"
            raise SpecError(
                f"MLOPS_PACK_EXTENSIONS: cannot import {name!r} from {where} ({exc}); put the "
                "module in the folder MLOPS_PACK_EXTENSIONS_DIR names (step containers get it "
                f"mounted read-only) or install it in the task image ({GUIDE})"
            ) from None
    return wanted
