"""Loading in-house extensions: custom metrics and the like, named in the environment.

``MLOPS_PACK_EXTENSIONS`` lists importable modules (comma-separated). Each is imported
before a step runs and before DAGs are built, so what it registers (for example a metric
through ``mlops_pack.steps.metrics.register_metric``) is known to spec validation, the
gate and the steps alike. In containers, the module must be installed in the task image
(build your image ``FROM`` ours) or mounted on ``PYTHONPATH``.
"""

from __future__ import annotations

import importlib
import os

from mlops_pack.errors import SpecError


def load_extensions(names: str | None = None) -> list[str]:
    raw = os.environ.get("MLOPS_PACK_EXTENSIONS", "") if names is None else names
    loaded = []
    for name in (part.strip() for part in raw.split(",")):
        if not name:
            continue
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise SpecError(f"MLOPS_PACK_EXTENSIONS: cannot import {name!r} ({exc})") from None
        loaded.append(name)
    return loaded
