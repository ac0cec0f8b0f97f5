"""Saving and loading fitted models safely.

Models are stored with skops, never pickle: loading a pickle runs whatever code its
author put in it. Loading checks, in this order and before any byte is deserialised:
1. the file's sha256 equals the hash recorded at training time (tampering);
2. the file is a skops archive (a pickle payload is refused, never opened);
3. every type skops does not trust by default is on our reviewed list below.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from mlops_pack.errors import UntrustedArtifactError
from mlops_pack.hashing import sha256_bytes, sha256_file

MODEL_FILE = "model.skops"

# Reviewed by hand: types scikit-learn's own estimators need that skops does not trust by
# default. Anything else found in an archive is refused; extend this list only after
# reviewing what the new type can execute on load.
TRUSTED_TYPES: tuple[str, ...] = (
    "numpy.dtype",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.tree._tree.Tree",
)


def verify_sha256(path: Path, expected: str | None, source: str | None = None) -> str:
    """``source`` names where the file came from (a registry URI) in the error."""
    name = source or str(path)
    if not expected:
        raise UntrustedArtifactError(
            f"{name}: no recorded sha256 to verify against; refusing to load an unpinned model"
        )
    actual = sha256_file(path)
    if actual != expected:
        raise UntrustedArtifactError(
            f"{name}: sha256 mismatch (recorded {expected[:12]}…, file {actual[:12]}…): the "
            "artifact was modified after training; re-train or restore the original file",
            {"file": name, "expected": expected, "actual": actual},
        )
    return actual


def load_model(path: Path, expected_sha256: str | None, extra_trusted: tuple[str, ...] = ()) -> Any:
    """Load a skops model after verifying its hash, its format and its types."""
    import skops.io as sio

    verify_sha256(path, expected_sha256)
    if not zipfile.is_zipfile(path):
        raise UntrustedArtifactError(
            f"{path}: not a skops archive (pickle and other formats are refused); "
            "save models with mlops-pack train, which writes skops",
            {"file": str(path)},
        )
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:  # a corrupt archive: skops raises many different types
        raise UntrustedArtifactError(f"{path}: unreadable skops archive ({exc})") from None
    allowed = set(TRUSTED_TYPES) | set(extra_trusted)
    refused = sorted(set(untrusted) - allowed)
    if refused:
        raise UntrustedArtifactError(
            f"{path}: the archive contains types that are not on the reviewed trust list: "
            f"{refused}; review them and add them to TRUSTED_TYPES only if they are safe",
            {"file": str(path), "untrusted_types": refused},
        )
    return sio.load(path, trusted=list(untrusted))


def predict(spec: Any, model: Any, frame: Any) -> Any:
    """Scores as the gate and the server see them: P(positive class), or the regression value.

    Evaluation, holdout refresh and the model server all call this one function, so the
    served predictions and the offline ones the smoke test compares are computed alike.
    """
    import numpy as np

    if spec.task == "classification":
        column = list(model.classes_).index(spec.positive_class)
        return model.predict_proba(frame)[:, column]
    return np.asarray(model.predict(frame), dtype=float)


def content_sha256(path: Path) -> str:
    """A hash of what a skops archive holds, equal for equal fitted models.

    The archive's own sha256 differs between two saves of the same model, even in one
    process: skops names array members after CPython object ids (``<id>.npy``), writes
    those ids into ``schema.json`` (``__id__``) and zip stamps every member with the save
    time. Here each member reference becomes the sha256 of its bytes and each id its
    order of first appearance, so only the model's content is hashed.
    """
    with zipfile.ZipFile(path) as archive:
        members = set(archive.namelist())
        ids: dict[Any, int] = {}

        def canonical(node: Any) -> Any:
            if isinstance(node, list):
                return [canonical(item) for item in node]
            if not isinstance(node, dict):
                return node
            out = {}
            for key in sorted(node):
                value = node[key]
                if key == "__id__":
                    out[key] = ids.setdefault(value, len(ids))
                elif key == "file" and isinstance(value, str) and value in members:
                    out[key] = sha256_bytes(archive.read(value))
                else:
                    out[key] = canonical(value)
            return out

        schema = canonical(json.loads(archive.read("schema.json")))
    return sha256_bytes(json.dumps(schema, sort_keys=True).encode())
