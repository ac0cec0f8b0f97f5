# Airflow with the pack installed, on the local Debian base, for docker-compose.local.yaml
# where the official Airflow image cannot be pulled. It follows that image's contract
# where the stack relies on it: Airflow in a venv on PATH, AIRFLOW_HOME=/opt/airflow, the
# user airflow (uid 50000, gid 0), `airflow` as the entrypoint. Airflow and its Celery,
# Postgres and FAB extras come from PyPI at the versions constraints.txt pins (Airflow
# 3.3.2 there, the shipped image's base version); the pack with its `airflow` extra only,
# as include/docker/airflow.Dockerfile installs it (the steps run in the task image).
#
# BASE_IMAGE and include/docker/ca-bundle.crt as for the task image.
ARG BASE_IMAGE=mlops-pack-base:bookworm
FROM ${BASE_IMAGE}

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    AIRFLOW_HOME=/opt/airflow

COPY include/docker/ca-bundle.crt /etc/mlops-pack/extra-ca.crt
COPY constraints.txt /opt/mlops-pack/constraints.txt
# Airflow first, in its own layer: a change to the pack rebuilds in seconds. Celery 5.7
# removed what the Celery provider (3.26) imports from celery.backends.database: `<5.7`
# until a provider release follows.
RUN python3 -m venv /opt/venv \
 && if [ -s /etc/mlops-pack/extra-ca.crt ]; then export PIP_CERT=/etc/mlops-pack/extra-ca.crt; fi \
 && airflow_version=$(sed -n 's/^apache-airflow==//p' /opt/mlops-pack/constraints.txt) \
 && /opt/venv/bin/pip install --quiet -c /opt/mlops-pack/constraints.txt \
      "apache-airflow[celery,postgres,fab]==${airflow_version}" apache-airflow-providers-docker \
      "celery<5.7" \
      "setuptools>=77" wheel \
 && rm -rf /root/.cache

COPY pyproject.toml README.md /opt/mlops-pack/
COPY plugins/mlops_pack /opt/mlops-pack/plugins/mlops_pack
# The pack's own dependencies that Airflow does not bring come from the index too, so
# this layer needs the CA bundle as well.
RUN if [ -s /etc/mlops-pack/extra-ca.crt ]; then export PIP_CERT=/etc/mlops-pack/extra-ca.crt; fi \
 && /opt/venv/bin/pip install --quiet --no-build-isolation -c /opt/mlops-pack/constraints.txt "/opt/mlops-pack[airflow]" \
 && rm -rf /opt/mlops-pack/plugins /opt/mlops-pack/build /root/.cache \
 && useradd --uid 50000 --gid 0 --home-dir /opt/airflow --no-create-home airflow \
 && mkdir -p /opt/airflow/dags /opt/airflow/logs /opt/airflow/mlops \
 && chown -R 50000:0 /opt/airflow && chmod -R g+rwX /opt/airflow

USER 50000:0
WORKDIR /opt/airflow
ENTRYPOINT ["airflow"]
