"""The pages under ``/ui``: read-only pages rendered on the server from the knowledge base's public reads, and
interactive pages (upload, advisor, SQL) that are thin clients of the ``/v1`` API (``fetch`` from ``ui.js``).

Access follows the API's rules. The read pages (overview, datasets, a dataset, a run, the advisor's choices) are open
unless the server requires a key for reads; then a request without a valid ``read`` key gets a page that asks for one
(401/403), and the page's script fetches the same URL again with the key from the tab's ``sessionStorage``
(``X-API-Key``), the only place a key is kept. Upload and SQL pages hold no data: their forms send the key with each
API call, where ``/v1/runs`` asks for ``write`` and ``/v1/sql`` for ``analyst``.

Every asset is served from this package (``/ui/static/...``); the pages' Content-Security-Policy lets them load and
connect to this origin only.
"""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from collector.formats import available_formats
from collector.schema import DatasetMeta, canonical_dataset
from collector.store import KnowledgeBase
from service.errors import Forbidden, NotFound, Unauthorized
from service.settings import Settings
from service.ui import _data, _plots

HERE = Path(__file__).parent
STATIC = HERE / "static"

#: The pages' Content-Security-Policy: scripts, styles, images and connections from this origin only (inline
#: ``style`` attributes of the server-drawn SVG plots are allowed; inline scripts are not).
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store"}
_STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".svg": "image/svg+xml"}
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")

router = APIRouter(prefix="/ui", include_in_schema=False)


# The API's own dependencies, looked up when a request comes (service.api imports this package to mount it).
async def _kb(request: Request) -> KnowledgeBase:
    from service.api.deps import get_kb

    return await get_kb(request)


async def _settings(request: Request) -> Settings:
    from service.api.deps import get_app_settings

    return await get_app_settings(request)


KB = Annotated[KnowledgeBase, Depends(_kb)]
SettingsDep = Annotated[Settings, Depends(_settings)]


def _version() -> str:
    try:
        return version("metaml")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"


def _number(value: Any, digits: int = 4) -> str:
    """A number for a table: integers with thousands separators, floats to ``digits`` significant digits."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        return f"{value:.{digits}g}"
    return str(value)


def _duration(seconds: float | None) -> str:
    """Seconds as 42 s, 12.5 min, 3.2 h."""
    if seconds is None:
        return ""
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"


_env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]),
                   trim_blocks=True, lstrip_blocks=True)
_env.filters.update(number=_number, duration=_duration, percent=lambda v: "" if v is None else f"{100 * v:.1f}%")
_env.globals["asset_version"] = _version()


def _render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    body = _env.get_template(template).render(ui=f"{root}/ui", api=root, **context)
    return HTMLResponse(body, status_code=status, headers=_HEADERS)


def _gate(request: Request, settings: SettingsDep, page: str, title: str) -> HTMLResponse | None:
    """None when the request may read (reads are open, or it sent a valid ``read`` key as ``X-API-Key`` or
    ``Authorization: Bearer``); else the page that asks for a key, with the API's 401 or 403 and its reason."""
    from service.api.deps import key_of, may_read

    token = request.headers.get("x-api-key")
    auth = request.headers.get("authorization", "")
    if not token and auth.lower().startswith("bearer "):
        token = auth[7:]
    try:
        may_read(settings, key_of(request, settings, token))
    except Unauthorized as e:
        status, reason = 401, e.message
    except Forbidden as e:
        status, reason = 403, e.message
    else:
        return None
    return _render(request, "key_needed.html", status=status, page=page, title=title, reason=reason,
                   needs_key=True)


@router.get("")
def ui_root(request: Request) -> RedirectResponse:
    root = request.scope.get("root_path", "")
    return RedirectResponse(f"{root}/ui/", status_code=308)


@router.get("/", response_class=HTMLResponse)
def overview_page(request: Request, kb: KB, settings: SettingsDep) -> HTMLResponse:
    """Runs by source, task type, method, model family and status; feature coverage; the served model (fetched by
    the page from ``/v1/models``)."""
    if (gate := _gate(request, settings, "overview", "Overview")) is not None:
        return gate
    return _render(request, "overview.html", page="overview", title="Overview", stats=_data.overview(kb))


@router.get("/datasets", response_class=HTMLResponse)
def datasets_page(request: Request, kb: KB, settings: SettingsDep,
                  q: Annotated[str, Query(max_length=200)] = "") -> HTMLResponse:
    """Every dataset with runs, searchable by name."""
    if (gate := _gate(request, settings, "datasets", "Datasets")) is not None:
        return gate
    return _render(request, "datasets.html", page="datasets", title="Datasets", q=q,
                   datasets=_data.dataset_index(kb, q.strip()))


@router.get("/datasets/{name:path}", response_class=HTMLResponse)
def dataset_page(request: Request, name: str, kb: KB, settings: SettingsDep,
                 family: Annotated[str, Query(max_length=100)] = "",
                 method: Annotated[str, Query(max_length=100)] = "",
                 source: Annotated[str, Query(max_length=100)] = "") -> HTMLResponse:
    """One dataset: meta-features, a leaderboard with filters, score against cost by method, recommendations."""
    if (gate := _gate(request, settings, "dataset", name)) is not None:
        return gate
    view = _data.dataset_view(kb, name, family=family, method=method, source=source)
    if view is None and canonical_dataset(name) != name:
        view = _data.dataset_view(kb, canonical_dataset(name), family=family, method=method, source=source)
    if view is None:
        return _render(request, "not_found.html", status=404, page="dataset", title="No such dataset",
                       what=f"No run in the knowledge base has the dataset {name!r}.")
    plot = _plots.score_vs_cost(view.plot, view.metric)
    meta_docs = {f: (info.description or "") for f, info in DatasetMeta.model_fields.items()}
    return _render(request, "dataset.html", page="dataset", title=view.name, view=view,
                   plot=Markup(plot) if plot else None, meta_docs=meta_docs)


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, run_id: str, kb: KB, settings: SettingsDep) -> HTMLResponse:
    """One run: every part of its record, its learning curve, its provenance."""
    if (gate := _gate(request, settings, "run", "Run")) is not None:
        return gate
    record = _data.run_view(kb, run_id) if _RUN_ID.match(run_id) else None
    if record is None:
        return _render(request, "not_found.html", status=404, page="run", title="No such run",
                       what=f"No run in the knowledge base has the id {run_id!r}.")
    plot = _plots.learning_curve(record.outcome.curve)
    return _render(request, "run.html", page="run", title=f"Run {run_id[:8]}", run=record,
                   plot=Markup(plot) if plot else None)


@router.get("/upload", response_class=HTMLResponse)
def upload_page(request: Request) -> HTMLResponse:
    """A key field and a file drop; the report comes from ``POST /v1/runs``."""
    return _render(request, "upload.html", page="upload", title="Upload runs", formats=available_formats())


@router.get("/advisor", response_class=HTMLResponse)
def advisor_page(request: Request, kb: KB, settings: SettingsDep,
                 dataset: Annotated[str, Query(max_length=200)] = "") -> HTMLResponse:
    """Describe a task and a search space; the ranked configurations come from ``POST /v1/recommend``."""
    if (gate := _gate(request, settings, "advisor", "Advisor")) is not None:
        return gate
    choices = _data.advisor_choices(kb)
    meta_fields = list(DatasetMeta.model_fields)
    return _render(request, "advisor.html", page="advisor", title="Advisor", choices=choices,
                   chosen_dataset=canonical_dataset(dataset) if dataset else "", meta_fields=meta_fields)


@router.get("/sql", response_class=HTMLResponse)
def sql_page(request: Request, settings: SettingsDep) -> HTMLResponse:
    """A query box over ``POST /v1/sql`` (analyst keys)."""
    return _render(request, "sql.html", page="sql", title="SQL", max_rows=settings.sql_max_rows)


@router.get("/static/{name}")
def static_file(name: str) -> Response:
    """A file of the package's ``static`` folder (no sub-folders)."""
    path = STATIC / name
    if "/" in name or name.startswith(".") or not path.is_file() or path.suffix not in _STATIC_TYPES:
        raise NotFound(f"no such file: /ui/static/{name}")
    return FileResponse(path, media_type=_STATIC_TYPES[path.suffix],
                        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"})
