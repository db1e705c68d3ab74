"""The knowledge base store (DuckDB file, Parquet export/import)."""

from collector.store._duckdb import (
    DEFAULT_SQL_MAX_BYTES,
    DEFAULT_SQL_MEMORY_MB,
    AppendResult,
    KnowledgeBase,
    SqlResult,
    rows_within,
)

__all__ = [
    "DEFAULT_SQL_MAX_BYTES",
    "DEFAULT_SQL_MEMORY_MB",
    "AppendResult",
    "KnowledgeBase",
    "SqlResult",
    "rows_within",
]
