"""Export scikit-learn's bundled diabetes data (no download) as the regression example's CSV."""

from __future__ import annotations

import os
from pathlib import Path


def write(out: str | os.PathLike[str]) -> Path:
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes(as_frame=True, scaled=False)
    frame = bunch.frame.rename(columns={"target": "progression"})
    frame["sex"] = frame["sex"].astype(int)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, out)
    return out
