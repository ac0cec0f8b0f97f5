# A local stand-in for tecnativa/docker-socket-proxy:v0.3.0, the Docker API proxy
# docker-compose.yaml runs as `docker-proxy`, for the tests on an engine that cannot pull
# public images (DOCKER_PROXY_IMAGE=mlops-pack-local-docker-proxy:latest). Debian's
# HAProxy with a configuration of its own (docker-proxy.haproxy.cfg) that honours the
# same environment contract: a variable per API section (CONTAINERS, IMAGES, EXEC, BUILD,
# VOLUMES, NETWORKS, INFO, SERVICES, TASKS, SECRETS, CONFIGS, SWARM, NODES, PLUGINS,
# SYSTEM, AUTH, DISTRIBUTION, ...; 1 forwards it, 0 answers 403), POST, the ALLOW_START,
# ALLOW_STOP and ALLOW_RESTARTS exceptions and DISABLE_IPV6, on port 2375, in front of
# /var/run/docker.sock, with BusyBox's `wget` for the shipped health check.
#
# It is not a replacement to ship: users run the official image, which this one only
# imitates for the local tests (tests/stack/test_docker_proxy.py checks it).
#
# Root, as in the official image (the socket is root's, mode 0660), and it keeps working
# with the shipped `cap_drop: [ALL]` and `no-new-privileges`: an unprivileged port, no
# chroot, no user switch, no pid file. Its file system is only read, so `read_only: true`
# works too.
ARG BASE_IMAGE=mlops-pack-base:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends haproxy busybox >/dev/null \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s /bin/busybox /usr/local/bin/wget
COPY include/docker/local/docker-proxy.haproxy.cfg /etc/haproxy/haproxy.cfg
RUN haproxy -c -q -f /etc/haproxy/haproxy.cfg
EXPOSE 2375
USER root
# -W -db: a master process in the foreground, as the official image runs it. Without the
# master, HAProxy as PID 1 ignores SIGTERM (it has no handler for it) and `docker stop`
# waits for its SIGKILL; the master hands SIGTERM on to its worker and exits 0.
ENTRYPOINT ["haproxy", "-W", "-db", "-f", "/etc/haproxy/haproxy.cfg"]
