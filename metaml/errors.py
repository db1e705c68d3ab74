"""Errors raised by the meta-learner. Every error a user can cause derives from :class:`MetamlError`."""

from __future__ import annotations


class MetamlError(Exception):
    """Root of the meta-learner's errors; the message is written for the person who has to act on it."""


class ArtifactError(MetamlError):
    """A saved meta-model could not be written or read (missing, corrupt, from a newer format or another schema)."""


class TrackingError(MetamlError):
    """The MLflow registry could not log, list, promote or load a model version (or has none to load)."""


class InvalidCandidates(MetamlError, ValueError):
    """Candidate configurations (or a search space) that fail validation.

    Attributes:
        errors: one entry per problem: ``loc`` (where in the request, e.g. ``("candidates", 3, "method", "name")``),
            ``msg`` and ``type``, as pydantic reports them.
    """

    def __init__(self, errors: list[dict[str, object]]) -> None:
        self.errors = errors
        first = errors[0] if errors else {"loc": (), "msg": "invalid"}
        super().__init__(f"{'.'.join(map(str, first['loc']))}: {first['msg']}")


__all__ = ["ArtifactError", "InvalidCandidates", "MetamlError", "TrackingError"]
