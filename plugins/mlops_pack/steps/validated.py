"""The rule that only validated data is used: train and holdout refresh both enforce it."""

from __future__ import annotations

from mlops_pack.errors import BadInputError
from mlops_pack.registry import TAG
from mlops_pack.steps.context import StepContext


def require_validated(ctx: StepContext, data_sha256: str) -> str:
    """The id of a passed ``validate`` run for this data; refuses data that has none."""
    registry = ctx.registry
    experiment = registry.experiment_id(f"mlops-pack/{ctx.spec.name}")
    runs = registry.client.search_runs(
        [experiment],
        filter_string=(
            f"tags.`{TAG}step` = 'validate' and tags.`{TAG}data_sha256` = '{data_sha256}' "
            f"and tags.`{TAG}status` = 'passed'"
        ),
        max_results=1,
    )
    if not runs:
        raise BadInputError(
            f"{ctx.data_path()}: this data (sha256 {data_sha256[:12]}) has not passed validation; "
            "run `mlops-pack validate` on it first"
        )
    return runs[0].info.run_id
