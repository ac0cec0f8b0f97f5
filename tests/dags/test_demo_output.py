"""`make demo` shows one line per task and keeps Airflow's logs in a file; the helper
modules answer --help instead of starting anything."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from support import ROOT


@pytest.mark.parametrize("module", ["mlops_pack.airflow.demo", "mlops_pack.airflow.local_stack"])
def test_helper_modules_answer_help(module, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, env=dict(os.environ), check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"usage: python -m {module}")
    assert "Traceback" not in out.stderr
    assert not (tmp_path / ".mlops").exists()  # nothing was set up or started


def test_demo_prints_one_line_per_task_and_logs_to_a_file(airflow_db, tmp_path):
    log = tmp_path / "demo.log"
    code = (
        "from pathlib import Path\n"
        "from mlops_pack.airflow.dag_factory import build_retrain_dag\n"
        "from mlops_pack.airflow.demo import output_to, task_lines\n"
        f"dag = build_retrain_dag(Path({str(ROOT / 'include/models/churn.yaml')!r}))\n"
        "print('TASKS', len(dag.task_ids))\n"
        "print('BEGIN', flush=True)\n"
        f"with output_to(Path({str(log)!r})):\n"
        # Fails at its first task (an unknown conf key): every task gets a final state.
        "    run = dag.test(run_conf={'reason': 'demo output', 'unknown_key': 1})\n"
        "print('\\n'.join(task_lines(run)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        timeout=600, env=dict(os.environ),
    )  # fmt: skip
    head, body = out.stdout.split("BEGIN\n", 1)
    tasks = int(head.split("TASKS ", 1)[1].split()[0])
    shown = body.splitlines()
    # Airflow's own output (thousands of lines in a real demo) went to the file.
    assert "run_overrides" in log.read_text() and len(log.read_text().splitlines()) > 10
    assert out.stderr.count("\n") < 5, out.stderr[-2000:]
    assert tasks >= 8 and len(shown) == tasks  # one line per task of the churn DAG, nothing else
    assert re.fullmatch(r"  run_overrides +failed +\d+\.\d s", shown[0])
    states = dict(line.split()[:2] for line in shown)
    assert states["labelled_batch"] == states["validate"] == "upstream_failed"
    for line in shown:
        assert re.fullmatch(r"  \S+ +\S+ +(\d+\.\d s|-)", line.rstrip()), line
