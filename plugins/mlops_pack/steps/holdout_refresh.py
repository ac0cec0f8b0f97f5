"""Refreshing the holdout: a deliberate, recorded act that re-scores the champion.

After a refresh the champion's old scores no longer compare with anything new (the gate
refuses metrics from different holdouts), so the champion is scored on the new holdout
at once and that score is recorded with the refresh event.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from mlops_pack.model_io import predict
from mlops_pack.records import write_json
from mlops_pack.registry import CHAMPION
from mlops_pack.steps import holdout as holdouts
from mlops_pack.steps import metrics
from mlops_pack.steps.context import StepContext
from mlops_pack.steps.dataset import read_frame
from mlops_pack.steps.evaluate import fetch_model, labels
from mlops_pack.steps.validated import require_validated

RESULT = "holdout_refresh.json"


def refresh_and_rescore(ctx: StepContext, reason: str) -> dict[str, Any]:
    from mlops_pack.hashing import sha256_file

    path = ctx.data_path()
    require_validated(ctx, sha256_file(path))
    old, pin = holdouts.refresh(ctx, read_frame(path, ctx.spec), reason)
    champion = ctx.registry.alias(ctx.spec.name, CHAMPION)
    scores: dict[str, float] = {}
    if champion is not None:
        frame = holdouts.load(ctx, pin)
        with tempfile.TemporaryDirectory() as tmp:
            model, _ = fetch_model(ctx, champion, Path(tmp))
            prediction = predict(ctx.spec, model, frame)
        y = labels(ctx.spec, frame)
        scores = {name: metrics.score(name, y, prediction) for name in ctx.spec.metrics}
        ctx.registry.append_event(
            ctx.spec.name,
            "champion_rescored",
            {
                "version": champion.version,
                "holdout_sha256": pin.sha256,
                **{f"metric.{k}": round(v, 6) for k, v in scores.items()},
            },
        )
    record = {
        "schema": "mlops_pack.holdout_refresh/1",
        "model": ctx.spec.name,
        "old_holdout_sha256": old.sha256 if old else None,
        "holdout_sha256": pin.sha256,
        "rows": pin.rows,
        "reason": reason,
        "champion_version": champion.version if champion else None,
        "champion_metrics": scores,
    }
    write_json(ctx.out_dir / RESULT, record)
    return record
