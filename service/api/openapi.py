"""The OpenAPI document: generated from the routes, plus the schemas of bodies the routes parse themselves.

Uploads and describe requests accept several content types (JSON, NDJSON, multipart), so their handlers read the
body themselves and declare it with ``openapi_extra``; the models those declarations refer to (``RunRecord``,
``DescribeRequest``) are added to ``components.schemas`` here, generated from the same pydantic classes.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from collector.schema import RunRecord
from service.api.schemas import DescribeRequest

#: Models referenced from ``openapi_extra`` request bodies.
BODY_MODELS: list[type[BaseModel]] = [RunRecord, DescribeRequest]


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document (computed once, then cached on the app)."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, summary=app.summary, description=app.description,
                         routes=app.routes, tags=app.openapi_tags, separate_input_output_schemas=False)
    _, defs = models_json_schema([(m, "validation") for m in BODY_MODELS],
                                 ref_template="#/components/schemas/{model}")
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, model_schema in defs.get("$defs", {}).items():
        components.setdefault(name, model_schema)
    app.openapi_schema = schema
    return schema
