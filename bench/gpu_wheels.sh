#!/usr/bin/env bash
# Fetch, HERE (where the package index is reachable), the wheels that bench/gpu_checks.sh needs on the
# device machine and its CUDA image lacks: the service's own stack (API, Celery, registry drivers), the
# NIfTI reader and the model libraries. Versions are this checkout's .venv's, for CPython 3.12 on
# x86_64 Linux. They land in .whl/ (kept out of git through .git/info/exclude); name `.whl` in the
# device call's `carry`. The image already has torch, numpy, scipy, scikit-learn, httpx, psutil, rich,
# matplotlib, prometheus-client, pandas, timm, einops, requests (see the tool library's KINDS.md).
#
#   bash bench/gpu_wheels.sh            # then: run(command="bash bench/gpu_checks.sh", carry=[".whl"])
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PACKAGES=(
  sqlalchemy alembic mako pydantic pydantic-core pydantic-settings annotated-types typing-inspection python-dotenv
  fastapi fastapi-offline starlette uvicorn httptools python-multipart
  celery kombu billiard vine amqp click-didyoumean click-plugins click-repl prompt-toolkit wcwidth tzlocal
  python-dateutil redis psycopg psycopg-binary nibabel importlib-resources monai dynamic-network-architectures nilearn
)
pins=()
for name in "${PACKAGES[@]}"; do
  version=$("$PY" -m pip show "$name" 2>/dev/null | awk '/^Version:/ {print $2}')
  [ -n "$version" ] || { echo "gpu_wheels: $name is not installed in $PY's environment" >&2; exit 1; }
  pins+=("$name==$version")
done
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.whl/' >> .git/info/exclude; }
mkdir -p .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${pins[@]}"
ls .whl | wc -l | xargs echo "gpu_wheels: wheels in .whl:"
du -sh .whl
