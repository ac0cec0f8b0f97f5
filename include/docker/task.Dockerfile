# The task image: the step world (pandas, scikit-learn, Great Expectations, skops, MLflow
# client) without Airflow. Every ML step runs in a container of this image.
#
#   include/docker/build_task_image.sh        builds it, tagged by content
#
# BASE_IMAGE defaults to the public Python image; on an air-gapped network the build
# script bootstraps a local Debian base instead. EXTRA_CA_BUNDLE is for networks with a
# TLS-intercepting proxy: put the bundle at include/docker/ca-bundle.crt (git-ignored).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    GX_ANALYTICS_ENABLED=false \
    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false

WORKDIR /opt/mlops-pack
COPY include/docker/ca-bundle.crt /etc/mlops-pack/extra-ca.crt
COPY constraints.txt pyproject.toml ./

# Dependencies first, in their own layer: a change to the pack's code then rebuilds in
# seconds instead of reinstalling scikit-learn, GX and MLflow. The venv makes both bases
# behave the same (python3 lives in different places).
RUN python3 -m venv /opt/venv \
 && if [ -s /etc/mlops-pack/extra-ca.crt ]; then export PIP_CERT=/etc/mlops-pack/extra-ca.crt; fi \
 && /opt/venv/bin/python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['steps']))" > /tmp/requirements.txt \
 && /opt/venv/bin/pip install --quiet -c constraints.txt -r /tmp/requirements.txt "setuptools>=77" wheel \
 && /opt/venv/bin/python -m compileall -q -j 0 /opt/venv/lib \
 && rm -rf /root/.cache /tmp/requirements.txt

# Matplotlib's font list (the reports' plots), built once here: the root file system is
# read-only at run time, so steps copy it into their tmpfs (steps/cache_seed.py, as for
# numba's cache below) instead of rebuilding it in every container.
ENV MPLCONFIGDIR=/tmp/matplotlib \
    MLOPS_PACK_MPL_CACHE_SEED=/opt/matplotlib-cache
RUN MPLCONFIGDIR=/opt/matplotlib-cache /opt/venv/bin/python -c "import matplotlib.font_manager" \
 && chmod -R a+rX /opt/matplotlib-cache

COPY README.md ./
COPY plugins/mlops_pack ./plugins/mlops_pack
RUN /opt/venv/bin/pip install --quiet --no-deps --no-build-isolation . \
 && /opt/venv/bin/python -m compileall -q -j 0 /opt/venv/lib/python3*/site-packages/mlops_pack \
 && rm -rf /opt/mlops-pack/plugins /opt/mlops-pack/build /root/.cache

# The bootstrap's compiled loop, compiled once here: numba caches it in a directory it
# can write, so steps copy this seed into their tmpfs on first use (steps/bootstrap_kernel.py)
# instead of compiling for seconds in every container. Compiled for a generic x86-64 CPU,
# so the cache holds on every worker host, not only on CPUs like the build host's
# (docs/benchmarks.md measures what that costs).
ENV NUMBA_CACHE_DIR=/tmp/numba-cache \
    MLOPS_PACK_NUMBA_CACHE_SEED=/opt/numba-cache \
    NUMBA_CPU_NAME=generic
RUN NUMBA_CACHE_DIR=/opt/numba-cache MLOPS_PACK_NUMBA_CACHE_SEED= /opt/venv/bin/python -m mlops_pack.steps.bootstrap_kernel \
 && chmod -R a+rX /opt/numba-cache

# The model server's folders, owned by nobody, so that a fresh volume mounted on /srv
# (docker-compose.yaml) starts writable for it.
RUN mkdir -p /srv/models /srv/state /srv/predictions && chown -R 65534:65534 /srv

# Steps run as nobody, on a read-only root filesystem; HOME points at the tmpfs.
ENV HOME=/tmp
USER 65534:65534
WORKDIR /work
ENTRYPOINT ["python", "-m", "mlops_pack"]
