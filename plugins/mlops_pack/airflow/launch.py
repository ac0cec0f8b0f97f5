"""Airflow's command line with the pack's fixes: how the stacks start workers and the scheduler.

    python -m mlops_pack.airflow.launch celery worker
    python -m mlops_pack.airflow.launch scheduler

runs ``airflow celery worker`` or ``airflow scheduler`` (any Airflow command works the
same way) after ``supervisor_exit.install()``, so every task a worker supervises frees
its slot as soon as its process exits (see that module). The Celery pool's processes are
forked from this one and inherit the fix. The scheduler also gets
``celery_results.install()``: its check of the tasks in flight reuses one database
connection instead of opening one a loop (see that module).

A Celery worker also imports, before it forks its pool, what every task's process would
otherwise import again after its own fork: Airflow's DagBag (each task parses its DAG
file with it), the pack's DAG factory and Docker's types. A task then starts with them in
memory (docs/production.md). A change to these modules needs a worker restart, as a change
to the installed pack always did.
"""

from __future__ import annotations

import importlib
import logging
import sys

log = logging.getLogger(__name__)

# Imported by each task's process after the fork unless the worker has them already. The
# DAG file is deliberately not among them: it is the team's code, read fresh by each task.
TASK_IMPORTS = ("airflow.dag_processing.dagbag", "mlops_pack.airflow.dag_factory", "docker.types")


def preload() -> None:
    """Import TASK_IMPORTS. One this Airflow lacks (that DagBag module is there from 3.1
    on) is skipped with a warning: a task imports what it needs anyway, only later."""
    for module in TASK_IMPORTS:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            log.warning("not imported before the pool forks: %s (%s)", module, exc)


def main() -> None:
    from mlops_pack.airflow import supervisor_exit

    supervisor_exit.install()
    if sys.argv[1:3] == ["celery", "worker"]:
        preload()
    if sys.argv[1:2] == ["scheduler"]:
        from mlops_pack.airflow import celery_results

        celery_results.install()
    from airflow.__main__ import main as airflow_main

    sys.argv = ["airflow", *sys.argv[1:]]
    airflow_main()


if __name__ == "__main__":
    main()
