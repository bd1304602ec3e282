#!/usr/bin/env bash
# Install and run the demo: builds the demo zoo and pilot set, starts the embedded service
# (SQLite + filesystem broker + one worker) and ranks the zoo through the HTTP API.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
exec toporank demo "$@"
