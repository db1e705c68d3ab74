"""The knowledge base store: one interface (:class:`KnowledgeBase`) over a DuckDB file or a DuckLake lakehouse,
chosen by location (:func:`open_kb`)."""

from collector.store._base import AppendResult, KnowledgeBase, SqlResult
from collector.store._uri import KbLocation, open_kb, parse_kb_location

__all__ = ["AppendResult", "KbLocation", "KnowledgeBase", "SqlResult", "open_kb", "parse_kb_location"]
