#!/usr/bin/env bash
# Command-line tools some tests drive for real: Debian's docker-compose (the compose file
# test) and prometheus (the dashboard query test). Installed only in CI (CI=true) or when
# asked (MLOPS_PACK_INSTALL_TOOLS=1); otherwise a missing tool is named, and the tests
# that need it fail saying how to get it. Idempotent.
set -euo pipefail
missing=()
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v prometheus >/dev/null || missing+=(prometheus)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "${CI:-}" != "true" ] && [ "${MLOPS_PACK_INSTALL_TOOLS:-}" != "1" ]; then
  echo "missing for some tests: ${missing[*]} (apt-get install ${missing[*]}, or MLOPS_PACK_INSTALL_TOOLS=1 make test)" >&2
  exit 0
fi
apt-get update -qq
# The package's service is not started here: the tests run their own instance.
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
