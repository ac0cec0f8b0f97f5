#!/usr/bin/env bash
# Make sure a Docker engine answers. Never touches an engine that already runs; installs
# and starts one only in CI (CI=true) or when asked (MLOPS_PACK_START_DOCKER=1).
set -euo pipefail
if docker info >/dev/null 2>&1; then exit 0; fi
if [ "${CI:-}" != "true" ] && [ "${MLOPS_PACK_START_DOCKER:-}" != "1" ]; then
  echo "no Docker engine answers; start yours, or set MLOPS_PACK_START_DOCKER=1 to install and start one" >&2
  exit 1
fi
if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null
fi
# No bridge: steps use network_mode=none, servers and builds use the host network.
nohup dockerd --bridge=none --iptables=false --ip-masq=false >/tmp/mlops-pack-dockerd.log 2>&1 &
for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && exit 0; sleep 1; done
echo "dockerd did not start; see /tmp/mlops-pack-dockerd.log" >&2
exit 1
