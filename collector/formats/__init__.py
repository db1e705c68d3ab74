"""Input formats of ``metaml ingest``: the knowledge base's own (canonical) formats and importers of real logs.

Formats are registered by name with the import path of their class and imported only when used, so a format whose
optional dependency is missing does not break the others. Auto-detection tries the specific importers first and the
canonical formats last; a directory that no format recognizes as a whole is walked, and each child is planned on its
own (this is how one command ingests a folder holding several sources).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector.errors import FormatError
from collector.formats._archive import ARCHIVE_ERRORS, ArchiveDamaged, TarStream, archive_files, peek_members
from collector.formats._base import Format, Item, RawRecord, RecordProblem, Rejected
from collector.formats._stream import JsonArraySplitter, LineSplitter, Piece, parse_piece

#: name -> "module:Class". Order matters for auto-detection: specific importers before canonical formats.
FORMATS: dict[str, str] = {
    "transfergraph": "collector.importers.transfergraph:TransferGraph",
    "opda": "collector.importers.opda:Opda",
    "hf_trainer": "collector.importers.hf.trainer_output:TrainerOutput",
    "hf_cards": "collector.importers.hf.model_cards:ModelCards",
    "hub_samples": "collector.importers.hf.model_cards:HubSamples",
    "mlflow": "collector.importers.mlflow_runs:MlflowRuns",
    "optuna": "collector.importers.optuna_studies:OptunaStudies",
    "model_recycling": "collector.importers.model_recycling:ModelRecycling",
    "setfit": "collector.importers.setfit:SetFitResults",
    "lmbff": "collector.importers.lmbff:LmBff",
    "mteb": "collector.importers.mteb:MtebClassification",
    "peft_bench": "collector.importers.peft_bench:PeftMethodComparison",
    "xautolm": "collector.importers.xautolm:Xautolm",
    "ray_tune": "collector.importers.ray_tune:RayTuneExperiment",
    "syne_tune": "collector.importers.syne_tune:SyneTuneExperiment",
    "jsonl": "collector.formats.canonical:JsonLines",
    "json": "collector.formats.canonical:JsonDocument",
    "csv": "collector.formats.canonical:CanonicalCsv",
    "parquet": "collector.formats.canonical:CanonicalParquet",
}

#: Formats that read a storage named by a URI rather than a local path, and the option that carries the URI.
URI_OPTIONS: dict[str, str] = {"mlflow": "tracking_uri", "optuna": "storage"}

#: Files met while walking a directory that are documentation, not data: skipped and listed as such.
DOC_FILES = {"origin.txt", "license", "license.txt", "readme.md", "readme.txt", "notice", ".ds_store"}


def available_formats() -> list[str]:
    """Registered formats whose module is present in this installation."""
    return [name for name, target in FORMATS.items() if importlib.util.find_spec(target.split(":")[0]) is not None]


def get_format(name: str, **options: Any) -> Format:
    """An instance of the format registered as ``name``, constructed with ``options`` (e.g. ``experiments`` for
    ``mlflow``).

    Raises:
        FormatError: no such format.
    """
    if name not in FORMATS or name not in available_formats():
        raise FormatError(f"unknown format {name!r}; available: {', '.join(available_formats())}")
    module, cls = FORMATS[name].split(":")
    try:
        return getattr(importlib.import_module(module), cls)(**options)
    except TypeError as e:
        raise FormatError(f"format {name!r} does not take the options {sorted(options)}: {e}") from e


def _format_class(name: str) -> type[Format]:
    module, cls = FORMATS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def skipped_note(path: Path) -> str | None:
    """Why ``path`` holds no runs although it comes with a format's data (e.g. a table of aggregates), or None."""
    for name in available_formats():
        note = _format_class(name).skips(path)
        if note:
            return note
    return None


def detect_format(path: Path) -> str | None:
    """The first registered format that recognizes ``path``, or None."""
    for name in available_formats():
        if _format_class(name).detect(path):
            return name
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
    "skipped_note",
    "uri_format",
]
