#!/usr/bin/env bash
# Build the task image, tagged by the content of its inputs; print the tag.
#
# Rebuilds only when the Dockerfile, constraints, pyproject or library change. If the
# public base image cannot be pulled (no registry reachable), builds a local Debian base
# with debootstrap from the machine's own apt mirror (needs root and debootstrap).
#
# Options (environment):
#   BASE_IMAGE       base to build on (default python:3.11-slim, falling back as above)
#   EXTRA_CA_BUNDLE  CA bundle for pip behind a TLS-intercepting proxy (copied into the build)
#   IMAGE_NAME       repository name (default mlops-pack-task)
set -euo pipefail
cd "$(dirname "$0")/../.."
IMAGE_NAME=${IMAGE_NAME:-mlops-pack-task}
LOCAL_BASE=mlops-pack-base:bookworm

content_hash() {
  { cat include/docker/task.Dockerfile constraints.txt pyproject.toml
    find plugins/mlops_pack -name '*.py' -o -name '*.json' | LC_ALL=C sort | xargs cat
  } | sha256sum | cut -c1-12
}

resolve_base() {
  if [ -n "${BASE_IMAGE:-}" ]; then echo "$BASE_IMAGE"; return; fi
  if docker image inspect python:3.11-slim >/dev/null 2>&1 || docker pull -q python:3.11-slim >/dev/null 2>&1; then
    echo python:3.11-slim; return
  fi
  if ! docker image inspect "$LOCAL_BASE" >/dev/null 2>&1; then
    echo "no registry reachable: bootstrapping $LOCAL_BASE with debootstrap" >&2
    mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -n "$mirror" ] || { echo "cannot find an apt mirror for debootstrap" >&2; exit 1; }
    rootfs=$(mktemp -d)
    trap 'rm -rf "$rootfs"' RETURN
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" "$mirror" >&2
    tar -C "$rootfs" -c . | docker import - "$LOCAL_BASE" >/dev/null
  fi
  echo "$LOCAL_BASE"
}

# Written even when the image exists: the other images built from this folder use it.
ca=include/docker/ca-bundle.crt
# Without an explicit bundle, reuse the one the host's pip is configured with, if any.
if [ -z "${EXTRA_CA_BUNDLE:-}" ]; then
  EXTRA_CA_BUNDLE=${PIP_CERT:-$(python3 -m pip config list 2>/dev/null | sed -n "s/^global.cert='\(.*\)'$/\1/p" | head -1)}
fi
if [ -n "${EXTRA_CA_BUNDLE:-}" ]; then cp "$EXTRA_CA_BUNDLE" "$ca"; else : > "$ca"; fi
tag="$IMAGE_NAME:$(content_hash)"
if docker image inspect "$tag" >/dev/null 2>&1; then
  docker tag "$tag" "$IMAGE_NAME:latest"
  echo "$tag"
  exit 0
fi
base=$(resolve_base)
docker build --network host -q -f include/docker/task.Dockerfile \
  --build-arg BASE_IMAGE="$base" -t "$tag" -t "$IMAGE_NAME:latest" . >&2
echo "$tag"
