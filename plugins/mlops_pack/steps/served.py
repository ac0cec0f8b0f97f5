"""The served model, seen from the steps: stage a version for the server, switch slots.

The model server loads only from ``<MLOPS_PACK_HOME>/serving/<model>/models/v<N>/``
(mounted read-only into it), so deploy and rollback first *stage* the version there: a
copy of the registered artifact, verified against its recorded sha256 and renamed into
place, so the server never sees a partial file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_pack.model_io import MODEL_FILE, verify_sha256
from mlops_pack.registry import TAG, Registry, Version
from mlops_pack.server_client import ServerClient


def serving_dir(registry: Registry, model: str) -> Path:
    return registry.settings.home / "serving" / model


def stage(registry: Registry, version: Version) -> str:
    """Copy ``version``'s model into the server's models directory; returns its sha256."""
    expected = version.tags.get(f"{TAG}artifact_sha256")
    target = serving_dir(registry, version.name) / "models" / f"v{version.version}"
    if (target / MODEL_FILE).is_file():
        verify_sha256(target / MODEL_FILE, expected)
        return expected
    target.parent.mkdir(parents=True, exist_ok=True)
    for folder in (target.parent.parent, target.parent):
        folder.chmod(0o755)  # the server reads, possibly as another uid
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".stage-") as tmp:
        local = registry.download(f"{version.source}/{MODEL_FILE}", Path(tmp) / "download")
        verify_sha256(local, expected)
        ready = Path(tmp) / "ready"
        ready.mkdir()
        shutil.move(local, ready / MODEL_FILE)
        (ready / MODEL_FILE).chmod(0o644)
        ready.chmod(0o755)
        os.replace(ready, target)
    return expected


@dataclass
class ServedSwitch:
    """Switch what the server serves, and put it back if the alias cannot follow."""

    admin: ServerClient
    registry: Registry
    model: str

    def state(self) -> dict[str, Any]:
        return self.admin.ok("GET", "/admin/stats")["slots"]

    def serve(self, version: Version) -> dict[str, Any]:
        """Make ``version`` the stable model: promote the candidate, or load it directly."""
        slots = self.state()
        before = slots.get("stable")
        candidate = slots.get("candidate") or {}
        if candidate.get("version") == version.version:
            outcome = self.admin.ok("POST", "/admin/promote", {"version": version.version})
        else:
            sha = stage(self.registry, version)
            outcome = self.admin.ok(
                "POST", "/admin/rollback", {"version": version.version, "sha256": sha}
            )
        return {"outcome": outcome["outcome"], "served": outcome["stable"], "before": before}

    def restore(self, before: dict[str, str] | None) -> None:
        """Undo ``serve``: the server goes back to what it served before (if anything)."""
        if before:
            self.admin.ok("POST", "/admin/rollback", before)
