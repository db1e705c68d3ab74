"""The knowledge base store: one interface (:class:`KnowledgeBase`) over a DuckDB file or a DuckLake lakehouse,
chosen by location (:func:`open_kb`)."""

from collector.store._base import (
    DEFAULT_SQL_MAX_BYTES,
    DEFAULT_SQL_MEMORY_MB,
    AppendResult,
    KnowledgeBase,
    SqlResult,
    rows_within,
)
from collector.store._uri import KbLocation, open_kb, parse_kb_location

__all__ = [
    "DEFAULT_SQL_MAX_BYTES",
    "DEFAULT_SQL_MEMORY_MB",
    "AppendResult",
    "KbLocation",
    "KnowledgeBase",
    "SqlResult",
    "open_kb",
    "parse_kb_location",
    "rows_within",
]
