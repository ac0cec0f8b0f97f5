"""``mlops-pack reproduce`` through the CLI, on real files, a real MLflow store and real
retraining: a version rebuilt from its retained data, recorded spec and holdout gives the
registered model's predictions exactly, and when it cannot, the command names why."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import sklearn
import yaml
from mlops_pack.hashing import sha256_file
from support import DIABETES_SPEC, churn_spec_copy, run_cli

NOT_REPRODUCED = 6


def _reproduce(spec: Path, version: str, out: Path) -> tuple[int, dict]:
    return run_cli("reproduce", "--spec", spec, "--version", version, "--out", out)


def test_churn_version_reproduces_from_its_records(store, tmp_path, registry):
    spec = churn_spec_copy(tmp_path, lambda raw: None)
    batch = "churn/churn_month_01.csv"
    code, result = run_cli("retrain", "--spec", spec, "--data", batch, "--out", tmp_path / "r")
    assert code == 0, result
    # Today's spec file no longer describes v1: reproduce must train with the recorded one.
    raw = yaml.safe_load(spec.read_text())
    raw["estimator"]["params"]["max_iter"] = 20
    raw["holdout"]["seed"] = 1
    spec.write_text(yaml.safe_dump(raw, sort_keys=False))

    code, result = _reproduce(spec, "1", tmp_path / "p1")
    assert code == 0, result["error"]
    record = result["result"]
    assert record["predictions"] == {
        "rows": 1600,
        "max_abs_diff": 0.0,
        "rows_differing": 0,
        "identical": True,
    }
    assert record["holdout"]["strategy"] == "out_of_time"
    assert record["holdout"]["recarved_identical"] is True
    assert record["train_rows"] == {"recorded": 6400, "retrained": 6400}
    version = registry.version("churn", "1")
    assert record["artifact"]["recorded_sha256"] == version.tags["mlops.artifact_sha256"]
    assert record["artifact"]["content_equal"] is True
    assert version.tags["mlops.reproduce.outcome"] == "reproduced"
    assert version.tags["mlops.reproduce.differs"] == "none"
    assert version.tags["mlops.reproduce.max_abs_diff"] == "0.0"
    event = registry.history("churn", "reproduce")[-1]
    assert (event["version"], event["outcome"]) == ("1", "reproduced")

    # Records the running code cannot match: every difference is named, with figures.
    registry.client.set_tag(version.run_id, "mlops.version.scikit-learn", "0.24.2")
    data = version.tags["mlops.data_sha256"]
    registry.client.set_model_version_tag("churn", "1", "mlops.window_sha256s", f"{data},{data}")
    code, result = _reproduce(spec, "1", tmp_path / "p2")
    assert code == NOT_REPRODUCED, result
    assert result["status"] == "not_reproduced"
    record = result["result"]
    assert [d["what"] for d in record["differences"]] == [
        "library_versions",
        "training_rows",
        "predictions",
        "model_content",
    ]
    error = result["error"]
    assert error.startswith("churn v1 does not reproduce: library versions: ")
    assert f"scikit-learn 0.24.2 recorded, {sklearn.__version__} running" in error
    assert "training rows: 12800 rows now, 6400 when trained" in error
    gap = record["predictions"]["max_abs_diff"]
    assert gap > 0 and f"max abs difference {gap:.3g}" in error
    tags = registry.version("churn", "1").tags
    assert tags["mlops.reproduce.outcome"] == "not_reproduced"
    assert tags["mlops.reproduce.differs"] == (
        "library_versions,training_rows,predictions,model_content"
    )
    assert [e["outcome"] for e in registry.history("churn", "reproduce")] == [
        "reproduced",
        "not_reproduced",
    ]


def test_diabetes_version_reproduces_on_its_own_holdout_after_a_refresh(store, tmp_path, registry):
    code, result = run_cli("retrain", "--spec", DIABETES_SPEC, "--out", tmp_path / "r")
    assert code == 0, result
    v1_holdout = registry.version("diabetes", "1").tags["mlops.holdout_sha256"]
    # The model's pinned holdout moves on; v1 was trained beside the old one.
    reseeded = churn_spec_copy(
        tmp_path, lambda raw: raw["holdout"].update(seed=8), source=DIABETES_SPEC
    )
    code, result = run_cli(
        "refresh-holdout", "--spec", reseeded, "--data", "diabetes/diabetes.csv",
        "--reason", "new split", "--out", tmp_path / "h",
    )  # fmt: skip
    assert code == 0, result
    assert registry.model_tags("diabetes")["mlops.holdout_sha256"] != v1_holdout

    code, result = _reproduce(DIABETES_SPEC, "1", tmp_path / "p")
    assert code == 0, result["error"]
    record = result["result"]
    assert record["holdout"] == {"sha256": v1_holdout, "strategy": "split", "rows": 111}
    assert record["predictions"]["identical"] and record["predictions"]["max_abs_diff"] == 0.0
    assert record["train_rows"] == {"recorded": 331, "retrained": 331}
    assert record["artifact"]["content_equal"] is True
    assert registry.version("diabetes", "1").tags["mlops.reproduce.outcome"] == "reproduced"


def test_a_version_whose_data_is_gone_or_altered_says_so(store, data_dir, tmp_path, registry):
    from mlops_pack.steps import retention

    spec = churn_spec_copy(tmp_path, lambda raw: raw.update(retention={"batches": 1}))
    batches = ["churn/churn_month_01.csv", "churn/churn_month_02.csv"]
    for i, batch in enumerate(batches):  # v1, then v2: neither aliased, v2 the newest
        for step in ("validate", "train"):
            code, result = run_cli(
                step, "--spec", spec, "--data", batch, "--out", tmp_path / f"{step}{i}"
            )
            assert code == 0, result
    first, second = (sha256_file(data_dir / b) for b in batches)
    code, _ = run_cli("data", "prune", "--spec", spec, "--apply")
    assert code == 0
    assert retention.find(registry, "churn", first).pruned_at is not None

    code, result = _reproduce(spec, "1", tmp_path / "p1")
    assert code == NOT_REPRODUCED, result
    error = result["error"]
    assert error.startswith("churn v1 does not reproduce: data missing: ")
    assert f"batch {first[:12]} (churn_month_01.csv) was pruned at" in error
    record = result["result"]
    assert [d["what"] for d in record["differences"]] == ["data_missing"]
    assert "predictions" not in record
    tags = registry.version("churn", "1").tags
    assert (tags["mlops.reproduce.outcome"], tags["mlops.reproduce.differs"]) == (
        "not_reproduced",
        "data_missing",
    )

    # The newest version's batch is kept, but its stored copy was overwritten.
    stored = retention.find(registry, "churn", second)
    folder = Path(urlparse(stored.artifact_uri).path) / retention.FOLDER
    (folder / "churn_month_02.csv").write_text("customer_id\n1\n")
    code, result = _reproduce(spec, "2", tmp_path / "p2")
    assert code == NOT_REPRODUCED, result
    assert f"batch {second[:12]} is missing or altered" in result["error"]
