"""Counts of the knowledge base."""

from __future__ import annotations

from service.api.deps import KB, ReadKey
from service.api.routes._common import ERROR_RESPONSES, api_router
from service.api.schemas import KbStats

router = api_router(prefix="/v1", tags=["knowledge base"])


@router.get("/stats", operation_id="kb_stats", response_model=KbStats, responses=ERROR_RESPONSES)
def kb_stats(kb: KB, _key: ReadKey) -> KbStats:
    """Runs by source, task type, method, model family and status; dataset and model counts; feature coverage."""
    stats = kb.stats()
    stats.pop("path", None)
    return KbStats.model_validate(stats)
