# A stand-in for the official Airflow image (apache/airflow), which cannot be pulled on
# machines without Docker Hub: the BASE_IMAGE the tests give include/docker/airflow.Dockerfile
# to build the shipped stack's Airflow image, so that the shipped docker-compose.yaml runs
# unchanged (tests/stack/test_compose_networks.py). It keeps the official image's contract
# where the shipped files rely on it, and nothing more:
#   - Airflow (the local stack's image: Airflow 3.3.2 with the Celery, Postgres and FAB
#     extras and the Docker provider, in /opt/venv on PATH), AIRFLOW_VERSION set;
#   - the user airflow (uid 50000, gid 0), which may pip-install into that environment,
#     as the official image's user may install into its own;
#   - dumb-init as PID 1 in front of /entrypoint (include/docker/local/airflow-entrypoint.sh:
#     the database migration and admin user of airflow-init, `airflow` before a bare
#     subcommand), and curl for the health checks;
#   - no /opt/mlops-pack (the pack is installed by airflow.Dockerfile, as on the real base).
# Users build on the official image; this one is for the tests only.
ARG LOCAL_AIRFLOW_IMAGE=mlops-pack-local-airflow:latest
FROM ${LOCAL_AIRFLOW_IMAGE}
ARG AIRFLOW_VERSION
USER 0
RUN test -n "${AIRFLOW_VERSION}" \
 && apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dumb-init curl >/dev/null \
 && rm -rf /var/lib/apt/lists/* /opt/mlops-pack \
 && /opt/venv/bin/pip uninstall --quiet --yes airflow-mlops-pack \
 && chown -R 50000:0 /opt/venv
COPY include/docker/local/airflow-entrypoint.sh /entrypoint
ENV AIRFLOW_VERSION=${AIRFLOW_VERSION}
USER 50000:0
ENTRYPOINT ["/usr/bin/dumb-init", "--", "/entrypoint"]
CMD []
