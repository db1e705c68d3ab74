"""Errors raised by the meta-learner. Every error a user can cause derives from :class:`MetamlError`."""

from __future__ import annotations


class MetamlError(Exception):
    """Root of the meta-learner's errors; the message is written for the person who has to act on it."""


class ArtifactError(MetamlError):
    """A saved meta-model could not be written or read (missing, corrupt, from a newer format or another schema)."""


class TrackingError(MetamlError):
    """The MLflow registry could not log, list, promote or load a model version (or has none to load)."""


__all__ = ["ArtifactError", "MetamlError", "TrackingError"]
