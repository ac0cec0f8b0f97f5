#!/usr/bin/env bash
# PostgreSQL 15 for the cross-host lock tests (a throwaway cluster per test module, run
# by the tests themselves). Installs only in CI (CI=true) or when asked
# (MLOPS_PACK_INSTALL_POSTGRES=1), and only when initdb is missing. Idempotent.
set -euo pipefail
if command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then exit 0; fi
if [ "${CI:-}" != "true" ] && [ "${MLOPS_PACK_INSTALL_POSTGRES:-}" != "1" ]; then
  echo "PostgreSQL is not installed (the cross-host lock tests need it): apt-get install postgresql, or set MLOPS_PACK_INSTALL_POSTGRES=1" >&2
  exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
