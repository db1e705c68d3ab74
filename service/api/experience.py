"""The knowledge base as the prediction endpoints read it: one :class:`~metaml.serving.KnowledgeIndex` (snapshot of
dataset meta-features and supporting runs, reloaded in the background) and one
:class:`~metaml.serving.SampleFeatures` cache per process, as FastAPI dependencies."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Depends, FastAPI, Request

from collector.errors import CollectorError
from metaml.serving import KnowledgeIndex, SampleFeatures
from service.settings import Settings

log = logging.getLogger("metaml.service")


def load_experience(app: FastAPI, settings: Settings) -> None:
    """State loader: a :class:`KnowledgeIndex` in ``app.state.extensions["experience"]`` (first snapshot read now
    when the knowledge base can be read) and a :class:`SampleFeatures` cache in ``extensions["samples"]``."""
    index = KnowledgeIndex(settings.kb, refresh_s=settings.experience_refresh_s,
                           exclude_sources=settings.exclude_sources)
    app.state.extensions["experience"] = index
    app.state.extensions["samples"] = SampleFeatures()
    try:
        snapshot = index.load()
        log.info("knowledge-base snapshot: %d runs, %d datasets", snapshot.n_runs, len(snapshot.datasets))
    except CollectorError as e:
        log.warning("no knowledge-base snapshot yet (%s); it is read when the knowledge base can be", e)


async def get_experience(request: Request) -> KnowledgeIndex:
    ext = request.app.state.extensions
    if "experience" not in ext:
        settings = request.app.state.settings
        ext["experience"] = KnowledgeIndex(settings.kb, refresh_s=settings.experience_refresh_s,
                                           exclude_sources=settings.exclude_sources)
    return ext["experience"]


async def get_samples(request: Request) -> SampleFeatures:
    return request.app.state.extensions.setdefault("samples", SampleFeatures())


Experience = Annotated[KnowledgeIndex, Depends(get_experience)]
Samples = Annotated[SampleFeatures, Depends(get_samples)]
