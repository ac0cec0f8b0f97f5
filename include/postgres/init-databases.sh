#!/usr/bin/env bash
# Run once by the official Postgres image when its volume is new: one role and one
# database per consumer, no database open to PUBLIC (the maintenance ones included).
# Airflow's and MLflow's roles own their databases; the promotion lock's may only
# connect to its own (an advisory lock needs a connection, no tables). None can read
# another's.
# MLOPS_PACK_DATABASES names the consumers this server holds (default: all three);
# docker-compose.yaml gives the lock a server of its own, which the step containers
# reach, so that they never reach Airflow's or MLflow's database. The lock's role gets
# CONNECT only (an advisory lock needs no more; it cannot create tables), and with
# MLOPS_PACK_SUPERUSER_OVER_TCP=reject the superuser cannot sign in over the network
# at all (the lock's server: only the local socket, inside its container).
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
connect_only() {  # role database password
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v role="$1" -v db="$2" -v password="$3" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'password';
CREATE DATABASE :"db";
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"db" TO :"role";
SQL
}
for db in $databases; do
  var=${password_of[$db]}
  if [ "$db" = mlops_lock ]; then
    connect_only "$db" "$db" "${!var}"
  else
    create "$db" "$db" "${!var}"
  fi
done
# The maintenance databases are open to PUBLIC by default: only the superuser needs them.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<'SQL'
REVOKE CONNECT ON DATABASE postgres FROM PUBLIC;
REVOKE CONNECT ON DATABASE template1 FROM PUBLIC;
SQL
if [ "${MLOPS_PACK_SUPERUSER_OVER_TCP:-}" = reject ]; then
  # pg_hba.conf is read top down: this line goes before the image's password rules.
  hba="$PGDATA/pg_hba.conf"
  { printf 'host all %s all reject\n' "$POSTGRES_USER"; cat "$hba"; } > "$hba.new"
  mv "$hba.new" "$hba"
fi
