"""A corpus of bad inputs: each fails with an error naming its rule; nothing is registered."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from mlops_pack.errors import EXIT_BAD_INPUT
from support import CHURN_SPEC, run_cli


@pytest.fixture(autouse=True)
def _bad_files_are_readable(tmp_path, monkeypatch):
    """The corpus lives in the test's temp dir: allow it as an extra data root."""
    monkeypatch.setenv("MLOPS_PACK_DATA_ROOTS", str(tmp_path))


def _good(data_dir: Path) -> pd.DataFrame:
    return pd.read_csv(
        data_dir / "churn" / "churn_month_01.csv", nrows=3_000, keep_default_na=False, dtype=str
    )


def _csv(frame: pd.DataFrame, path: Path, **kwargs) -> None:
    frame.to_csv(path, index=False, **kwargs)


def _write(kind: str, data_dir: Path, path: Path) -> None:
    good = _good(data_dir)
    if kind == "empty file":
        path.write_bytes(b"")
    elif kind == "header only":
        path.write_text(",".join(good.columns) + "\n")
    elif kind == "wrong delimiter":
        _csv(good, path, sep=";")
    elif kind == "non-UTF-8":
        bad = good.copy()
        bad.loc[5, "region"] = "nörth"
        _csv(bad, path, encoding="latin-1")
    elif kind == "missing column":
        _csv(good.drop(columns=["age"]), path)
    elif kind == "extra column":
        _csv(good.assign(favourite_colour="blue"), path)
    elif kind == "all-NaN column":
        _csv(good.assign(monthly_charges=""), path)
    elif kind == "wrong dtype":
        bad = good.copy()
        bad.loc[10, "tenure_months"] = "twelve"
        _csv(bad, path)
    elif kind == "out-of-range values":
        bad = good.copy()
        bad.loc[:20, "age"] = "300"
        _csv(bad, path)
    elif kind == "unknown category":
        bad = good.copy()
        bad.loc[:20, "plan"] = "gold"
        _csv(bad, path)
    elif kind == "NaN labels":
        bad = good.copy()
        bad.loc[:50, "churned"] = ""
        _csv(bad, path)
    elif kind == "label outside classes":
        bad = good.copy()
        bad.loc[:5, "churned"] = "2"
        _csv(bad, path)
    elif kind == "duplicated rows":
        _csv(pd.concat([good, good.head(100)]), path)
    elif kind == "label copied into a feature":
        _csv(good.assign(paperless_billing=good["churned"].map({"1": "yes", "0": "no"})), path)
    else:  # pragma: no cover
        raise AssertionError(kind)


CORPUS = {
    # kind: (rule named in the error, a phrase the message must contain)
    "empty file": ("file", "empty"),
    "header only": ("min_rows", "0 rows"),
    "wrong delimiter": ("columns", "delimited by ';'"),
    "non-UTF-8": ("encoding", "UTF-8"),
    "missing column": ("columns", "missing ['age']"),
    "extra column": ("columns", "unexpected ['favourite_colour']"),
    "all-NaN column": ("nulls", "entirely null"),
    "wrong dtype": ("dtypes", "'tenure_months'"),
    "out-of-range values": ("ranges", "age"),
    "unknown category": ("categories", "plan"),
    "NaN labels": ("label_not_null", "no value in label 'churned'"),
    "label outside classes": ("label_values", "outside classes"),
    "duplicated rows": ("duplicates", "repeat an earlier row"),
    "label copied into a feature": ("leakage", "paperless_billing"),
}


@pytest.mark.parametrize("kind", sorted(CORPUS))
def test_bad_data_fails_with_its_rule_and_nothing_is_registered(
    kind, store, registry, data_dir, tmp_path
):
    path = tmp_path / "bad.csv"
    _write(kind, data_dir, path)
    code, result = run_cli(
        "retrain", "--spec", CHURN_SPEC, "--data", path, "--out", tmp_path / "run"
    )
    rule, phrase = CORPUS[kind]
    assert code == EXIT_BAD_INPUT, result
    assert result["status"] == "bad_input"
    assert str(path) in result["error"]
    assert f"{rule}:" in result["error"], result["error"]
    assert phrase in result["error"], result["error"]
    report = result["result"]
    failed = [c for c in report["checks"] if not c["success"] and c["severity"] == "error"]
    assert rule in {c["rule"] for c in failed}
    # Nothing registered, nothing promoted.
    assert registry.client.search_model_versions("name='churn'") == []
    assert registry.alias("churn", "champion") is None


def test_a_bad_spec_names_the_field_and_registers_nothing(store, registry, tmp_path):
    text = CHURN_SPEC.read_text().replace("margin: 0.0}", "margin: high}")
    spec = tmp_path / "models" / "churn.yaml"
    spec.parent.mkdir()
    spec.write_text(text)
    code, result = run_cli("retrain", "--spec", spec, "--out", tmp_path / "run")
    assert code == EXIT_BAD_INPUT
    assert result["error"] == f"{spec}: gate.primary.margin: expected a number, got 'high'"
    assert registry.client.search_registered_models() == []


def test_a_bad_batch_after_a_champion_leaves_the_champion_alone(
    store, registry, data_dir, tmp_path
):
    assert run_cli("retrain", "--spec", CHURN_SPEC, "--out", tmp_path / "r1")[0] == 0
    path = tmp_path / "bad.csv"
    _write("NaN labels", data_dir, path)
    code, _ = run_cli("retrain", "--spec", CHURN_SPEC, "--data", path, "--out", tmp_path / "r2")
    assert code == EXIT_BAD_INPUT
    assert [str(v.version) for v in registry.client.search_model_versions("name='churn'")] == ["1"]
    assert registry.alias("churn", "champion").version == "1"


def test_warn_severity_reports_without_failing(store, data_dir, tmp_path):
    text = CHURN_SPEC.read_text().replace(
        "severity: {duplicates: error}", "severity: {duplicates: warn}"
    )
    spec = tmp_path / "models" / "churn.yaml"
    spec.parent.mkdir()
    spec.write_text(text)
    suite = json.loads((CHURN_SPEC.parents[1] / "expectations" / "churn.json").read_text())
    suite["expectations"] = [
        e for e in suite["expectations"] if e["type"] != "expect_column_values_to_be_unique"
    ]
    (tmp_path / "expectations").mkdir()
    (tmp_path / "expectations" / "churn.json").write_text(json.dumps(suite))
    path = tmp_path / "dupes.csv"
    _write("duplicated rows", data_dir, path)
    code, result = run_cli("validate", "--spec", spec, "--data", path, "--out", tmp_path / "v")
    assert code == 0, result
    assert any(w.startswith("duplicates:") for w in result["result"]["warnings"])
    assert (tmp_path / "v" / "data_docs" / "index.html").exists()
