"""Validated, deduplicated, accounted ingestion into the knowledge base."""

from collector.ingest._pipeline import (
    DEFAULT_CHUNK_SIZE,
    IngestReport,
    Reject,
    ingest_items,
    ingest_path,
    rejects_path,
    top_reasons,
    validate,
    write_rejects,
)

__all__ = ["DEFAULT_CHUNK_SIZE", "IngestReport", "Reject", "ingest_items", "ingest_path", "rejects_path", "top_reasons",
           "validate", "write_rejects"]
