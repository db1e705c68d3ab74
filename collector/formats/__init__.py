"""Input formats of ``metaml ingest``: the knowledge base's own (canonical) formats and importers of real logs.

Formats are registered by name with the import path of their class and imported only when used, so a format whose
optional dependency is missing does not break the others. Auto-detection tries the specific importers first and the
canonical formats last; a directory that no format recognizes as a whole is walked, and each child is planned on its
own (this is how one command ingests a folder holding several sources).
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector.errors import FormatError
from collector.formats._base import Format, Item, RawRecord, Rejected
from collector.formats._stream import JsonArraySplitter, LineSplitter, Piece, parse_piece

#: name -> "module:Class". Order matters for auto-detection: specific importers before canonical formats.
FORMATS: dict[str, str] = {
    "transfergraph": "collector.importers.transfergraph:TransferGraph",
    "opda": "collector.importers.opda:Opda",
    "hf_trainer": "collector.importers.hf_trainer:TrainerOutput",
    "hf_cards": "collector.importers.hf_cards:ModelCards",
    "hub_samples": "collector.importers.hf_cards:HubSamples",
    "mlflow": "collector.importers.mlflow_runs:MlflowRuns",
    "model_recycling": "collector.importers.model_recycling:ModelRecycling",
    "setfit": "collector.importers.setfit:SetFitResults",
    "lmbff": "collector.importers.lmbff:LmBff",
    "mteb": "collector.importers.mteb:MtebClassification",
    "peft_bench": "collector.importers.peft_bench:PeftMethodComparison",
    "jsonl": "collector.formats.canonical:JsonLines",
    "json": "collector.formats.canonical:JsonDocument",
    "csv": "collector.formats.canonical:CanonicalCsv",
    "parquet": "collector.formats.canonical:CanonicalParquet",
}

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


def detect_format(path: Path) -> str | None:
    """The first registered format that recognizes ``path``, or None."""
    for name in available_formats():
        module, cls = FORMATS[name].split(":")
        if getattr(importlib.import_module(module), cls).detect(path):
            return name
    return None


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
    "FORMATS",
    "Format",
    "Item",
    "JsonArraySplitter",
    "LineSplitter",
    "Piece",
    "PlannedInput",
    "RawRecord",
    "Rejected",
    "available_formats",
    "detect_format",
    "get_format",
    "parse_piece",
    "plan_inputs",
]
