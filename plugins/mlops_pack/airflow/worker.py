"""Airflow's command line with the pack's supervisor fix: how the stacks start workers.

    python -m mlops_pack.airflow.worker celery worker

runs ``airflow celery worker`` (any Airflow command works the same way) after
``supervisor_exit.install()``, so every task the worker supervises frees its slot as soon
as its process exits (see that module). The Celery pool's processes are forked from this
one and inherit the fix.
"""

from __future__ import annotations

import sys


def main() -> None:
    from mlops_pack.airflow import supervisor_exit

    supervisor_exit.install()
    from airflow.__main__ import main as airflow_main

    sys.argv = ["airflow", *sys.argv[1:]]
    airflow_main()


if __name__ == "__main__":
    main()
