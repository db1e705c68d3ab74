"""The meta-model's registered versions, and promotion with a hot swap of the served model."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Path
from fastapi.responses import JSONResponse

from service.api._json import jsonable
from service.api.deps import ReadKey, SettingsDep, require
from service.api.predictor import Holder, compile_later, load_registered, tracking_uri
from service.api.routes._common import ERROR_RESPONSES, api_router
from service.api.schemas import ErrorBody, ModelList, PromoteResult
from service.errors import NotFound
from service.keys import ApiKey

router = api_router(prefix="/v1/models", tags=["models"])

AdminKey = Annotated[ApiKey, Depends(require("admin"))]
_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    503: {"model": ErrorBody, "description": "The model registry cannot be read (`model_registry_unavailable`)."},
}


@router.get("", operation_id="list_models", response_model=ModelList, responses=_RESPONSES)
def list_models(holder: Holder, settings: SettingsDep, _key: ReadKey) -> JSONResponse:
    """The registered versions of the meta-model (aliases, creation time, knowledge-base snapshot, key evaluation
    metrics), and the one this server process serves."""
    from metaml._tracking import REGISTERED_MODEL, list_versions

    loaded = holder.current
    versions = list_versions(tracking_uri=tracking_uri(settings))
    body = {"registered_name": REGISTERED_MODEL, "loaded": loaded.describe() if loaded else None,
            "versions": [{"version": v.version, "run_id": v.run_id, "created_at": v.created_at,
                          "aliases": list(v.aliases), "status": v.status, "kb_snapshot": v.kb_snapshot,
                          "metrics": v.key_metrics(),
                          "loaded": loaded is not None and loaded.source == "registry" and loaded.version == v.version}
                         for v in versions]}
    return JSONResponse(jsonable(body))


@router.post("/{version}/promote", operation_id="promote_model", response_model=PromoteResult,
             responses={404: {"model": ErrorBody, "description": "No such registered version."},
                        500: {"model": ErrorBody, "description": "The version's artifact cannot be loaded."},
                        **_RESPONSES})
def promote_model(version: Annotated[int, Path(ge=1, le=2**31 - 1, description="A registered version.")],
                  holder: Holder, settings: SettingsDep, _key: AdminKey) -> JSONResponse:
    """Promote a version to `production` and serve it from now on, without downtime (needs the `admin` scope).

    The version is loaded and checked completely first (nothing changes when it cannot be); then the registry's
    `production` alias moves to it and this process swaps its served model in one step: requests in flight finish on
    the model they started with. Other server processes (`--workers`) load the new production version when they
    restart, or when this endpoint reaches them.
    """
    from metaml._tracking import list_versions, promote

    uri = tracking_uri(settings)
    with holder.promoting:
        if version not in {v.version for v in list_versions(tracking_uri=uri)}:
            raise NotFound(f"no version {version} of the meta-model is registered; see GET /v1/models",
                           details={"version": version})
        loaded = load_registered(settings, version=version)
        assert loaded is not None
        info = promote(version, tracking_uri=uri)
        previous = holder.swap(loaded)
    compile_later(holder, loaded, settings)
    return JSONResponse(jsonable({"version": info.version, "aliases": list(info.aliases), "loaded": loaded.describe(),
                                  "previous": previous.describe() if previous else None}))
