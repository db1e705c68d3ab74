"""Errors raised by the collector. Every error a user can cause derives from :class:`CollectorError`."""

from __future__ import annotations


class CollectorError(Exception):
    """Root of the collector's errors; the message is written for the person who has to act on it."""


class FormatError(CollectorError):
    """A whole input could not be read (empty, binary, truncated, wrong header, unknown format).

    Args:
        message: what is wrong, in words.
        uri: the file or URL concerned.
        locator: where inside it (line, row, archive member), when known.
    """

    def __init__(self, message: str, *, uri: str | None = None, locator: str | None = None) -> None:
        self.uri = uri
        self.locator = locator
        where = ":".join(x for x in (uri, locator) if x)
        super().__init__(f"{where}: {message}" if where else message)


class StoreError(CollectorError):
    """The knowledge base could not be opened, read or written."""


class KnowledgeBaseNotFound(StoreError):
    """No knowledge base exists at the given path."""


class StoreUnavailable(StoreError):
    """The server that holds the knowledge base (a lakehouse's catalog database) cannot be reached."""


class StoreBusy(StoreError):
    """Another process held the knowledge base longer than the lock timeout."""


class QueryRefused(CollectorError):
    """A read-only query tried to write, attach, install, copy or read files."""


class QueryTimeout(CollectorError):
    """A read-only query ran past its time limit and was interrupted."""
