# The MLflow tracking server of docker-compose.yaml: MLflow at the pack's pinned version
# with a Postgres driver (the public MLflow image has none) and its basic-auth app
# (Flask-WTF), run as nobody. include/mlflow/serve.py starts it behind authentication.
#
# BASE_IMAGE and include/docker/ca-bundle.crt as for the task image.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    HOME=/tmp
COPY include/docker/ca-bundle.crt /etc/mlops-pack/extra-ca.crt
COPY constraints.txt /opt/mlops-pack/constraints.txt
RUN python3 -m venv /opt/venv \
 && if [ -s /etc/mlops-pack/extra-ca.crt ]; then export PIP_CERT=/etc/mlops-pack/extra-ca.crt; fi \
 && /opt/venv/bin/pip install --quiet -c /opt/mlops-pack/constraints.txt "mlflow[auth]" "psycopg[binary]>=3.1" \
 && mkdir -p /mlartifacts && chown 65534:65534 /mlartifacts \
 && rm -rf /root/.cache
# After the install: a change to the start script does not reinstall MLflow.
COPY include/mlflow/serve.py /opt/mlops-pack/serve.py
USER 65534:65534
EXPOSE 5000
ENTRYPOINT ["python", "/opt/mlops-pack/serve.py"]
CMD ["--serve-artifacts"]
