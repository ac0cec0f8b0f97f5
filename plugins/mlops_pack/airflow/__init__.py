"""The Airflow world: operators, the DAG factory and the plugin. Imports Airflow at module
level and the step world's heavy libraries only inside ``execute()``."""
