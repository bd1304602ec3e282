#!/usr/bin/env bash
# Create (or reuse) the project virtualenv in .venv and install TopoRank with its dev tools.
# torch is pinned by constraints.txt (2.13.0, CPU build on this kind of machine).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -c constraints.txt -e ".[dev]"
