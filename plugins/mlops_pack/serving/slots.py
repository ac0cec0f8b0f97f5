"""The two model slots, stable and candidate, and how requests are routed between them.

Models come from the server's model source (``model_source``: a read-only folder the
deploy stages into, or the registry, fetched by the server itself) and are loaded after
the same checks as training (sha256, skops format, reviewed types): an admin request
names a version and its hash, never a path. The
stable slot and the one before it are persisted in ``state.json`` (written atomically)
so a restarted server serves the same stable model; the candidate is deliberately not
persisted: a canary interrupted by a crash restarts on stable only.
"""

from __future__ import annotations

import json
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_pack.errors import BadInputError
from mlops_pack.model_io import load_model
from mlops_pack.records import write_json
from mlops_pack.serving.model_source import RegistryModels, StagedModels

VERSION = re.compile(r"^[0-9]{1,9}$")
_draw = random.SystemRandom()
MODES = ("off", "canary", "shadow")


@dataclass
class LoadedModel:
    version: str
    sha256: str
    model: Any
    loaded_at: float

    def ref(self) -> dict[str, str]:
        return {"version": self.version, "sha256": self.sha256}


class Slots:
    def __init__(self, source: StagedModels | RegistryModels, state_file: Path) -> None:
        self.source = source
        self.state_file = state_file
        self.stable: LoadedModel | None = None
        self.candidate: LoadedModel | None = None
        self.previous: dict[str, str] | None = None
        self.mode = "off"
        self.share = 0.0

    # Loading ---------------------------------------------------------------------------
    def load(self, version: str, sha256: str) -> LoadedModel:
        """Load ``version`` from the model source after verifying it; raises
        ``BadInputError`` (``ServiceUnavailableError`` if the registry cannot be read)."""
        version = str(version)
        if not VERSION.match(version):
            raise BadInputError(f"version must be a registry version number, got {version!r}")
        if not isinstance(sha256, str) or not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise BadInputError("sha256 must be the 64-hex-digit artifact hash")
        model = load_model(self.source.path(version, sha256), sha256)
        return LoadedModel(version=version, sha256=sha256, model=model, loaded_at=time.time())

    def restore(self) -> None:
        """Serve what ``state.json`` says was stable when the server last changed it."""
        if not self.state_file.exists():
            return
        state = json.loads(self.state_file.read_text(encoding="utf-8"))
        if state.get("stable"):
            self.stable = self.load(**state["stable"])
        self.previous = state.get("previous")

    def _save(self) -> None:
        state = {
            "stable": self.stable.ref() if self.stable else None,
            "previous": self.previous,
            "saved_at": time.time(),
        }
        write_json(self.state_file, state)  # atomic: a restart never reads half a file

    # Admin transitions (called on the event loop: never concurrent) ----------------------
    def set_candidate(self, loaded: LoadedModel) -> None:
        self.candidate = loaded
        self.mode, self.share = "off", 0.0

    def drop_candidate(self) -> str | None:
        version = self.candidate.version if self.candidate else None
        self.candidate, self.mode, self.share = None, "off", 0.0
        return version

    def set_traffic(self, mode: str, share: float) -> None:
        if mode not in MODES:
            raise BadInputError(f"mode must be one of {list(MODES)}, got {mode!r}")
        if mode != "off" and self.candidate is None:
            raise BadInputError("no candidate is loaded: load one before giving it traffic")
        if mode == "canary" and not 0.0 < share <= 1.0:
            raise BadInputError(f"share must be in (0, 1] for a canary, got {share!r}")
        if mode == "canary" and self.stable is None:
            raise BadInputError("a canary needs a stable model to compare with")
        self.mode, self.share = mode, (share if mode == "canary" else 0.0)

    def promote(self, version: str) -> dict[str, Any]:
        """The candidate becomes stable; the old stable is kept as ``previous``."""
        if self.stable is not None and self.stable.version == str(version):
            return {"outcome": "noop", "stable": self.stable.ref(), "previous": self.previous}
        if self.candidate is None or self.candidate.version != str(version):
            loaded = self.candidate.version if self.candidate else None
            raise BadInputError(f"cannot promote v{version}: the candidate slot holds v{loaded}")
        self.previous = self.stable.ref() if self.stable else None
        self.stable = self.candidate
        self.drop_candidate()
        self._save()
        return {"outcome": "promoted", "stable": self.stable.ref(), "previous": self.previous}

    def replace_stable(self, loaded: LoadedModel) -> dict[str, Any]:
        """Serve ``loaded`` as stable (rollback or first load); the old one becomes previous."""
        if self.stable is not None and self.stable.version == loaded.version:
            return {"outcome": "noop", "stable": self.stable.ref(), "previous": self.previous}
        self.previous = self.stable.ref() if self.stable else None
        self.stable = loaded
        self.drop_candidate()
        self._save()
        return {"outcome": "replaced", "stable": loaded.ref(), "previous": self.previous}

    # Routing ---------------------------------------------------------------------------
    def route(self) -> str:
        """``candidate`` for a canary's share of requests, drawn at random by the server.

        Not derived from anything the client sends (a client must not pick its model).
        """
        if self.mode != "canary" or self.candidate is None:
            return "stable"
        return "candidate" if _draw.random() < self.share else "stable"

    def describe(self) -> dict[str, Any]:
        return {
            "stable": self.stable.ref() if self.stable else None,
            "candidate": self.candidate.ref() if self.candidate else None,
            "previous": self.previous,
            "mode": self.mode,
            "share": self.share,
        }
