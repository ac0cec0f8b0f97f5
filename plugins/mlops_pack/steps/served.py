"""The served model, seen from the steps: make a version loadable, switch slots.

A server started with a models folder (the embedded default) loads only from
``<MLOPS_PACK_HOME>/serving/<model>/models/v<N>/`` (mounted read-only into it), so deploy
and rollback first *stage* the version there: a copy of the registered artifact,
verified against its recorded sha256 and renamed into place, so the server never sees a
partial file. A server started with the registry's URL fetches and verifies the version
itself (``/admin/stats`` says ``model_source: registry``): nothing is staged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_pack.model_fetch import fetch_verified, recorded_sha256
from mlops_pack.model_io import MODEL_FILE
from mlops_pack.registry import Registry, Version
from mlops_pack.server_client import ServerClient

# A load may include the server's own download from the registry and its checks.
LOAD_TIMEOUT_S = 300.0


def serving_dir(registry: Registry, model: str) -> Path:
    return registry.settings.home / "serving" / model


def stage(registry: Registry, version: Version) -> str:
    """Copy ``version``'s model into the server's models directory; returns its sha256."""
    expected = recorded_sha256(version)
    models = serving_dir(registry, version.name) / "models"
    models.mkdir(parents=True, exist_ok=True)
    for folder in (models.parent, models):
        folder.chmod(0o755)  # the server reads, possibly as another uid
    uri = f"{version.source}/{MODEL_FILE}"
    fetch_verified(registry, uri, expected, models / f"v{version.version}")
    return expected


@dataclass
class ServedSwitch:
    """Switch what the server serves, and put it back if the alias cannot follow."""

    admin: ServerClient
    registry: Registry
    model: str

    def state(self) -> dict[str, Any]:
        return self.admin.ok("GET", "/admin/stats")["slots"]

    def loadable(self, version: Version) -> str:
        """Make ``version`` loadable by the server (stage it, unless the server fetches
        versions itself); returns the sha256 recorded on it, which the server checks."""
        if self.admin.ok("GET", "/admin/stats").get("model_source") == "registry":
            return recorded_sha256(version)
        return stage(self.registry, version)

    def serve(self, version: Version) -> dict[str, Any]:
        """Make ``version`` the stable model: promote the candidate, or load it directly."""
        slots = self.state()
        before = slots.get("stable")
        candidate = slots.get("candidate") or {}
        if candidate.get("version") == version.version:
            outcome = self.admin.ok("POST", "/admin/promote", {"version": version.version})
        else:
            sha = self.loadable(version)
            outcome = self.admin.ok(
                "POST",
                "/admin/rollback",
                {"version": version.version, "sha256": sha},
                timeout=LOAD_TIMEOUT_S,
            )
        return {"outcome": outcome["outcome"], "served": outcome["stable"], "before": before}

    def restore(self, before: dict[str, str] | None) -> None:
        """Undo ``serve``: the server goes back to what it served before (if anything)."""
        if before:
            self.admin.ok("POST", "/admin/rollback", before)
