"""The knowledge base store (DuckDB file, Parquet export/import)."""

from collector.store._duckdb import AppendResult, KnowledgeBase, SqlResult

__all__ = ["AppendResult", "KnowledgeBase", "SqlResult"]
