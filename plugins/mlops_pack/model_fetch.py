"""A registered model file, downloaded and verified before anything may load it.

Used by the steps (staging a version for a server that reads a local folder) and by the
model server itself (fetching a version by its registry URI). Either way the file is
checked against the sha256 recorded on the version at training time and renamed into
place only then, so a reader never sees a partial or unverified file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from mlops_pack.errors import UntrustedArtifactError
from mlops_pack.model_io import MODEL_FILE, verify_sha256
from mlops_pack.registry import TAG, Registry, Version

SHA_TAG = f"{TAG}artifact_sha256"


def recorded_sha256(version: Version) -> str:
    """The sha256 recorded on ``version`` when it was trained; refused when absent."""
    expected = version.tags.get(SHA_TAG)
    if not expected:
        raise UntrustedArtifactError(
            f"model {version.name} v{version.version}: no sha256 recorded on the version "
            f"(tag {SHA_TAG}); refusing to serve an unpinned model: register it with "
            "mlops-pack train, which records it",
            {"model": version.name, "version": version.version},
        )
    return expected


def fetch_verified(registry: Registry, uri: str, expected: str, target: Path) -> Path:
    """``target/model.skops`` from ``uri``, verified against ``expected`` (a file already
    there is verified too); returns its path."""
    held = target / MODEL_FILE
    if held.is_file():
        verify_sha256(held, expected)
        return held
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as tmp:
        local = registry.download(uri, Path(tmp) / "download")
        verify_sha256(local, expected, source=uri)
        ready = Path(tmp) / "ready"
        ready.mkdir()
        shutil.move(local, ready / MODEL_FILE)
        (ready / MODEL_FILE).chmod(0o644)
        ready.chmod(0o755)
        os.replace(ready, target)
    return held
