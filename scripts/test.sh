#!/usr/bin/env bash
# Install and run the whole test suite (what .ci/run calls). Needs PostgreSQL on 127.0.0.1:5432
# (trust auth, database `test`) and Redis on 127.0.0.1:6379 for the integration tests, and installs
# Debian's chromium (apt, as root) for the browser tests when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! command -v chromium >/dev/null 2>&1; then  # the browser tests (tests/integration/test_docs_offline.py)
  echo "installing Debian's chromium for the browser tests" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
. .venv/bin/activate
exec python -m pytest "$@"
