"""Input formats of ``metaml ingest``: the knowledge base's own (canonical) formats and importers of real logs.

Formats are registered as entry points in the ``metaml.formats`` group (``[project.entry-points."metaml.formats"]``
in ``pyproject.toml``: ``name = "module:Class"``), this project's own and those of any installed package alike, the
way MLflow registers tracking stores. An outside package adds an importer by declaring one, without editing this
repository. A format whose module cannot be imported is listed as unavailable and does not break the others.

Auto-detection tries the formats by their :attr:`Format.priority` (lower first; this project's importers, then
outside formats, then the canonical formats, which recognize any JSON / CSV / Parquet file); a directory that no
format recognizes as a whole is walked, and each child is planned on its own (this is how one command ingests a
folder holding several sources).
"""

from __future__ import annotations

import inspect
import sys
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from collector.errors import FormatError
from collector.formats._archive import ARCHIVE_ERRORS, ArchiveDamaged, TarStream, archive_files, peek_members
from collector.formats._base import Format, Item, RawRecord, RecordProblem, Rejected
from collector.formats._stream import JsonArraySplitter, LineSplitter, Piece, parse_piece

#: The entry-point group formats are registered in.
ENTRY_POINT_GROUP = "metaml.formats"
#: The distribution whose formats win a name registered twice.
_HOME_DISTRIBUTION = "metaml"


@dataclass(frozen=True)
class RegisteredFormat:
    """One ``metaml.formats`` entry point: the format's name, ``module:Class``, the distribution that declares it,
    and the class (None, with the reason in ``error``, when it cannot be imported or is not a :class:`Format`)."""

    name: str
    target: str
    distribution: str | None
    cls: type[Format] | None
    error: str | None = None

    @property
    def priority(self) -> int:
        return self.cls.priority if self.cls is not None else sys.maxsize


def registered_formats() -> list[RegisteredFormat]:
    """Every registered format, in auto-detection order (available ones by priority and name, then the unavailable).

    Raises:
        FormatError: no format is registered at all (the package metadata is missing: reinstall metaml).
    """
    found = _registry(tuple(sys.path))
    if not found:
        raise FormatError(f"no input format is registered in the {ENTRY_POINT_GROUP!r} entry-point group: the "
                          "package metadata is missing or stale; reinstall metaml (pip install -e .)")
    return list(found)


@lru_cache(maxsize=8)
def _registry(path: tuple[str, ...]) -> tuple[RegisteredFormat, ...]:
    """The registry as the distributions on ``path`` (``sys.path``) declare it; cached per ``sys.path``."""
    chosen: dict[str, RegisteredFormat] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else None
        entry = _load(ep.name, ep.value, dist, ep.load)
        held = chosen.get(ep.name)
        if held is not None:
            keep = held if held.distribution == _HOME_DISTRIBUTION or dist != _HOME_DISTRIBUTION else entry
            warnings.warn(f"format {ep.name!r} is registered by {held.distribution} and by {dist}; "
                          f"{keep.distribution}'s ({keep.target}) is used", stacklevel=2)
            entry = keep
        chosen[ep.name] = entry
    return tuple(sorted(chosen.values(), key=lambda f: (f.priority, f.name)))


def _load(name: str, target: str, dist: str | None, load: Any) -> RegisteredFormat:
    try:
        cls = load()
    except Exception as e:  # an optional dependency or a broken plug-in: this format only is unavailable
        return RegisteredFormat(name, target, dist, None, f"cannot be imported ({type(e).__name__}: {e})")
    if not (inspect.isclass(cls) and issubclass(cls, Format)):
        return RegisteredFormat(name, target, dist, None, f"{target} is not a Format subclass")
    if getattr(cls, "name", None) != name:
        return RegisteredFormat(name, target, dist, None,
                                f"{target} calls itself {getattr(cls, 'name', None)!r}, not {name!r}")
    return RegisteredFormat(name, target, dist, cls)


class _Formats(Mapping[str, str]):
    """Format name -> ``module:Class``, in auto-detection order, as currently registered."""

    def __getitem__(self, name: str) -> str:
        for f in registered_formats():
            if f.name == name:
                return f.target
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter([f.name for f in registered_formats()])

    def __len__(self) -> int:
        return len(registered_formats())


class _UriOptions(Mapping[str, str]):
    """Format name -> the constructor option that receives a storage URI, for the formats that read one."""

    def _table(self) -> dict[str, str]:
        return {f.name: f.cls.uri_option for f in registered_formats() if f.cls is not None and f.cls.uri_option}

    def __getitem__(self, name: str) -> str:
        return self._table()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())


#: Registered formats: name -> "module:Class", in auto-detection order.
FORMATS: Mapping[str, str] = _Formats()

#: Formats that read a storage named by a URI rather than a local path, and the option that carries the URI.
URI_OPTIONS: Mapping[str, str] = _UriOptions()

#: Files met while walking a directory that are documentation, not data: skipped and listed as such.
DOC_FILES = {"origin.txt", "license", "license.txt", "readme.md", "readme.txt", "notice", ".ds_store"}


def available_formats() -> list[str]:
    """Registered formats that can be used in this installation, in auto-detection order."""
    return [f.name for f in registered_formats() if f.cls is not None]


def get_format(name: str, **options: Any) -> Format:
    """An instance of the format registered as ``name``, constructed with ``options`` (e.g. ``experiments`` for
    ``mlflow``).

    Raises:
        FormatError: no such format.
    """
    cls = _format_class(name)
    try:
        return cls(**options)
    except TypeError as e:
        raise FormatError(f"format {name!r} does not take the options {sorted(options)}: {e}") from e


def _format_class(name: str) -> type[Format]:
    for f in registered_formats():
        if f.name == name and f.cls is not None:
            return f.cls
    raise FormatError(f"unknown format {name!r}; available: {', '.join(available_formats())}")


def skipped_note(path: Path) -> str | None:
    """Why ``path`` holds no runs although it comes with a format's data (e.g. a table of aggregates), or None."""
    for f in registered_formats():
        note = f.cls.skips(path) if f.cls is not None else None
        if note:
            return note
    return None


def detect_format(path: Path) -> str | None:
    """The first registered format that recognizes ``path``, or None."""
    for f in registered_formats():
        if f.cls is not None and f.cls.detect(path):
            return f.name
    return None


def format_options(name: str, options: Mapping[str, Any], *, named: bool) -> dict[str, Any]:
    """The options a format is constructed with: all of ``options`` when the user named the format (an option it
    does not take is then an error), else only those its constructor takes (so that ``--mapping`` reaches every
    tuner experiment found in a folder, and nothing else)."""
    if named or not options:
        return dict(options)
    accepted = inspect.signature(_format_class(name)).parameters
    return {k: v for k, v in options.items() if k in accepted}


def uri_format(uri: str, fmt: str | None = None) -> str:
    """The format that reads the storage at ``uri``: ``fmt`` when given (it must read URIs), ``optuna`` for a
    ``sqlite:///`` file holding Optuna's tables, else ``mlflow`` (a tracking URI).

    Raises:
        FormatError: ``fmt`` does not read URIs.
    """
    if fmt is not None:
        if fmt not in URI_OPTIONS:
            raise FormatError(f"a URI is read only by the formats {', '.join(URI_OPTIONS)}, not {fmt!r}", uri=uri)
        return fmt
    if uri.startswith("sqlite:///") and "optuna" in available_formats():
        from collector.importers.optuna_studies import is_optuna_sqlite

        if is_optuna_sqlite(Path(uri[len("sqlite:///"):])):
            return "optuna"
    return "mlflow"


@dataclass
class PlannedInput:
    """One input and the format that will read it (``fmt`` is None for skipped documentation files)."""

    path: Path
    fmt: str | None
    note: str = ""


def plan_inputs(path: Path, fmt: str | None = None) -> list[PlannedInput]:
    """Decide which format reads what under ``path``.

    Args:
        path: a file, directory or archive.
        fmt: force this format for ``path`` itself instead of detecting.

    Raises:
        FormatError: ``path`` does not exist, or a file in it is in no known format.
    """
    if not path.exists():
        raise FormatError("no such file or directory", uri=str(path))
    if fmt is not None:
        get_format(fmt)
        return [PlannedInput(path, fmt)]
    note = skipped_note(path)
    if note is not None:
        return [PlannedInput(path, None, note)]
    detected = detect_format(path)
    if detected is not None:
        return [PlannedInput(path, detected)]
    if path.is_file():
        if path.name.lower() in DOC_FILES:
            return [PlannedInput(path, None, "documentation")]
        raise FormatError(
            f"no known format recognizes this file; name one with --format ({', '.join(available_formats())})",
            uri=str(path),
        )
    planned: list[PlannedInput] = []
    for child in sorted(path.iterdir()):
        if child.name.startswith("."):
            continue
        planned.extend(plan_inputs(child))
    return planned


__all__ = [
    "ARCHIVE_ERRORS",
    "ENTRY_POINT_GROUP",
    "FORMATS",
    "URI_OPTIONS",
    "ArchiveDamaged",
    "Format",
    "Item",
    "JsonArraySplitter",
    "LineSplitter",
    "Piece",
    "PlannedInput",
    "RawRecord",
    "RecordProblem",
    "RegisteredFormat",
    "Rejected",
    "TarStream",
    "archive_files",
    "available_formats",
    "detect_format",
    "format_options",
    "get_format",
    "parse_piece",
    "peek_members",
    "plan_inputs",
    "registered_formats",
    "skipped_note",
    "uri_format",
]
