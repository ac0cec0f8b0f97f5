#!/usr/bin/env bash
# Run once by the official Postgres image when its volume is new: one role and one
# database per consumer, each role the owner of its own database only, and no database
# open to PUBLIC. Airflow's metadata, the MLflow backend and the promotion lock (an
# advisory lock needs a connection, no tables) can then not read each other.
# MLOPS_PACK_DATABASES names the consumers this server holds (default: all three);
# docker-compose.yaml gives the lock a server of its own, which the step containers
# reach, so that they never reach Airflow's or MLflow's database.
set -euo pipefail
databases=${MLOPS_PACK_DATABASES:-airflow mlflow mlops_lock}
declare -A password_of=([airflow]=AIRFLOW_DB_PASSWORD [mlflow]=MLFLOW_DB_PASSWORD [mlops_lock]=LOCK_DB_PASSWORD)
for db in $databases; do
  var=${password_of[$db]:-}
  [ -n "$var" ] || { echo "init-databases: unknown database '$db' in MLOPS_PACK_DATABASES (airflow, mlflow, mlops_lock)" >&2; exit 1; }
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
for db in $databases; do
  var=${password_of[$db]}
  create "$db" "$db" "${!var}"
done
