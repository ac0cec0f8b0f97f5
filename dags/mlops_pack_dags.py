"""Retrain DAGs (one per spec in include/models/) and the rollback DAG."""

from mlops_pack.airflow.dag_factory import build_all

globals().update(build_all())
