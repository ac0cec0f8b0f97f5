"""``python -m mlops_pack.pod_entry <command> ...``: one step in a Kubernetes pod.

A pod shares no file system with the worker: the step's input files (run overrides, a
decision) arrive as JSON in ``MLOPS_PACK_POD_INPUTS`` and are written into the work dir;
``result.json`` is copied to ``/airflow/xcom/return.json``, where the pod operator's XCom
sidecar reads it. The step's outcome travels in the result's ``status``, so the pod
exits 0 whenever a result was written (the operator maps the status onto Airflow's
outcomes), and with the step's own code when none was (a crash: retried).
Like ``__main__``, this entry sits above every code world.
"""

import json
import os
import shutil
import sys
from pathlib import Path

from mlops_pack.cli import main

WORK = Path("/work/run")
XCOM_RETURN = Path("/airflow/xcom/return.json")


def run(argv: list[str], work: Path = WORK, xcom: Path = XCOM_RETURN) -> int:
    work.mkdir(parents=True, exist_ok=True)
    for name, text in json.loads(os.environ.get("MLOPS_PACK_POD_INPUTS") or "{}").items():
        if Path(name).name != name or name.startswith("."):
            print(f"MLOPS_PACK_POD_INPUTS: refused file name {name!r}", file=sys.stderr)
            return 2
        (work / name).write_text(text, encoding="utf-8")
    code = main(argv)
    result = work / "result.json"
    if not result.is_file():
        return code or 1
    xcom.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(result, xcom)
    return 0


if __name__ == "__main__":
    status = run(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
