"""Liveness, readiness and Prometheus metrics (unversioned, for orchestrators and scrapers)."""

from __future__ import annotations

from contextlib import suppress

from fastapi import Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from collector.errors import CollectorError
from collector.store import KnowledgeBase
from service.api.deps import KB, MetricsDep
from service.api.metrics import CONTENT_TYPE_LATEST
from service.api.routes._common import api_router
from service.api.schemas import Health, Readiness

router = api_router(tags=["health"])

#: Seconds readiness and the metrics scrape wait for the knowledge base's lock.
PROBE_LOCK_TIMEOUT_S = 1.0


@router.get("/healthz", operation_id="healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up and answering."""
    return Health(status="ok")


@router.get("/readyz", operation_id="readyz", response_model=Readiness,
            responses={503: {"model": Readiness, "description": "The knowledge base is not reachable."}})
async def readyz(kb: KB, request: Request) -> Response:
    """The knowledge base can be opened and read (503 when it is missing, unreadable or held by a writer); `model`
    says whether a meta-model is loaded (it does not change readiness)."""
    holder = request.app.state.extensions.get("predictor")
    loaded = holder.current if holder is not None else None
    model = {"model": "loaded" if loaded else "absent", "model_version": loaded.version if loaded else None}
    probe = KnowledgeBase(kb.location, lock_timeout=PROBE_LOCK_TIMEOUT_S)
    try:
        await run_in_threadpool(probe.count)
    except CollectorError as e:
        reason = type(e).__name__
        return JSONResponse(Readiness(status="unavailable", reason=reason, **model).model_dump(), status_code=503,
                            headers={"Retry-After": "1"})
    return JSONResponse(Readiness(status="ready", **model).model_dump())


@router.get("/metrics", operation_id="metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format."}})
async def metrics(kb: KB, m: MetricsDep) -> Response:
    """Prometheus metrics: requests and latency per route and status, uploads by outcome, runs in the knowledge base."""
    probe = KnowledgeBase(kb.location, lock_timeout=PROBE_LOCK_TIMEOUT_S)
    with suppress(CollectorError):  # keep the last value; readiness reports the problem
        m.kb_runs.set(await run_in_threadpool(probe.count))
    return Response(m.exposition(), media_type=CONTENT_TYPE_LATEST)
