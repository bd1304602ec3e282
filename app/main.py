"""The FastAPI application factory (`uvicorn app.main:create_app --factory`)."""

from __future__ import annotations

import ctypes
import logging
import os
import sys

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from fastapi.routing import APIRoute

import toporank
from app.context import AppContext, Dispatcher
from app.errors import install_error_handlers
from app.metrics import Metrics, MetricsMiddleware
from app.routes import calibrations, confirmations, health, models, pilot_sets, rankings
from app.storage import Storage
from models_registry.db import make_engine, make_sessionmaker
from toporank.settings import Settings, get_settings

DESCRIPTION = """Training-free ranking of 3D medical self-supervised encoders for a segmentation task.

Authenticate with the `X-API-Key` header (`toporank create-tenant NAME` prints a key). Objects of
another tenant answer 404. Errors are JSON `{code, detail, errors?}` with a stable `code`.
Flow: upload a pilot set, register models, start a ranking, poll it, read `/v1/rank`.
"""


def operation_id(route: APIRoute) -> str:
    """The OpenAPI operationId: the handler's name (`create_ranking`, `get_rank`), stable and clean
    for generated clients, instead of FastAPI's `create_ranking_v1_rankings_post`."""
    return route.name


DOCS_ASSETS = "/docs-assets"


MALLOC_ARENAS = 2
"""glibc malloc arenas the API process may use (its default is 8 per core)."""
_M_ARENA_MAX = -8  # mallopt parameter number, from glibc's malloc.h


def limit_malloc_arenas(n: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas, unless MALLOC_ARENA_MAX already set them; True when capped.

    The API's thread pool (40 threads) otherwise spreads allocations over up to 8 arenas per core,
    and their fragmentation grew the process by ~70 MB in 10 minutes of mixed load without levelling
    off; with 2 arenas RSS stayed within 221-230 MB after the first 30 s (bench/api_load.py --mixed,
    results/api_load/mixed-600s-*.json). A no-op off glibc."""
    if os.environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_ARENA_MAX, int(n)))
    except (OSError, AttributeError):
        return False


def create_app(settings: Settings | None = None, dispatcher: Dispatcher | None = None) -> FastAPI:
    """Build the API; `dispatcher` defaults to Celery (tests pass a recorder)."""
    settings = settings or get_settings()
    limit_malloc_arenas()
    logging.basicConfig(level=settings.log_level.upper())
    # as many connections as threads that can hold one at once (anyio's threadpool: 40), so that
    # no request waits for a connection while a thread sits idle
    engine = make_engine(settings.sqlalchemy_url, pool_size=20, max_overflow=20)
    sessions = make_sessionmaker(engine)
    if dispatcher is None:
        from app.dispatch import CeleryDispatcher

        dispatcher = CeleryDispatcher(settings)
    metrics = Metrics(sessions)
    storage = Storage(settings.storage_root)
    storage.sweep_orphan_uploads()  # uploads of a process that died mid-request
    # Swagger UI and ReDoc from the installed package's assets, not from CDNs: a closed hospital
    # network would get a blank page otherwise (tests/app/test_docs_offline.py renders both offline).
    app = FastAPIOffline(
        title="TopoRank", version=toporank.__version__, description=DESCRIPTION, generate_unique_id_function=operation_id,
        static_url=DOCS_ASSETS,
    )
    app.state.ctx = AppContext(
        settings=settings,
        engine=engine,
        sessions=sessions,
        storage=storage,
        dispatcher=dispatcher,
        metrics=metrics,
    )
    install_error_handlers(app)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    for module in (health, models, pilot_sets, rankings, confirmations, calibrations):
        app.include_router(module.router)
    return app
