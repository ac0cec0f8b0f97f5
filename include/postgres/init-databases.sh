#!/usr/bin/env bash
# Run once by the official Postgres image when its volume is new: one role and one
# database per consumer, each role the owner of its own database only, and no database
# open to PUBLIC. Airflow's metadata, the MLflow backend and the promotion lock (an
# advisory lock needs a connection, no tables) can then not read each other.
set -euo pipefail
for var in AIRFLOW_DB_PASSWORD MLFLOW_DB_PASSWORD LOCK_DB_PASSWORD; do
  [ -n "${!var:-}" ] || { echo "init-databases: $var is empty; run mlops-pack stack init" >&2; exit 1; }
done
create() {  # role database password
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v role="$1" -v db="$2" -v password="$3" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'password';
CREATE DATABASE :"db" OWNER :"role";
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
SQL
}
create airflow airflow "$AIRFLOW_DB_PASSWORD"
create mlflow mlflow "$MLFLOW_DB_PASSWORD"
create mlops_lock mlops_lock "$LOCK_DB_PASSWORD"
