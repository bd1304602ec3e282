#!/usr/bin/env bash
# Install and run the whole test suite (what .ci/run calls). Needs PostgreSQL on 127.0.0.1:5432
# (trust auth, database `test`) and Redis on 127.0.0.1:6379 for the integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
exec python -m pytest "$@"
