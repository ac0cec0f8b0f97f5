"""Model specs: the examples load; bad specs fail with the file, the field and the fix."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from mlops_pack.errors import SpecError
from mlops_pack.spec import RunOverrides, apply_overrides, load_spec, spec_json_schema
from support import CHURN_SPEC, DIABETES_SPEC, ROOT

SPECS = sorted((ROOT / "include" / "models").glob("*.yaml"))


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_example_specs_load(path):
    spec = load_spec(path)
    assert spec.name == path.stem
    assert len(spec.sha256()) == 64


def _write(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load(CHURN_SPEC.read_text())
    mutate(raw)
    path = tmp_path / "churn.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


CASES = [
    (
        lambda r: r["gate"]["primary"].update(margin="high"),
        "gate.primary.margin: expected a number, got 'high'",
    ),
    (
        lambda r: r["gate"]["primary"].update(margn=0.1),
        "gate.primary.margn: expected no such field",
    ),
    (lambda r: r.pop("target"), "target: expected a value (the field is required)"),
    (lambda r: r.update(task="ranking"), "task: Input should be 'classification' or 'regression'"),
    (
        lambda r: r["columns"][1].update(type="float"),
        "columns[1].type: Input should be 'numeric' or 'categorical'",
    ),
    (
        lambda r: r["estimator"].update({"class": "os.system"}),
        "estimator.class: expected an estimator import path",
    ),
    (lambda r: r.update(metrics=["roc_auc", "mape"]), "unknown metric 'mape'"),
    (lambda r: r["gate"]["primary"].update(metric="r2"), "gate uses metric 'r2'"),
    (lambda r: r.update(classes=[0, 1, 2]), "multiclass is not supported yet"),
    (lambda r: r["gate"]["slices"].update(columns=["planet"]), "'planet' is not a declared column"),
    (lambda r: r["columns"][1].update(min=10, max=1), "min (10.0) is greater than max (1.0)"),
    (
        lambda r: r["validation"].update(severity={"duplicates": "fatal"}),
        "validation.severity.duplicates",
    ),
]


@pytest.mark.parametrize(("mutate", "message"), CASES)
def test_bad_specs_name_the_file_and_field(tmp_path, mutate, message):
    path = _write(tmp_path, mutate)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_spec_name_must_match_file(tmp_path):
    path = tmp_path / "other.yaml"
    path.write_text(CHURN_SPEC.read_text())
    with pytest.raises(SpecError, match="name: expected 'other'"):
        load_spec(path)


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "churn.yaml"
    path.write_text("name: churn\ntask: [unclosed\n")
    with pytest.raises(SpecError, match=r"line \d+, column \d+: invalid YAML"):
        load_spec(path)


def test_published_schema_is_current():
    committed = json.loads((ROOT / "plugins/mlops_pack/schema/model_spec.schema.json").read_text())
    assert committed == json.loads(json.dumps(spec_json_schema())), (
        "run: mlops-pack schema --output ..."
    )


def test_run_overrides_are_bounded_and_applied():
    spec = load_spec(CHURN_SPEC)
    changed = apply_overrides(
        spec,
        RunOverrides.model_validate(
            {
                "data_path": "churn/churn_month_02.csv",
                "gate": {"margin": 0.01, "mode": "non_inferiority"},
            }
        ),
    )
    assert changed.data.path == "churn/churn_month_02.csv"
    assert changed.gate.primary.margin == 0.01 and changed.gate.primary.mode == "non_inferiority"
    assert spec.gate.primary.margin == 0.0  # the original is untouched
    for bad in ({"gate": {"margin": 5}}, {"data_path": "../../etc/passwd"}, {"estimator": {}}):
        with pytest.raises(ValueError):
            RunOverrides.model_validate(bad)


# Estimator checks through the real CLI: specs the schema accepts but that can never train.


def _check_spec(*paths: Path):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "mlops_pack.cli", "check-spec", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _estimator(tmp_path: Path, base: Path, **estimator) -> Path:
    raw = yaml.safe_load(base.read_text())
    raw["estimator"].update(estimator)
    path = tmp_path / base.name
    path.write_text(yaml.safe_dump(raw))
    return path


ESTIMATOR_CASES = {
    "class not importable": (
        CHURN_SPEC,
        {"class": "sklearn.ensemble.RandomForestClasifier", "params": {}},
        "estimator.class: 'sklearn.ensemble.RandomForestClasifier' is not an estimator class "
        "in sklearn.ensemble; did you mean sklearn.ensemble.RandomForestClassifier",
    ),
    "module not importable": (
        CHURN_SPEC,
        {"class": "sklearn.ensembl.RandomForestClassifier", "params": {}},
        "estimator.class: cannot import module 'sklearn.ensembl'",
    ),
    "regressor in a classification spec": (
        CHURN_SPEC,
        {"class": "sklearn.ensemble.RandomForestRegressor", "params": {}},
        "estimator.class: sklearn.ensemble.RandomForestRegressor is not a classifier, but task "
        "is 'classification'; use a scikit-learn classifier (e.g. "
        "sklearn.ensemble.RandomForestClassifier)",
    ),
    "classifier in a regression spec": (
        DIABETES_SPEC,
        {"class": "sklearn.linear_model.LogisticRegression", "params": {}},
        "estimator.class: sklearn.linear_model.LogisticRegression is not a regressor",
    ),
    "param the estimator does not take": (
        CHURN_SPEC,
        {"params": {"max_iter": 150, "learning_rat": 0.1}},
        "estimator.params.learning_rat: HistGradientBoostingClassifier takes no parameter "
        "'learning_rat'; did you mean 'learning_rate'?",
    ),
    "param value out of range": (
        CHURN_SPEC,
        {"params": {"learning_rate": -1}},
        "estimator.params.learning_rate: The 'learning_rate' parameter",
    ),
    "classifier without predict_proba": (
        CHURN_SPEC,
        {"class": "sklearn.svm.SVC", "params": {}},
        "estimator.class: sklearn.svm.SVC with these params has no predict_proba",
    ),
}


def test_check_spec_refuses_estimators_that_cannot_train(tmp_path):
    # One check-spec run over every case (each in its own folder, as the file name must
    # equal the spec's name): every file is reported, the good one passes, exit code 2.
    paths = {}
    for number, (case, (base, estimator, _)) in enumerate(ESTIMATOR_CASES.items()):
        folder = tmp_path / str(number)
        folder.mkdir()
        paths[case] = _estimator(folder, base, **estimator)
    done = _check_spec(DIABETES_SPEC, *paths.values())
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    for case, (_, _, message) in ESTIMATOR_CASES.items():
        assert f"error: {paths[case]}: {message}" in done.stderr, case
    assert f"{DIABETES_SPEC}: ok" in done.stdout
    assert f"{len(paths)} of {len(paths) + 1} spec files failed" in done.stderr


def test_check_spec_passes_the_example_specs():
    done = _check_spec(*SPECS)
    assert done.returncode == 0, done.stderr


def test_spec_reference_is_generated_from_the_current_schema(tmp_path, monkeypatch):
    from mlops_pack.cli import main

    monkeypatch.delenv("MLOPS_PACK_EXTENSIONS", raising=False)  # built-in metrics only
    out = tmp_path / "spec-reference.md"
    argv = ["schema", "--markdown", "--examples", str(ROOT / "include/models")]
    assert main([*argv, "--output", str(out)]) == 0
    committed = (ROOT / "docs" / "spec-reference.md").read_text()
    assert committed == out.read_text(), (
        "docs/spec-reference.md is stale; run: mlops-pack schema --markdown "
        "--examples include/models --output docs/spec-reference.md"
    )


def test_spec_reference_names_every_key_with_a_type_and_an_example():
    text = (ROOT / "docs" / "spec-reference.md").read_text()
    documented = set()
    section = ""
    for line in text.splitlines():
        if line.startswith("## `"):
            section = line.removeprefix("## `").removesuffix("`") + "."
        elif line.startswith("## "):
            section = "" if line == "## Top level" else None
        elif section is not None and line.startswith("| `"):
            cells = re.split(r"(?<!\\)\|", line.strip().strip("|"))
            key, kind, _, _, example, _ = (c.strip() for c in cells)
            documented.add(section + key.strip("`"))
            assert kind, line
            assert example or "mapping" in kind, f"no example: {line}"

    def keys(model, prefix=""):
        for name, field in model.model_fields.items():
            key = prefix + (field.alias or name)
            yield key
            inner = field.annotation
            for arg in (*getattr(inner, "__args__", ()), inner):
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    suffix = "[]." if getattr(inner, "__origin__", None) is list else "."
                    yield from keys(arg, key + suffix)

    from mlops_pack.spec import ModelSpec
    from pydantic import BaseModel

    assert set(keys(ModelSpec)) == documented
