"""Read-only SQL over the knowledge base, for analysts."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from service.api._json import jsonable
from service.api.deps import KB, AnalystKey, SettingsDep
from service.api.routes._common import ERROR_RESPONSES, api_router
from service.api.schemas import SqlRequest, SqlResult

router = api_router(prefix="/v1", tags=["sql"])


@router.post("/sql", operation_id="run_sql", response_model=SqlResult, responses=ERROR_RESPONSES)
def run_sql(body: SqlRequest, kb: KB, settings: SettingsDep, _key: AnalystKey) -> JSONResponse:
    """Run one read-only statement (DuckDB SQL) over the tables `runs`, `datasets` and `models`.

    Writes, ATTACH, INSTALL/LOAD, COPY, SET, file reads, and the functions that show the server's files and
    settings or run SQL given as text are refused, and so is `EXPLAIN` of any of these (400 `query_refused`); so is
    a query needing more than the server's memory limit for one query. A query running past the server's time limit
    is interrupted (400 `query_timeout`). Answers hold at most the server's row limit and answer size (`truncated`
    says whether more rows existed). Needs the `analyst` scope.
    """
    max_rows = min(body.max_rows or settings.sql_max_rows, settings.sql_max_rows)
    result = kb.sql(body.query, max_rows=max_rows, timeout_s=settings.sql_timeout_s,
                    memory_limit_mb=settings.sql_memory_mb, max_bytes=settings.max_answer_bytes)
    table = result.table
    columns = [{"name": f.name, "type": str(f.type)} for f in table.schema]
    values = [table.column(i).to_pylist() for i in range(table.num_columns)]
    rows = [list(r) for r in zip(*values, strict=True)] if values else []
    return JSONResponse(jsonable({"columns": columns, "rows": rows, "row_count": len(rows),
                                  "truncated": result.truncated}))
