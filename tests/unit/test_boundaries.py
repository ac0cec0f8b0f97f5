"""The two code worlds stay apart: light modules load no heavy library, steps no Airflow."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

HEAVY = ("sklearn", "pandas", "great_expectations", "mlflow", "numpy", "skops")


def _loaded_after(imports: str) -> set[str]:
    code = f"import sys; {imports}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return {name.split(".")[0] for name in out.stdout.split()}


def test_shared_modules_load_no_heavy_library():
    loaded = _loaded_after(
        "import mlops_pack.spec, mlops_pack.gate, mlops_pack.records, "
        "mlops_pack.registry, mlops_pack.errors, mlops_pack.cli"
    )
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_step_world_never_imports_airflow():
    loaded = _loaded_after(
        "import mlops_pack.steps.retrain, mlops_pack.steps.holdout_refresh, "
        "mlops_pack.datagen.churn, mlops_pack.steps.validate"
    )
    assert "airflow" not in loaded


# One-way imports, read from the source (lazy imports inside functions count too):
# DAGs -> Airflow world -> CLI -> steps / serving / datagen -> shared core.
PACKAGE = Path(__file__).resolve().parents[2] / "plugins" / "mlops_pack"
ALLOWED = {
    "core": {"core"},
    "steps": {"core", "steps"},
    "serving": {"core", "serving"},
    "datagen": {"core", "datagen"},
    "cli": {"core", "cli", "steps", "datagen"},
    "airflow": {"core", "cli", "steps", "serving", "datagen", "airflow"},
}


def _layer(module: str) -> str:
    parts = module.split(".")
    if parts[1:2] in (["steps"], ["serving"], ["datagen"], ["airflow"]):
        return parts[1]
    if parts[1:2] in (["cli"], ["__main__"], ["pod_entry"]):
        return "cli"
    return "core"


def _module_of(path: Path) -> str:
    parts = ["mlops_pack", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, module: str) -> set[str]:
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found |= {f"{base}.{alias.name}" for alias in node.names} | {base}
    return {name for name in found if name.split(".")[0] == "mlops_pack" and "." in name}


def _edges() -> list[tuple[str, str]]:
    edges = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_of(path)
        for target in _imports(path, module):
            if _is_module(target):
                edges.append((module, target))
    return edges


def _is_module(name: str) -> bool:
    relative = Path(*name.split(".")[1:])
    return (PACKAGE / relative).with_suffix(".py").exists() or (PACKAGE / relative).is_dir()


def test_imports_run_one_way():
    edges = _edges()
    assert len(edges) > 50  # the walk found the package's imports
    wrong = sorted(
        f"{source} ({_layer(source)}) imports {target} ({_layer(target)})"
        for source, target in edges
        if _layer(target) not in ALLOWED[_layer(source)]
    )
    assert wrong == []


def test_no_module_imports_a_private_name_of_another():
    private = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_of(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mlops_pack"):
                names = [a.name for a in node.names if a.name.startswith("_")]
                private += [f"{module}: from {node.module} import {n}" for n in names]
    assert private == []
