# Prometheus and its Pushgateway from Debian's packages on the local base
# (docker-compose.local.yaml runs both from this image). `wget` is BusyBox's, as in the
# official prom/* images, whose health checks in docker-compose.yaml read its messages;
# /prometheus and /pushgateway are nobody's, as there.
ARG BASE_IMAGE=mlops-pack-base:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus prometheus-pushgateway busybox >/dev/null \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s /bin/busybox /usr/local/bin/wget \
 && mkdir -p /prometheus /pushgateway && chown nobody:nogroup /prometheus /pushgateway
USER nobody
ENTRYPOINT ["/usr/bin/prometheus"]
