"""What a validation stores on an MLflow server: the report and the Data Docs pages with
the local files they use, nothing else, in as few requests as the step can make.

The step runs as a step container runs it (``python -m mlops_pack``, its own process)
against a tracking server behind the compose stack's basic authentication; what it
stored is read back over HTTP, and its requests from the server's access log.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

from services import mlflow_passwords, mlflow_server, mlflow_signin
from support import ROOT

CHURN_SPEC = ROOT / "include" / "models" / "churn.yaml"
LOCAL_REF = re.compile(
    r"""(?:(?:src|href)=["']|url\(["']?)(?![a-z][a-z0-9+.-]*:|/|#)([^"'#?)\s]+)""", re.I
)
REQUEST = re.compile(r'"(GET|POST|PUT|PATCH|DELETE) (/[^ ?"]*)')


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_validation_stores_its_pages_and_what_they_use(data_dir, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    passwords = mlflow_passwords()
    with mlflow_server(tmp_path / "mlflow", passwords) as tracking:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env.update(
            mlflow_signin("mlops-pack", passwords),
            MLFLOW_TRACKING_URI=tracking,
            MLOPS_PACK_HOME=str(tmp_path / "home"),
            MLOPS_PACK_DATA_DIR=str(data_dir),
            PYTHONPATH=str(ROOT / "plugins"),
        )
        log = tmp_path / "mlflow" / "mlflow-server.log"
        before = len(log.read_text(encoding="utf-8").splitlines())
        out = tmp_path / "out"
        step = subprocess.run(
            [sys.executable, "-m", "mlops_pack", "validate", "--spec", CHURN_SPEC,
             "--data", "churn/churn_month_01.csv", "--out", out],
            env=env, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        assert step.returncode == 0, step.stdout[-3000:] + step.stderr[-3000:]
        requests = Counter(
            REQUEST.search(line).groups()
            for line in log.read_text(encoding="utf-8").splitlines()[before:]
            if REQUEST.search(line)
        )
        for name, value in mlflow_signin("mlops-pack", passwords).items():
            monkeypatch.setenv(name, value)  # restored after the test
        client = MlflowClient(tracking)
        [run] = client.search_runs(
            [client.get_experiment_by_name("mlops-pack/churn").experiment_id],
            "tags.`mlops.step` = 'validate'",
        )
        stored = client.download_artifacts(run.info.run_id, "", str(tmp_path / "stored"))

    docs = out / "data_docs"
    pages = {p for p in _files(docs) if p.endswith(".html")}
    # The site's index, both suites' pages and both validations' results.
    assert "index.html" in pages
    assert {p for p in pages if p.startswith("expectations/")} == {
        "expectations/churn_chunk.html",
        "expectations/churn_file.html",
    }
    assert len([p for p in pages if p.startswith("validations/")]) == 2, pages
    # Every local file a page references is there, and nothing that no page references.
    referenced = set()
    for page in pages:
        html = (docs / page).read_text(encoding="utf-8")
        assert "great-expectations-web-assets" not in html, page  # nothing reported to GX
        for ref in LOCAL_REF.findall(html):
            target = os.path.normpath(os.path.join(os.path.dirname(page), ref))
            if page.startswith("validations/") and ref == "../../../static/images/favicon.ico":
                continue  # GX's own link is a folder short on these pages (four deep)
            assert (docs / target).is_file(), f"{page} references {ref}, which is missing"
            referenced.add(target)
    assert _files(docs) - pages == referenced - pages
    assert referenced >= {"static/images/favicon.ico", "static/images/logo-long.png"}
    assert not any(p.startswith("static/fonts/") for p in _files(docs))
    assert sum((docs / p).stat().st_size for p in _files(docs)) < 300_000
    # The server holds the report and exactly those files.
    assert _files(Path(stored)) == {"validation.json"} | {f"data_docs/{p}" for p in _files(docs)}
    # One upload per stored file; the run is read once (where its artifacts go), not
    # again to print its address when it ends.
    puts = sum(n for (method, _), n in requests.items() if method == "PUT")
    assert puts == len(_files(Path(stored))), requests
    assert requests[("GET", "/api/2.0/mlflow/runs/get")] == 1, requests
    assert "View run" not in step.stdout
