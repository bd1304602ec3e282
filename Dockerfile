# syntax=docker/dockerfile:1
# TopoRank images, one multi-stage build (see docs/deploy.md):
#   --target api     FastAPI + migrations; the core install only: no torch, no CUDA.
#   --target flower  the api image plus Flower (Celery monitoring; not a project dependency).
#   --target worker  Celery worker with a CUDA build of torch, monai, dynamic-network-architectures.
# The CUDA runtime comes inside the torch wheels (nvidia-* packages); the host supplies only the
# NVIDIA driver, through the NVIDIA Container Toolkit. So both images start from python:slim.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
# Fixed uid/gid so a shared storage directory (NFS across machines) has one owner everywhere.
RUN groupadd --system --gid 10001 toporank \
    && useradd --system --uid 10001 --gid toporank --home-dir /home/toporank --create-home \
       --shell /usr/sbin/nologin toporank \
    && python -m venv /opt/venv \
    && mkdir -p /data/storage \
    && chown -R toporank:toporank /data
WORKDIR /opt/toporank

# ---------------------------------------------------------------------------------------------
# Core install (API dependencies, no torch). Editable on purpose: models_registry.migrate finds
# alembic.ini and alembic/ next to the packages (REPO_ROOT), so the source tree stays in place.
FROM base AS api-build
COPY . /opt/toporank
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install -c constraints.txt -e . \
    && python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is not None)"

# ---------------------------------------------------------------------------------------------
FROM base AS api
COPY --from=api-build /opt/venv /opt/venv
COPY --from=api-build /opt/toporank /opt/toporank
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/opt/toporank/docker/healthcheck.py", "api"]
ENTRYPOINT ["toporank"]
CMD ["api"]

# ---------------------------------------------------------------------------------------------
# Flower reads the broker from the project's Celery app (worker.celery_app, torch-free because the
# API imports it to enqueue). Basic auth comes from FLOWER_BASIC_AUTH at run time.
FROM api-build AS flower-build
ARG FLOWER_VERSION=2.2.0
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install -c constraints.txt "flower==${FLOWER_VERSION}"

FROM base AS flower
COPY --from=flower-build /opt/venv /opt/venv
COPY --from=flower-build /opt/toporank /opt/toporank
USER 10001:10001
EXPOSE 5555
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "/opt/toporank/docker/healthcheck.py", "flower"]
ENTRYPOINT ["celery", "-A", "worker.celery_app:app", "flower"]
CMD ["--port=5555"]

# ---------------------------------------------------------------------------------------------
# Worker: torch from the PyTorch CUDA index first (its own cached layer, independent of the
# source), with the torchvision built for the same torch and CUDA, so that timm (pulled in by
# dynamic-network-architectures, needed by its Primus ViT) imports cleanly. TORCH_CUDA picks the
# CUDA line: cu126 (default: NVIDIA driver >= 525 via CUDA minor-version compatibility; Maxwell to
# Hopper) or cu130 (driver >= 580; adds Blackwell). torch 2.13 ships no cu128 wheels.
FROM base AS worker-build
ARG TORCH_VERSION=2.13.0
ARG TORCHVISION_VERSION=0.28.0
ARG TORCH_CUDA=cu126
COPY constraints.txt /opt/toporank/constraints.txt
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install -c constraints.txt \
        --extra-index-url "https://download.pytorch.org/whl/${TORCH_CUDA}" \
        "torch==${TORCH_VERSION}+${TORCH_CUDA}" "torchvision==${TORCHVISION_VERSION}+${TORCH_CUDA}"
COPY . /opt/toporank
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install -c constraints.txt -e ".[worker]" \
    && pip check \
    && python -c "import torch, torchvision, timm, monai, dynamic_network_architectures.architectures.unet, dynamic_network_architectures.architectures.primus; assert torch.version.cuda, 'CPU-only torch in the worker image'; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

# ---------------------------------------------------------------------------------------------
FROM base AS worker
# Which driver libraries the NVIDIA Container Toolkit mounts; the GPU itself is chosen by the
# compose file (deploy.resources.reservations.devices, one GPU per worker service).
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility
COPY --from=worker-build /opt/venv /opt/venv
COPY --from=worker-build /opt/toporank /opt/toporank
USER 10001:10001
HEALTHCHECK --interval=60s --timeout=20s --start-period=120s --retries=3 \
    CMD ["python", "/opt/toporank/docker/healthcheck.py", "worker"]
ENTRYPOINT ["toporank"]
CMD ["worker"]
