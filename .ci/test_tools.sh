#!/usr/bin/env bash
# Programs some tests drive for real, from Debian's packages: docker-compose (the compose
# file test), prometheus (the dashboard query test), chromium (the browser test, driven
# by Playwright) and PostgreSQL (the cross-host lock tests run throwaway clusters).
# Installed only in CI (CI=true) or when asked (MLOPS_PACK_INSTALL_TOOLS=1); otherwise
# what is missing is named and the tests that need it fail saying how to get it.
# Idempotent: installs only what is missing; starts no service.
set -euo pipefail
missing=()
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v prometheus >/dev/null || missing+=(prometheus)
command -v chromium >/dev/null || missing+=(chromium)
if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "${CI:-}" != "true" ] && [ "${MLOPS_PACK_INSTALL_TOOLS:-}" != "1" ]; then
  echo "missing for some tests: ${missing[*]} (apt-get install ${missing[*]}, or MLOPS_PACK_INSTALL_TOOLS=1 make test)" >&2
  exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
