"""What every step needs: the spec (with run overrides applied), paths and the registry."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from mlops_pack.data_files import resolve_data_file
from mlops_pack.registry import Registry
from mlops_pack.spec import ModelSpec, RunOverrides, apply_overrides, load_spec


@dataclass
class StepContext:
    spec: ModelSpec
    spec_path: Path
    out_dir: Path
    registry: Registry = field(default_factory=Registry)
    overrides: RunOverrides = field(default_factory=RunOverrides)
    dag_run_id: str | None = None

    @classmethod
    def load(
        cls,
        spec_path: str | os.PathLike[str],
        out_dir: str | os.PathLike[str],
        overrides: RunOverrides | None = None,
        registry: Registry | None = None,
        dag_run_id: str | None = None,
    ) -> StepContext:
        spec = load_spec(spec_path)
        overrides = overrides or RunOverrides()
        if overrides.data_path or overrides.gate.model_fields_set:
            spec = apply_overrides(spec, overrides)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        return cls(
            spec=spec,
            spec_path=Path(spec_path),
            out_dir=out,
            registry=registry or Registry(),
            overrides=overrides,
            dag_run_id=dag_run_id or os.environ.get("MLOPS_PACK_DAG_RUN_ID"),
        )

    @property
    def include_dir(self) -> Path:
        # Specs live in include/models/, so include/ is two levels up.
        return self.spec_path.resolve().parent.parent

    def data_dir(self) -> Path:
        return self.registry.settings.data_dir or self.include_dir / "data"

    def data_path(self) -> Path:
        """The run's data file, refused unless it resolves under an allowed root.

        The path may come from a trigger form or a REST call, so an absolute path, a
        symlink or ``..`` in the spec must not lead to files outside the data directory
        (or the extra roots the deployment lists in ``MLOPS_PACK_DATA_ROOTS``).
        """
        if self.overrides.data_sha256:
            return self._retained_batch(self.overrides.data_sha256)
        return resolve_data_file(
            self.data_dir(), self.spec.data.path, self.registry.settings.data_roots
        )

    def _retained_batch(self, sha256: str) -> Path:
        """A batch from the artifact store (checked by its hash), fetched once per step."""
        from mlops_pack.steps import retention

        folder = self.out_dir / "inputs" / f"batch-{sha256[:12]}"
        found = [p for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []
        if found:
            return found[0]
        folder.mkdir(parents=True, exist_ok=True)
        return retention.fetch(self.registry, self.spec.name, sha256, folder)

    def include_path(self, relative: str) -> Path:
        path = Path(relative)
        return path if path.is_absolute() else self.include_dir / path

    def fetch(self, location: str | os.PathLike[str]) -> Path:
        """A local path as is; an artifact URI (file:, runs:, s3:, ...) is downloaded first."""
        location = str(location)
        path = Path(location)
        if path.exists() or ":" not in location.split("/", maxsplit=1)[0]:
            return path
        target = self.out_dir / "inputs"
        target.mkdir(parents=True, exist_ok=True)
        return self.registry.download(location, target)
