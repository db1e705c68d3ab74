"""Errors of the service layer. Every error the HTTP API answers with derives from :class:`ServiceError`.

Errors of the collector (``collector.errors``) keep their own types; ``service.api.errors`` holds the one table that
maps both to HTTP statuses.
"""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """Root of the service's errors.

    Args:
        message: what went wrong, written for the person who has to act on it.
        details: structured details for the answer's ``error.details`` (JSON-serializable).
    """

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class BadRequest(ServiceError):
    """The request cannot be understood (malformed JSON, an unreadable file, a bad cursor...)."""


class Unauthorized(ServiceError):
    """No API key, or one that is unknown, malformed or revoked."""


class Forbidden(ServiceError):
    """The API key lacks the scope the operation needs."""


class NotFound(ServiceError):
    """The resource does not exist."""


class PayloadTooLarge(ServiceError):
    """The request body is larger than the configured limit."""


class UnsupportedMediaType(ServiceError):
    """The request's Content-Type is not one the operation reads."""


class BatchTooLarge(ServiceError):
    """An upload holds more records than the configured limit."""


class KeyStoreError(ServiceError):
    """The API key file cannot be read or written, or a key operation is invalid (unknown id, bad scope)."""
