#!/usr/bin/env bash
# Build every image docker-compose.local.yaml runs, without any public registry: the
# task image (and with it the local Debian base, if no public base can be pulled), then
# Postgres, Redis and Prometheus from Debian packages, MLflow and Airflow (with the pack)
# from PyPI on that base. Then what the tests need to run the shipped docker-compose.yaml
# itself: a Docker socket proxy from Debian's HAProxy, a stand-in for the official Airflow
# image, and on it the shipped include/docker/airflow.Dockerfile (mlops-pack-airflow:local-base).
# Docker's layer cache makes a second run take seconds.
set -euo pipefail
cd "$(dirname "$0")/../.."
include/docker/build_task_image.sh >/dev/null
base=${BASE_IMAGE:-mlops-pack-base:bookworm}
if ! docker image inspect "$base" >/dev/null 2>&1; then
  base=python:3.11-slim  # build_task_image.sh found the public base
fi
build() {  # tag dockerfile [build arguments, NAME=value]
  local tag=$1 dockerfile=$2 arg args=()
  shift 2
  for arg in "BASE_IMAGE=$base" "$@"; do args+=(--build-arg "$arg"); done
  docker build --network host -q -f "$dockerfile" "${args[@]}" -t "$tag" . >/dev/null
  echo "$tag"
}
build mlops-pack-local-postgres:latest include/docker/local/postgres.Dockerfile
build mlops-pack-local-redis:latest include/docker/local/redis.Dockerfile
build mlops-pack-local-prometheus:latest include/docker/local/prometheus.Dockerfile
build mlops-pack-mlflow:latest include/docker/mlflow.Dockerfile
build mlops-pack-local-airflow:latest include/docker/local/airflow.Dockerfile
build mlops-pack-local-docker-proxy:latest include/docker/local/docker-proxy.Dockerfile
airflow_version=$(sed -n 's/^apache-airflow==//p' constraints.txt)
build mlops-pack-local-official-airflow:latest include/docker/local/official-airflow.Dockerfile \
  AIRFLOW_VERSION="$airflow_version"
# The shipped Dockerfile, on that stand-in (its BASE_IMAGE is the official image's place).
docker build --network host -q -f include/docker/airflow.Dockerfile \
  --build-arg BASE_IMAGE=mlops-pack-local-official-airflow:latest -t mlops-pack-airflow:local-base . >/dev/null
echo mlops-pack-airflow:local-base
