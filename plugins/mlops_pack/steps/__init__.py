"""The step world: validate, train, evaluate, gate, promote. Never imports Airflow."""
