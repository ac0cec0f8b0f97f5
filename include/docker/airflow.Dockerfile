# Airflow with the pack installed: the image of every Airflow service in
# docker-compose.yaml (api-server, scheduler, dag-processor, triggerer, workers).
#
#   docker-compose build            (or: docker build -f include/docker/airflow.Dockerfile .)
#
# BASE_IMAGE is the official Airflow image; it already carries the Celery, Postgres,
# Redis, FAB and Docker providers the stack uses. Only the Airflow world is installed
# here (the steps run in the task image), and Airflow is pinned to the base image's own
# version so that pip cannot move it. EXTRA_CA_BUNDLE as for the task image:
# include/docker/ca-bundle.crt (git-ignored) for a TLS-intercepting proxy.
ARG BASE_IMAGE=apache/airflow:3.3.2-python3.11
FROM ${BASE_IMAGE}

COPY --chown=airflow:0 include/docker/ca-bundle.crt /opt/mlops-pack/extra-ca.crt
COPY --chown=airflow:0 pyproject.toml README.md /opt/mlops-pack/
COPY --chown=airflow:0 plugins/mlops_pack /opt/mlops-pack/plugins/mlops_pack
# pip builds the pack in its source folder (egg-info beside the package), and the folders
# COPY creates on the way (plugins/) are root's whatever --chown says: the build runs on
# a copy the airflow user owns, removed afterwards.
RUN if [ -s /opt/mlops-pack/extra-ca.crt ]; then export PIP_CERT=/opt/mlops-pack/extra-ca.crt; fi \
 && src=$(mktemp -d) && cp -r /opt/mlops-pack/. "$src" \
 && pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" "$src[airflow]" \
 && rm -rf "$src"
