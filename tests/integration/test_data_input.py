"""Data input through the real CLI: where data may come from, what a file really is, and
verdicts that hold for the whole batch, not for one chunk."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlops_pack.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_REJECTED
from support import CHURN_SPEC, DIABETES_SPEC, pinned_churn_spec, run_cli

PASSWD_FIRST_LINE = "root:x:0:0"


@pytest.fixture
def data(tmp_path, monkeypatch, data_dir) -> Path:
    """A data directory of this test's own, holding churn months 1 and 2."""
    root = tmp_path / "data"
    shutil.copytree(data_dir / "churn", root / "churn")
    monkeypatch.setenv("MLOPS_PACK_DATA_DIR", str(root))
    monkeypatch.delenv("MLOPS_PACK_DATA_ROOTS", raising=False)
    return root


def _rows(data: Path, month: int = 1, rows: int = 3_000) -> pd.DataFrame:
    path = data / "churn" / f"churn_month_{month:02d}.csv"
    return pd.read_csv(path, nrows=rows, keep_default_na=False, dtype=str)


def _spec_copy(tmp_path: Path, change) -> Path:
    """The churn spec and its suite in a private include dir, with ``change`` applied."""
    include = tmp_path / "include"
    shutil.copytree(CHURN_SPEC.parents[1] / "expectations", include / "expectations")
    spec = yaml.safe_load(CHURN_SPEC.read_text())
    change(spec, include)
    (include / "models").mkdir()
    path = include / "models" / "churn.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _no_version(registry) -> bool:
    return registry.client.search_model_versions("name='churn'") == []


def _everything_written(*roots: Path) -> str:
    return "\n".join(
        p.read_text(errors="replace") for root in roots for p in root.rglob("*") if p.is_file()
    )


# Item 1 --------------------------------------------------------------------------------


@pytest.mark.parametrize("label", ["0", "1"])
def test_a_batch_with_one_class_is_refused_and_registers_nothing(
    label, store, registry, data, tmp_path
):
    path = data / "churn" / f"only_{label}.csv"
    _rows(data).assign(churned=label).to_csv(path, index=False)
    code, result = run_cli(
        "retrain", "--spec", CHURN_SPEC, "--data", path, "--out", tmp_path / "run"
    )
    assert code == EXIT_BAD_INPUT, result
    absent = "1" if label == "0" else "0"
    assert str(path) in result["error"]
    assert f"label_classes: no row has class [{absent}] in label 'churned'" in result["error"]
    failed = {c["rule"] for c in result["result"]["checks"] if not c["success"]}
    assert "label_classes" in failed
    assert _no_version(registry)


# Item 2 --------------------------------------------------------------------------------


@pytest.mark.parametrize("step", ["validate", "train", "retrain"])
def test_a_directory_as_data_is_bad_input_naming_the_path(step, store, data, tmp_path):
    code, result = run_cli(step, "--spec", CHURN_SPEC, "--data", "churn", "--out", tmp_path / "run")
    assert code == EXIT_BAD_INPUT, result
    assert f"{data / 'churn'}: " in result["error"]
    assert "is a directory, not a file" in result["error"]


# Item 3 --------------------------------------------------------------------------------


def test_a_path_outside_the_data_directory_is_refused_and_nothing_is_copied(
    store, registry, data, tmp_path
):
    code, result = run_cli(
        "validate", "--spec", CHURN_SPEC, "--data", "/etc/passwd", "--out", tmp_path / "run"
    )
    assert code == EXIT_BAD_INPUT, result
    assert result["error"].startswith("/etc/passwd: validation failed: data_path: outside the ")
    assert "MLOPS_PACK_DATA_ROOTS" in result["error"]
    assert "data_sha256" not in result["result"]  # not even hashed
    assert PASSWD_FIRST_LINE not in _everything_written(tmp_path / "run", store)


def test_a_symlink_out_of_the_data_directory_is_refused_unless_its_root_is_allowed(
    store, data, tmp_path, monkeypatch
):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(data / "churn" / "churn_month_01.csv", outside / "m1.csv")
    (data / "churn" / "link.csv").symlink_to(outside / "m1.csv")

    code, result = run_cli(
        "validate", "--spec", CHURN_SPEC, "--data", "churn/link.csv", "--out", tmp_path / "v1"
    )
    assert code == EXIT_BAD_INPUT, result
    assert f"data_path: outside the data directory {data} (it resolves to " in result["error"]

    monkeypatch.setenv("MLOPS_PACK_DATA_ROOTS", f"/nonexistent:{outside}")
    for given, out in (("churn/link.csv", "v2"), (str(outside / "m1.csv"), "v3")):
        code, result = run_cli(
            "validate", "--spec", CHURN_SPEC, "--data", given, "--out", tmp_path / out
        )
        assert code == EXIT_OK, result
        assert result["result"]["status"] == "passed"


def test_messages_describe_a_file_without_quoting_its_lines(store, data, tmp_path):
    header = data / "churn" / "one_column.csv"
    header.write_text("root:x:0:0:root;/root;/bin/bash\nsecret;row\n")
    wide = data / "churn" / "wide_row.csv"
    lines = (data / "churn" / "churn_month_01.csv").read_text().splitlines()[:50]
    lines[20] += ",SECRET-TOKEN-42"
    wide.write_text("\n".join(lines) + "\n")
    code, result = run_cli(
        "validate", "--spec", CHURN_SPEC, "--data", header, "--out", tmp_path / "h"
    )
    assert code == EXIT_BAD_INPUT
    assert "columns: the header is a single column of 31 characters" in result["error"]
    code, result = run_cli(
        "validate", "--spec", CHURN_SPEC, "--data", wide, "--out", tmp_path / "w"
    )
    assert code == EXIT_BAD_INPUT
    assert "format: rows do not match the header (" in result["error"]
    assert "has 13 fields, the header 12)" in result["error"]
    written = _everything_written(tmp_path / "h", tmp_path / "w", store)
    assert PASSWD_FIRST_LINE not in written and "SECRET-TOKEN-42" not in written


# Item 4 --------------------------------------------------------------------------------


def test_a_bad_value_in_a_reordered_file_names_its_own_column(store, data, tmp_path):
    frame = _rows(data)
    frame = frame[list(reversed(frame.columns))]
    frame.loc[10, "age"] = "forty"
    path = data / "churn" / "reordered.csv"
    frame.to_csv(path, index=False)
    code, result = run_cli(
        "validate", "--spec", CHURN_SPEC, "--data", path, "--out", tmp_path / "v"
    )
    assert code == EXIT_BAD_INPUT, result
    assert "dtypes: column 'age'" in result["error"]
    assert "invalid value 'forty'" in result["error"]


# Item 5 --------------------------------------------------------------------------------


def test_a_parquet_file_under_a_csv_spec_is_read_as_parquet(store, data, tmp_path):
    path = data / "churn" / "m3.parquet"
    pd.read_csv(data / "churn" / "churn_month_01.csv").to_parquet(path, index=False)
    code, result = run_cli(
        "validate", "--spec", CHURN_SPEC, "--data", "churn/m3.parquet", "--out", tmp_path / "v"
    )
    assert code == EXIT_OK, result
    report = result["result"]
    assert report["format"] == "parquet" and report["rows"] == 8_000
    assert any(
        c["rule"] == "format" and "the file is parquet, the spec says csv" in c["message"]
        for c in report["checks"]
    )


def test_a_csv_file_under_a_parquet_spec_is_read_as_csv(store, data, tmp_path):
    spec = _spec_copy(tmp_path, lambda s, _: s["data"].update(format="parquet"))
    code, result = run_cli(
        "validate", "--spec", spec, "--data", "churn/churn_month_01.csv", "--out", tmp_path / "v"
    )
    assert code == EXIT_OK, result
    assert result["result"]["format"] == "csv" and result["result"]["rows"] == 8_000


def test_a_file_named_parquet_that_is_not_parquet_says_so(store, data, tmp_path):
    path = data / "churn" / "fake.parquet"
    shutil.copy(data / "churn" / "churn_month_01.csv", path)
    code, result = run_cli(
        "validate", "--spec", CHURN_SPEC, "--data", path, "--out", tmp_path / "v"
    )
    assert code == EXIT_BAD_INPUT
    assert (
        "format: named .parquet, but the file is not Parquet (no PAR1 magic bytes)"
        in (result["error"])
    )


# Item 18 -------------------------------------------------------------------------------


def test_expectations_are_judged_over_the_whole_file_not_per_chunk(store, data, tmp_path):
    def small_chunks(spec, include):
        spec["validation"]["chunk_rows"] = 1_000
        # The spec's own duplicate check would catch the repeated id first; this test is
        # about the GX suite's uniqueness expectation.
        spec["validation"]["severity"] = {"duplicates": "warn"}
        suite_path = include / "expectations" / "churn.json"
        suite = json.loads(suite_path.read_text())
        suite["expectations"].append(
            {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1}}
        )
        suite_path.write_text(json.dumps(suite))

    spec = _spec_copy(tmp_path, small_chunks)
    # Sorted by label: the first 1,000-row chunk has no churner at all (its mean is 0,
    # outside the suite's 0.02..0.8 band), the file as a whole has its usual rate.
    frame = _rows(data).sort_values("churned", kind="stable").reset_index(drop=True)
    frame.loc[2_900, "customer_id"] = frame.loc[10, "customer_id"]  # chunk 1 and chunk 3
    path = data / "churn" / "sorted.csv"
    frame.to_csv(path, index=False)

    code, result = run_cli("validate", "--spec", spec, "--data", path, "--out", tmp_path / "v")
    assert code == EXIT_BAD_INPUT, result
    checks = {c["name"]: c for c in result["result"]["checks"]}
    unique = checks["expect_column_values_to_be_unique(customer_id)"]
    assert not unique["success"] and unique["unexpected_count"] == 2
    mean = checks["expect_column_mean_to_be_between(churned)"]
    assert mean["success"], mean
    assert f"observed {frame['churned'].astype(int).mean():.4g}" in mean["message"]
    table = checks["expect_table_row_count_to_be_between()"]
    assert not table["success"]
    assert "spans 3 chunks of validation.chunk_rows=1000 rows" in table["message"]


# Item 22 -------------------------------------------------------------------------------


def _held_out(registry, tmp_path: Path) -> pd.DataFrame:
    uri = registry.model_tags("churn")["mlops.holdout_uri"]
    return pd.read_parquet(registry.download(uri, tmp_path / "holdout"))


def test_holdout_rows_are_excluded_by_key_and_counted_in_every_summary(
    store, registry, data, tmp_path, capsys
):
    CHURN_SPEC = pinned_churn_spec(tmp_path)
    code, _ = run_cli(
        "retrain", "--spec", CHURN_SPEC, "--data", "churn/churn_month_01.csv",
        "--out", tmp_path / "r1",
    )  # fmt: skip
    assert code == EXIT_OK
    held = _held_out(registry, tmp_path).astype(str).replace("nan", "")
    assert len(held) == 1_600
    # 200 holdout customers again, and 300 new customers whose values copy holdout rows.
    again = held.head(200)
    twins = held.iloc[200:500].assign(customer_id=[f"M099-{i:09d}" for i in range(300)])
    batch = pd.concat([_rows(data, month=2), again, twins], ignore_index=True)
    path = data / "churn" / "month2_with_holdout.csv"
    batch.to_csv(path, index=False)
    capsys.readouterr()

    code, result = run_cli(
        "retrain", "--spec", CHURN_SPEC, "--data", path, "--out", tmp_path / "r2"
    )
    assert code in (EXIT_OK, EXIT_REJECTED), result
    train = json.loads((tmp_path / "r2" / "train.json").read_text())
    assert train["holdout_rows"] == 1_600
    assert train["holdout_rows_excluded"] == 200
    assert train["train_rows"] == 3_300
    assert train["holdout_excluded_by"] == "key ['customer_id']"
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert "trained on 3300 rows, holdout 1600 rows held out, 200 rows excluded from training" in (
        summary
    )

    code, _ = run_cli("train", "--spec", CHURN_SPEC, "--data", path, "--out", tmp_path / "t3")
    assert code == EXIT_OK
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.endswith(
        "holdout 1600 rows held out, 200 rows excluded from training (by key ['customer_id'])"
    )


def test_without_a_key_holdout_rows_are_recognised_by_their_values(store, registry, tmp_path):
    code, _ = run_cli("retrain", "--spec", DIABETES_SPEC, "--out", tmp_path / "r1")
    assert code == EXIT_OK
    train = json.loads((tmp_path / "r1" / "train.json").read_text())
    assert train["holdout_excluded_by"] == "row values"
    assert train["holdout_rows_excluded"] == train["holdout_rows"] > 0
