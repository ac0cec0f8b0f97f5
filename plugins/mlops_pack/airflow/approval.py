"""The operator that records a person's answer to an approval request in the model's history."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlops_pack.airflow.operators import MlopsStepOperator, json_input


class RecordApprovalOperator(MlopsStepOperator):
    """Append the approval outcome (who, when, which option, for which decision) to history.

    Runs for every answer, Approve, Reject or the timeout default, so a rejection leaves
    the same trace as an approval. The write goes through the step container like every
    other registry write, so the store keeps one owner.

    :param response: the approval task's XCom (``chosen_options``, ``responded_by_user``,
        ``responded_at``).
    :param decision: the gate task's XCom (the decision the request was about).
    """

    step = "record-approval"
    template_fields: Sequence[str] = (*MlopsStepOperator.template_fields, "response", "decision")

    def __init__(
        self, *, response: dict[str, Any] | str, decision: dict[str, Any] | str, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.response = response
        self.decision = decision

    def step_arguments(self, context: Any, work: Path) -> list[str]:
        return [
            "--response",
            json_input(work, "response", self.response),
            "--decision",
            json_input(work, "decision", self.decision),
        ]
