"""The train step refuses an estimator that cannot train before anything is registered."""

from __future__ import annotations

import shutil

import pytest
import yaml
from mlops_pack.errors import EXIT_BAD_INPUT
from support import CHURN_SPEC, run_cli

CASES = {
    # estimator section update: (field named, phrase of the fix)
    "regressor in a classification spec": (
        {"class": "sklearn.ensemble.RandomForestRegressor", "params": {"n_estimators": 5}},
        "estimator.class",
        "use a scikit-learn classifier (e.g. sklearn.ensemble.RandomForestClassifier)",
    ),
    "param the estimator does not take": (
        {"params": {"max_iter": 20, "learning_rat": 0.1}},
        "estimator.params.learning_rat",
        "did you mean 'learning_rate'?",
    ),
}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_train_refuses_an_untrainable_estimator_and_registers_nothing(
    case, store, registry, tmp_path
):
    update, field, fix = CASES[case]
    include = tmp_path / "include"
    shutil.copytree(CHURN_SPEC.parents[1] / "expectations", include / "expectations")
    raw = yaml.safe_load(CHURN_SPEC.read_text())
    raw["estimator"].update(update)
    spec = include / "models" / "churn.yaml"
    spec.parent.mkdir()
    spec.write_text(yaml.safe_dump(raw))
    # The data is fine: validation passes, so only the estimator check can stop train.
    code, result = run_cli("validate", "--spec", spec, "--out", tmp_path / "validate")
    assert code == 0, result
    code, result = run_cli("train", "--spec", spec, "--out", tmp_path / "train")
    assert code == EXIT_BAD_INPUT, result
    assert result["status"] == "bad_input"
    assert result["error"].startswith(f"{spec}: {field}: ")
    assert fix in result["error"]
    # Refused before the holdout is pinned: no registered model, no version.
    assert registry.client.search_registered_models() == []
    assert registry.client.search_model_versions("name='churn'") == []
