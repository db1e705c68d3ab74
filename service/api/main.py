"""The HTTP API's app factory.

``create_app(settings)`` builds the app: the routers (adding one is one line in :data:`ROUTERS`), the error table,
the request gate (authentication before any body is read, body size and pause limits) and the metrics middleware,
and a lifespan that opens the knowledge base and runs the :data:`STATE_LOADERS` (where later parts, e.g. the
meta-learner's artifact, load their state into ``app.state``).

Run it with ``metaml serve``, or ``uvicorn service.api.main:create_app --factory``.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter, FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute

from collector.errors import CollectorError
from collector.store import KnowledgeBase
from service.api.docs import install_docs
from service.api.errors import install_error_handlers
from service.api.experience import load_experience
from service.api.limits import RequestGate
from service.api.metrics import Metrics, MetricsMiddleware
from service.api.openapi import build_openapi
from service.api.predictor import load_predictor
from service.api.routes import datasets, health, models, predict, runs, sql, stats
from service.settings import Settings, get_settings
from service.ui import router as ui_router
from service.writer import GroupWriter

log = logging.getLogger("metaml.service")

#: The routers of the API, in the order they appear in the OpenAPI document.
ROUTERS: list[APIRouter] = [
    runs.router,
    datasets.router,
    sql.router,
    stats.router,
    predict.router,
    models.router,
    health.router,
    ui_router,
]

#: Called in the lifespan, after the knowledge base is opened, as ``loader(app, settings)``: load state once per
#: process into ``app.state`` (e.g. a meta-learner artifact into ``app.state.extensions["predictor"]``).
STATE_LOADERS: list[Callable[[FastAPI, Settings], None]] = [load_predictor, load_experience]

#: The cyclic garbage collector's thresholds while the app serves (CPython's default: 700, 10, 10). A request with
#: 1,000 candidate objects allocates some 20,000 container objects: at the default that ran about 25 young and 0.2
#: full collections per request, the full ones over the loaded model and knowledge snapshot (30 of 92 ms in one
#: process); at these, one young collection and none older. Cycles are still collected, in larger batches.
GC_THRESHOLDS = (10_000, 50, 50)

#: Seconds the startup waits for the knowledge base's lock to create a missing file.
STARTUP_LOCK_TIMEOUT_S = 5.0


def _operation_id(route: APIRoute) -> str:
    """Stable operation ids: the route's explicit ``operation_id`` or else its function name."""
    return route.name


def _version() -> str:
    try:
        return version("metaml")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.0.0"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open (create when missing) the knowledge base, start the group writer, run the state loaders, collect garbage
    less often (:data:`GC_THRESHOLDS`); on shutdown, store what is queued and stop the writer."""
    settings: Settings = app.state.settings
    kb: KnowledgeBase = app.state.kb
    try:
        if not await run_in_threadpool(kb.exists):
            await run_in_threadpool(KnowledgeBase(kb.location, lock_timeout=STARTUP_LOCK_TIMEOUT_S).create)
    except (CollectorError, OSError) as e:
        log.warning("knowledge base %s could not be created (%s); /readyz reports 503 until it can be read", kb, e)
    writer: GroupWriter = app.state.writer.start()
    for loader in STATE_LOADERS:
        await run_in_threadpool(loader, app, settings)
    thresholds = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        await run_in_threadpool(writer.close)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API for ``settings`` (default: :func:`get_settings`, i.e. the ``METAML_*`` environment)."""
    settings = settings or get_settings()
    app = FastAPI(
        title="metaml",
        version=_version(),
        summary="A knowledge base of fine-tuning runs, and the meta-learner that predicts new ones.",
        description="Upload runs, query them, describe datasets and run read-only SQL; predict candidate "
                    "configurations, recommend what to try first, decide evaluate or skip. Versioned under /v1. "
                    "Authenticate with `Authorization: Bearer <key>` or `X-API-Key: <key>` (`metaml keys create`).",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        generate_unique_id_function=_operation_id,
        separate_input_output_schemas=False,
    )
    app.state.settings = settings
    app.state.kb = KnowledgeBase(settings.kb, lock_timeout=settings.kb_lock_timeout_s)
    app.state.metrics = Metrics()
    app.state.writer = GroupWriter(app.state.kb, on_commit=app.state.metrics.count_commit)
    app.state.extensions = {}
    install_error_handlers(app, retry_after_s=settings.retry_after_s)
    for router in ROUTERS:
        app.include_router(router)
    install_docs(app)
    app.add_middleware(RequestGate, settings=settings, routes=[r for router in ROUTERS for r in router.routes])
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.openapi = partial(build_openapi, app)  # type: ignore[method-assign]
    return app
