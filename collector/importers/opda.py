"""OPDA: random-search hyperparameter tuning of DeBERTa and DeBERTaV3 on MultiNLI, with learning curves.

Source: github.com/nicholaslourie/opda @ 9529a34b (``data/deberta/``), the data of Lourie, Cho & He 2023, "Show Your
Work with Confidence: Confidence Bands for Tuning Curves" (arXiv 2311.09480). License: CC BY-SA 4.0
(``provenance.license = "CC-BY-SA-4.0"``).

Input: a ``<model>_tuning.results.jsonl`` file, or a folder holding such files (each is read, sorted by name). The
model comes from the file name: ``deberta-base`` -> ``microsoft/deberta-base``, ``deberta-v3-base`` ->
``microsoft/deberta-v3-base`` (:data:`MODELS`; another prefix is used as the model id as it is).

One record per line (one random-search iteration = one full fine-tuning run on MultiNLI):

* task ``text-classification``, primary metric ``accuracy`` (unit scale); ``dataset.name = "glue/mnli"``;
  ``method.name = "full"``.
* ``num_train_epochs`` -> ``hparams.epochs``; ``train_batch_size`` -> ``hparams.batch_size``;
  ``total_model_steps`` -> ``hparams.max_steps`` (the steps the run actually took); ``learning_rate``;
  ``warmup_steps`` (the README's ``warmup_proportion`` of the first epoch, converted to steps by the authors);
  ``cls_drop_out`` -> ``hparams.dropout`` (the dropout of the classification head); ``iteration`` ->
  ``hparams.extra.search_iteration`` (the search iteration, 1..1024, so every record points back to its line).
* ``learning_curves.matched`` / ``.mismatched`` (``[step, accuracy]`` every 1,000 steps, at each epoch's end and at
  the end of training) -> ``outcome.curve`` points with metric ``accuracy`` (matched) and
  ``accuracy_mismatched``; ``epoch = step * num_train_epochs / total_model_steps``.
* ``outcome.score`` = the last matched point (the accuracy at the end of training), ``outcome.split =
  "validation_matched"``; ``outcome.metrics`` = ``accuracy`` (final matched) and ``accuracy_mismatched`` (final
  mismatched).
* Not in the source, so not in the record: seed, precision, optimizer and schedule (the paper's defaults),
  runtime and hardware.

Many runs diverge to chance level (about 0.33 on three balanced classes); they keep ``status = "ok"``: the source
reports them as completed runs, and the learner decides what counts as divergence. A line that is not a JSON object,
lacks a field, or has an empty or malformed learning curve is rejected with its line number.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from collector.errors import FormatError
from collector.formats._base import Format, Item, RawRecord, Rejected, buffered

LICENSE = "CC-BY-SA-4.0"
DATASET = "glue/mnli"
SPLIT = "validation_matched"
SUFFIX = "_tuning.results.jsonl"
MAX_LINE_BYTES = 1 << 22

#: File-name prefix -> Hugging Face Hub id and model family.
MODELS: dict[str, tuple[str, str]] = {
    "deberta-base": ("microsoft/deberta-base", "deberta"),
    "deberta-v3-base": ("microsoft/deberta-v3-base", "deberta-v2"),
}

REQUIRED = ("num_train_epochs", "train_batch_size", "total_model_steps", "learning_rate", "warmup_steps",
            "cls_drop_out", "learning_curves")
CURVES = {"matched": "accuracy", "mismatched": "accuracy_mismatched"}


class LineError(ValueError):
    """A line that cannot become a record; carries the field."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field


class Opda(Format):
    """Reads OPDA's ``*_tuning.results.jsonl`` files (a file or a folder of them)."""

    name: ClassVar[str] = "opda"
    priority: ClassVar[int] = 20
    description: ClassVar[str] = "OPDA DeBERTa random-search runs on MultiNLI (*_tuning.results.jsonl, file or folder)"
    source: ClassVar[str] = "opda"

    @classmethod
    def detect(cls, path: Path) -> bool:
        """A ``*_tuning.results.jsonl`` file, or a folder holding one."""
        if path.is_file():
            return path.name.endswith(SUFFIX)
        return path.is_dir() and any(p.name.endswith(SUFFIX) for p in path.iterdir() if p.is_file())

    def estimate(self, path: Path) -> int | None:
        try:
            files = _files(path)
        except FormatError:
            return None
        total = 0
        for file in files:
            with open(file, "rb") as f:
                total += sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 22), b""))
        return total

    def read(self, path: Path) -> Iterator[Item]:
        """Yield one record per line of each results file.

        Raises:
            FormatError: no results file, or a file is empty or binary.
        """
        for file in _files(path):
            yield from _read_file(file)


def _files(path: Path) -> list[Path]:
    if not path.exists():
        raise FormatError("no such file or directory", uri=str(path))
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(SUFFIX))
    if not files:
        raise FormatError(f"no *{SUFFIX} file in this folder", uri=str(path))
    return files


def model_for(file: Path) -> tuple[str, str | None]:
    """The Hub id (and family, when known) of the model a results file is about, from its name."""
    prefix = file.name[: -len(SUFFIX)] if file.name.endswith(SUFFIX) else file.stem
    if prefix in MODELS:
        return MODELS[prefix]
    return prefix, None


def _read_file(file: Path) -> Iterator[Item]:
    uri = str(file)
    model_id, family = model_for(file)
    with buffered(file) as f:
        lineno = 0
        while True:
            line = f.readline(MAX_LINE_BYTES + 1)
            if not line:
                break
            lineno += 1
            loc = f"{file.name} line {lineno}"
            if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                while line and not line.endswith(b"\n"):
                    line = f.readline(1 << 20)
                yield Rejected(loc, f"line longer than {MAX_LINE_BYTES:,} bytes", uri=uri)
                continue
            if not line.strip():
                continue
            try:
                yield RawRecord(_record(_parse(line), model_id, family), loc, uri)
            except LineError as e:
                yield Rejected(loc, str(e), field=e.field, uri=uri)


def _parse(line: bytes) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LineError(None, f"invalid JSON (truncated or malformed line): {e}") from e
    if not isinstance(value, dict):
        raise LineError(None, f"expected a JSON object, got {type(value).__name__}")
    missing = [k for k in REQUIRED if k not in value or value[k] is None]
    if missing:
        raise LineError(missing[0], f"missing field(s) {', '.join(missing)}")
    return value


def _record(run: dict[str, Any], model_id: str, family: str | None) -> dict[str, Any]:
    epochs = _num(run, "num_train_epochs")
    total = int(_num(run, "total_model_steps"))
    curves = run["learning_curves"]
    if not isinstance(curves, dict):
        raise LineError("learning_curves", "learning_curves is not an object")
    points: list[dict[str, Any]] = []
    finals: dict[str, float] = {}
    for split, metric in CURVES.items():
        curve = _curve(curves.get(split), split)
        finals[metric] = curve[-1][1]
        points.extend(
            {"step": step, "epoch": round(step * epochs / total, 4) if total else None, "metric": metric,
             "value": value}
            for step, value in curve
        )
    hparams: dict[str, Any] = {
        "learning_rate": _num(run, "learning_rate"),
        "batch_size": int(_num(run, "train_batch_size")),
        "epochs": epochs,
        "max_steps": total,
        "warmup_steps": int(_num(run, "warmup_steps")),
        "dropout": _num(run, "cls_drop_out"),
    }
    if run.get("iteration") is not None:
        hparams["extra"] = {"search_iteration": run["iteration"]}
    model: dict[str, Any] = {"id": model_id}
    if family:
        model["family"] = family
    return {
        "task": {"type": "text-classification", "primary_metric": "accuracy"},
        "dataset": {"name": DATASET},
        "model": model,
        "method": {"name": "full"},
        "hparams": hparams,
        "outcome": {
            "status": "ok",
            "score": finals["accuracy"],
            "split": SPLIT,
            "metrics": finals,
            "curve": points,
        },
        "provenance": {"license": LICENSE},
    }


def _num(run: dict[str, Any], key: str) -> float:
    value = run[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise LineError(key, f"{key} is not a number: {value!r}")
    return value


def _curve(curve: Any, split: str) -> list[tuple[int, float]]:
    """``[[step, accuracy], ...]`` checked: non-empty, integer steps, finite accuracies."""
    field = f"learning_curves.{split}"
    if not isinstance(curve, list) or not curve:
        raise LineError(field, f"{field} is missing or empty")
    out: list[tuple[int, float]] = []
    for i, point in enumerate(curve):
        ok = (isinstance(point, list) and len(point) == 2 and isinstance(point[0], int)
              and isinstance(point[1], (int, float)) and not isinstance(point[1], bool) and math.isfinite(point[1]))
        if not ok:
            raise LineError(field, f"{field}[{i}] is not a [step, accuracy] pair: {point!r}")
        out.append((point[0], float(point[1])))
    return out
