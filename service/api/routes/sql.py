"""Read-only SQL over the knowledge base, for analysts."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.api._json import jsonable
from service.api.deps import KB, AnalystKey, SettingsDep
from service.api.routes._common import ERROR_RESPONSES
from service.api.schemas import SqlRequest, SqlResult

router = APIRouter(prefix="/v1", tags=["sql"])


@router.post("/sql", operation_id="run_sql", response_model=SqlResult, responses=ERROR_RESPONSES)
def run_sql(body: SqlRequest, kb: KB, settings: SettingsDep, _key: AnalystKey) -> JSONResponse:
    """Run one read-only statement (DuckDB SQL) over the tables `runs`, `datasets` and `models`.

    Writes, ATTACH, INSTALL/LOAD, COPY, SET and file reads are refused (400 `query_refused`); a query running past
    the server's time limit is interrupted (400 `query_timeout`); answers hold at most the server's row limit
    (`truncated` says whether more rows existed). Needs the `analyst` scope.
    """
    max_rows = min(body.max_rows or settings.sql_max_rows, settings.sql_max_rows)
    result = kb.sql(body.query, max_rows=max_rows, timeout_s=settings.sql_timeout_s)
    table = result.table
    columns = [{"name": f.name, "type": str(f.type)} for f in table.schema]
    values = [table.column(i).to_pylist() for i in range(table.num_columns)]
    rows = [list(r) for r in zip(*values, strict=True)] if values else []
    return JSONResponse(jsonable({"columns": columns, "rows": rows, "row_count": len(rows),
                                  "truncated": result.truncated}))
