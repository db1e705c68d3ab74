"""The interactive API documentation (Swagger UI at ``/docs``, ReDoc at ``/redoc``), served without any CDN.

The JavaScript, CSS and favicon come from the ``fastapi-offline`` package (which ships the Swagger UI and ReDoc
distributions) and are served by the app itself under :data:`STATIC_PREFIX`, so the pages work on a machine without
internet. Swagger UI's online validator and ReDoc's Google Fonts are switched off for the same reason.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

#: Where the documentation assets are served.
STATIC_PREFIX = "/docs-assets"
#: The asset files, by role.
ASSETS = {"swagger_js": "swagger-ui-bundle.js", "swagger_css": "swagger-ui.css", "redoc_js": "redoc.standalone.js",
          "favicon": "favicon.png"}


def asset_directory() -> str:
    """The installed directory of the Swagger UI and ReDoc files."""
    return str(files("fastapi_offline").joinpath("static"))


def install_docs(app: FastAPI, *, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Serve ``docs_url`` and ``redoc_url`` (and Swagger UI's OAuth2 redirect) from local assets. The app must be
    built with ``docs_url=None, redoc_url=None``."""
    app.mount(STATIC_PREFIX, StaticFiles(directory=asset_directory()), name="docs-assets")
    redirect_url = app.swagger_ui_oauth2_redirect_url or f"{docs_url}/oauth2-redirect"

    def asset(request: Request, role: str) -> str:
        return f"{request.scope.get('root_path', '')}{STATIC_PREFIX}/{ASSETS[role]}"

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}{redirect_url}", swagger_js_url=asset(request, "swagger_js"),
            swagger_css_url=asset(request, "swagger_css"), swagger_favicon_url=asset(request, "favicon"),
            swagger_ui_parameters={**(app.swagger_ui_parameters or {}), "validatorUrl": None})

    @app.get(redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(redoc_url, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(openapi_url=f"{request.scope.get('root_path', '')}{app.openapi_url}",
                              title=f"{app.title} - ReDoc", redoc_js_url=asset(request, "redoc_js"),
                              redoc_favicon_url=asset(request, "favicon"), with_google_fonts=False)
