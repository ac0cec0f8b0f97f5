"""Deployment paths and endpoints, from the environment with embedded defaults.

The embedded default keeps everything under one folder (``MLOPS_PACK_HOME``, default
``.mlops`` in the working directory): an MLflow SQLite store, its artifact folder and the
promotion locks. Any MLflow tracking URI works instead via ``MLFLOW_TRACKING_URI``.

Data is read only from under ``MLOPS_PACK_DATA_DIR`` (default ``include/data``) and the
directories listed in ``MLOPS_PACK_DATA_ROOTS`` (separated by ``os.pathsep``): a run's
data path comes from a trigger form or REST call, and must not reach arbitrary files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    home: Path
    tracking_uri: str
    registry_uri: str
    artifact_root: str
    lock_dir: Path
    data_dir: Path | None
    data_roots: tuple[Path, ...] = ()

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        home = Path(env.get("MLOPS_PACK_HOME", ".mlops")).absolute()
        tracking = env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}"
        data_dir = env.get("MLOPS_PACK_DATA_DIR")
        return cls(
            home=home,
            tracking_uri=tracking,
            registry_uri=env.get("MLFLOW_REGISTRY_URI") or tracking,
            artifact_root=env.get("MLOPS_PACK_ARTIFACT_ROOT") or (home / "mlartifacts").as_uri(),
            # Promotion locks must be shared by every process that can promote; with a
            # remote MLflow and several hosts, point this at shared storage.
            lock_dir=Path(env.get("MLOPS_PACK_LOCK_DIR", home / "locks")),
            data_dir=Path(data_dir) if data_dir else None,
            data_roots=tuple(
                Path(root).absolute()
                for root in env.get("MLOPS_PACK_DATA_ROOTS", "").split(os.pathsep)
                if root.strip()
            ),
        )
