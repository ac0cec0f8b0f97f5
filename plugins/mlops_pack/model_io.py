"""Saving and loading fitted models safely.

Models are stored with skops, never pickle: loading a pickle runs whatever code its
author put in it. Loading checks, in this order and before any byte is deserialised:
1. the file's sha256 equals the hash recorded at training time (tampering);
2. the file is a skops archive (a pickle payload is refused, never opened);
3. every type skops does not trust by default is on our reviewed list below.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from mlops_pack.errors import UntrustedArtifactError
from mlops_pack.hashing import sha256_file

MODEL_FILE = "model.skops"

# Reviewed by hand: types scikit-learn's own estimators need that skops does not trust by
# default. Anything else found in an archive is refused; extend this list only after
# reviewing what the new type can execute on load.
TRUSTED_TYPES: tuple[str, ...] = (
    "numpy.dtype",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.tree._tree.Tree",
)


def verify_sha256(path: Path, expected: str | None) -> str:
    if not expected:
        raise UntrustedArtifactError(
            f"{path}: no recorded sha256 to verify against; refusing to load an unpinned model"
        )
    actual = sha256_file(path)
    if actual != expected:
        raise UntrustedArtifactError(
            f"{path}: sha256 mismatch (recorded {expected[:12]}…, file {actual[:12]}…): the "
            "artifact was modified after training; re-train or restore the original file",
            {"file": str(path), "expected": expected, "actual": actual},
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
