"""Where the model server gets a version's file from, before loading it.

``StagedModels``: a read-only folder that the deploy step fills (the embedded default,
one host). ``RegistryModels``: the server fetches ``models:/<name>/<version>`` from the
MLflow tracking server itself, into a folder of its own, and checks the file against
the sha256 recorded on that version before anything loads it; the deploy needs no
shared disk, only the same registry. Either way ``Slots`` then loads the file with the
same checks as training (sha256 again, skops format, reviewed types).
"""

from __future__ import annotations

from pathlib import Path

from mlops_pack.errors import BadInputError, UntrustedArtifactError
from mlops_pack.model_io import MODEL_FILE


class StagedModels:
    name = "staged"

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = models_dir

    def warm(self) -> None:
        pass

    def path(self, version: str, sha256: str) -> Path:
        path = self.models_dir / f"v{version}" / MODEL_FILE
        if not path.is_file():
            raise BadInputError(f"model v{version} is not staged: {path} does not exist")
        return path


class RegistryModels:
    name = "registry"

    def __init__(self, model: str, tracking_uri: str, cache_dir: Path) -> None:
        from mlops_pack.registry import Registry
        from mlops_pack.settings import Settings

        self.model = model
        self.cache_dir = cache_dir
        # Only the tracking URL: the server reads the registry, it keeps no store.
        env = {"MLFLOW_TRACKING_URI": tracking_uri, "MLOPS_PACK_HOME": str(cache_dir)}
        self.registry = Registry(Settings.from_env(env))
        self._warm = False

    def warm(self) -> None:
        """Import MLflow's client and artifact download before the first deploy asks
        (seconds, on a busy host tens of seconds), and point MLflow at the registry:
        it resolves ``models:/`` URIs through the process's registry URI, whatever
        tracking URI the download is given."""
        import mlflow
        import mlflow.artifacts

        mlflow.set_tracking_uri(self.registry.settings.tracking_uri)
        mlflow.set_registry_uri(self.registry.settings.registry_uri)
        _ = self.registry.client
        self._warm = True

    def path(self, version: str, sha256: str) -> Path:
        """The version's file, fetched once; a file fetched before was verified then (and
        ``Slots`` verifies it against ``sha256`` again before loading)."""
        from mlops_pack.model_fetch import fetch_verified, recorded_sha256

        target = self.cache_dir / f"v{version}"
        if (target / MODEL_FILE).is_file():
            return target / MODEL_FILE
        if not self._warm:
            self.warm()
        recorded = recorded_sha256(self.registry.version(self.model, version))
        if sha256 != recorded:
            raise UntrustedArtifactError(
                f"model {self.model} v{version}: the request names sha256 {sha256[:12]}…, the "
                f"registry records {recorded[:12]}… for this version; refusing to load it. "
                "Deploy the version the registry holds (its recorded sha256)",
                {"version": version, "requested": sha256, "recorded": recorded},
            )
        uri = f"models:/{self.model}/{version}/{MODEL_FILE}"
        return fetch_verified(self.registry, uri, recorded, target)
