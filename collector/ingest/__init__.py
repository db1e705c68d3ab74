"""Validated, deduplicated, accounted ingestion into the knowledge base."""

from collector.ingest._pipeline import (
    DEFAULT_CHUNK_SIZE,
    IngestReport,
    Reject,
    ingest_items,
    ingest_path,
    validate,
)

__all__ = ["DEFAULT_CHUNK_SIZE", "IngestReport", "Reject", "ingest_items", "ingest_path", "validate"]
