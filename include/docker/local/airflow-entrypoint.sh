#!/usr/bin/env bash
# The part of the official Airflow image's /entrypoint that docker-compose.yaml relies on,
# for the stand-in image (include/docker/local/official-airflow.Dockerfile):
#   _AIRFLOW_DB_MIGRATE=true       migrate the metadata database first
#   _AIRFLOW_WWW_USER_CREATE=true  then create the admin user (_AIRFLOW_WWW_USER_USERNAME,
#                                  _AIRFLOW_WWW_USER_PASSWORD), keeping an existing one
#   bash ... / python ... / airflow ...   run as given; anything else is an airflow command
# The official script does more (waiting for the database, an arbitrary uid's home,
# connection checks); nothing in the shipped file needs it.
set -euo pipefail

if [[ "${_AIRFLOW_DB_MIGRATE:-false}" == "true" ]]; then
  airflow db migrate
fi
if [[ "${_AIRFLOW_WWW_USER_CREATE:-false}" == "true" ]]; then
  : "${_AIRFLOW_WWW_USER_PASSWORD:?the admin password}"
  user=${_AIRFLOW_WWW_USER_USERNAME:-admin}
  if ! airflow users list --output plain 2>/dev/null | awk '{print $2}' | grep -qx "$user"; then
    airflow users create --role Admin --username "$user" --firstname Airflow \
      --lastname Admin --email "$user@example.invalid" --password "$_AIRFLOW_WWW_USER_PASSWORD"
  fi
fi

case "${1:-}" in
  "") exec bash ;;
  bash | python | python3 | airflow) exec "$@" ;;
  *) exec airflow "$@" ;;
esac
