"""A whole retrain in-process: validate -> train -> evaluate -> gate -> promote.

The same step functions the containers run, called one after the other with one work
directory; used for development, for the demo without Airflow, and by the benchmarks.
"""

from __future__ import annotations

import json
import time
from typing import Any

from mlops_pack.records import to_json
from mlops_pack.steps.context import StepContext
from mlops_pack.steps.decide import DECISION, gate, promote
from mlops_pack.steps.evaluate import RESULT as EVALUATION
from mlops_pack.steps.evaluate import evaluate
from mlops_pack.steps.train import train
from mlops_pack.steps.validate import validate


def retrain(ctx: StepContext, approver: str | None = None) -> dict[str, Any]:
    timings: dict[str, float] = {}

    def timed(name: str, func, *args):
        started = time.perf_counter()
        try:
            return func(*args)
        finally:
            timings[name] = round(time.perf_counter() - started, 3)

    started = time.perf_counter()
    validation = timed("validate", validate, ctx)
    trained = timed("train", train, ctx)
    timed("evaluate", evaluate, ctx, trained["version"])
    decision = timed("gate", gate, ctx, ctx.out_dir / EVALUATION)
    promotion = None
    if decision.verdict == "promote":
        promotion = timed("promote", promote, ctx, ctx.out_dir / DECISION, approver)
    return {
        "schema": "mlops_pack.retrain/1",
        "model": ctx.spec.name,
        "verdict": decision.verdict,
        "summary": decision.summary,
        "validation_status": validation["status"],
        "challenger_version": trained["version"],
        "train_rows": trained["train_rows"],
        "holdout_rows": trained["holdout_rows"],
        "holdout_rows_excluded": trained["holdout_rows_excluded"],
        "holdout_excluded_by": trained["holdout_excluded_by"],
        "champion_before": decision.champion_version,
        "promotion": promotion,
        "decision": json.loads(to_json(decision)),
        "timings": timings,
        "seconds": round(time.perf_counter() - started, 3),
    }
