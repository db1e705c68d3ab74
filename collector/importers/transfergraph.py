"""TransferGraph: fine-tuning runs of Hugging Face checkpoints on text and image classification targets.

Source: github.com/TransferGraph/transfergraph @ 0458aff3 (``resources/experiments/<task>/``), the data of "Model
Selection with Model Zoo via Graph Learning" (ICDE 2024). No license is stated upstream (``provenance.license`` is
``"none stated"``).

Input: the ``transfergraph`` folder (both task sub-folders are read, ``sequence_classification`` first) or one task
sub-folder alone. A folder is recognized by ``records.csv`` next to ``model_config_dataset.csv``.

Files and mapping (one record per row of ``records.csv``):

``sequence_classification/records.csv`` (task type ``text-classification``)
    * ``model`` -> ``model.id``; ``finetuned_dataset`` -> ``dataset.name`` (already ``<dataset>/<config>``).
    * ``peft_method`` empty -> method ``full``; ``lora`` -> method ``lora`` with ``lora_attention_dimension`` ->
      ``method.lora_r``, ``lora_alpha``, ``lora_dropout`` and ``lora_bias`` -> ``method.config.bias``.
    * ``learning_rate``, ``batch_size`` -> ``hparams.per_device_batch_size`` (one device assumed, so with
      ``gradient_accumulation_steps`` it gives the effective ``batch_size``), ``num_train_epochs`` -> ``epochs``,
      ``lr_scheduler_type`` -> ``lr_scheduler``, ``seed``.
    * ``eval_accuracy`` -> ``outcome.score`` and ``metrics.accuracy`` (unit scale); ``train_runtime`` ->
      ``runtime_s``. ``outcome.split`` is the split TransferGraph's data builder evaluates on: ``validation`` where
      the Hub dataset has one, else ``test`` (``ag_news``, ``dbpedia_14``, ``imdb``, ``amazon_polarity``).
    * Dropped: the row index, ``model_name`` (always equal to ``model``), ``dataset_path``/``dataset_name``/
      ``task_type`` (a split spelling of ``finetuned_dataset``, which wins), and the Hub bookkeeping columns
      ``push_to_hub``, ``hub_model_id``, ``push_to_hub_organization``, ``hub_token``.

``image_classification/records.csv`` (task type ``image-classification``, method ``full``)
    * ``model``, ``finetuned_dataset`` as above; ``epochs``, ``batch_size`` (per device), ``lr``; the data slices
      ``train_slice``/``val_slice``/``test_slice`` -> ``hparams.extra.data_slices`` and ``input_shape`` ->
      ``hparams.extra.image_size`` when given; ``eval_accuracy`` -> score; ``train_loss``/``eval_loss`` ->
      metrics when given (never, in this release); ``train_runtime`` -> ``runtime_s``. ``elapsed_time`` is dropped
      (it equals ``train_runtime`` within 2 ms in every row). ``outcome.split`` is left empty: the evaluation slice
      is not recorded (``val_slice`` and ``test_slice`` overlap).

``model_config_dataset.csv`` (per model; enrichment, not part of a run's identity)
    ``model_type`` -> ``model.family``, ``number_of_parameters`` -> ``model.n_params``, ``dataset`` (what the
    checkpoint was already fine-tuned on) -> ``model.upstream_task``. The checkpoint's own ``accuracy`` on that
    upstream dataset, ``architectures``, ``number_of_labels``/``labels`` and ``memory_consumption`` (weight bytes)
    have no place in the record and are dropped.

``target_dataset_features.csv`` (per target dataset; enrichment)
    ``size`` -> ``dataset.meta.n_samples`` and ``number_of_classes`` -> ``dataset.meta.n_classes``. Note that
    ``size`` is what the source gives: for most text datasets the total over all splits (``ag_news`` 127,600 =
    120,000 train + 7,600 test), not only the training split. Known-bad values are not used: the
    ``tweet_eval/offensive`` row carries ``(24300, 18)``, the values of the image dataset
    ``smallnorb_label_azimuth``, and ``flowers`` gives 10 classes for Oxford Flowers-102 (1,020 training images =
    10 per class x 102 classes).

``transferability_score_records.csv`` is not read: LogME and regularized H-scores are cheap transferability
*estimates* of a (model, target) pair, not fine-tuning runs, and the record has no field for per-pair estimates
(putting them in ``method.config`` would make them part of the run's identity).

Repairs and rejects (the rules; counts are in ``docs/sources/transfergraph.md``):

* Dataset names are repaired by :data:`DATASET_NAME_REPAIRS` (``glut/qqp`` -> ``glue/qqp``) in every file.
* A row whose ``model`` is empty or a number, or whose ``finetuned_dataset`` is a number, ``none`` or a method name,
  is the tail of a line broken in the source file: rejected, naming the values found.
* A row without ``eval_accuracy`` (a line cut before its score) is rejected.
* A ``peft_method`` that is no known method but the beginning of exactly one known method used in the file
  (``lor``) is a line cut inside that column: the method is repaired and, because every complete row of that
  method in the file uses one fixed recipe (LoRA r=1, alpha=1, dropout=0.1, bias none), the missing method
  hyperparameters are taken from it. A value that is no known method otherwise is rejected.
* Cells that do not parse as numbers (``batch_size = none``) reject their row, naming the column.
* Exact duplicate rows are passed on; the pipeline counts them as duplicates by content id. Rows that differ only
  in score or runtime are repeated runs and are both kept.
"""

from __future__ import annotations

import csv
import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from collector.errors import FormatError
from collector.formats._base import Format, Item, RawRecord, Rejected
from collector.schema._vocab import canonical_method

LICENSE = "none stated"
RECORDS = "records.csv"
MODEL_CONFIG = "model_config_dataset.csv"
TARGET_FEATURES = "target_dataset_features.csv"
TASK_FOLDERS = ("sequence_classification", "image_classification")

#: Misspelled dataset names found in the source files and what they mean.
DATASET_NAME_REPAIRS: dict[str, str] = {"glut/qqp": "glue/qqp"}

#: Hub datasets without a validation split: TransferGraph's builder then evaluates on ``test``.
NO_VALIDATION_SPLIT = frozenset({"ag_news", "dbpedia_14", "imdb", "amazon_polarity"})

#: (task folder, dataset) -> feature columns whose values are known to be wrong (see the module docstring).
BAD_FEATURES: dict[tuple[str, str], frozenset[str]] = {
    ("sequence_classification", "tweet_eval/offensive"): frozenset({"size", "number_of_classes"}),
    ("image_classification", "flowers"): frozenset({"number_of_classes"}),
}

#: Values that are never dataset names (what the tails of broken lines put in ``finetuned_dataset``).
NOT_A_NAME = frozenset({"", "none", "nan", "null", "true", "false", "lora", "lor"})

SEQ_REQUIRED = ("model", "finetuned_dataset", "learning_rate", "batch_size", "num_train_epochs", "eval_accuracy")
IMG_REQUIRED = ("model", "finetuned_dataset", "lr", "batch_size", "epochs", "eval_accuracy")
LORA_COLUMNS = ("lora_attention_dimension", "lora_alpha", "lora_dropout", "lora_bias")

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


class RowError(ValueError):
    """A cell that cannot be used; carries the column."""

    def __init__(self, column: str, message: str) -> None:
        super().__init__(message)
        self.column = column


@dataclass
class _Task:
    """One task sub-folder and what is known about its models and target datasets."""

    folder: Path
    kind: str  # "sequence_classification" or "image_classification"
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def records(self) -> Path:
        return self.folder / RECORDS


class TransferGraph(Format):
    """Reads a TransferGraph ``resources/experiments`` folder (or one task sub-folder of it)."""

    name: ClassVar[str] = "transfergraph"
    priority: ClassVar[int] = 10
    description: ClassVar[str] = "TransferGraph runs: folder with records.csv + model_config_dataset.csv"
    source: ClassVar[str] = "transfergraph"

    @classmethod
    def detect(cls, path: Path) -> bool:
        """A task folder (``records.csv`` + ``model_config_dataset.csv``) or a folder holding one."""
        if not path.is_dir():
            return False
        return _is_task_folder(path) or any(_is_task_folder(path / sub) for sub in TASK_FOLDERS)

    def estimate(self, path: Path) -> int | None:
        try:
            folders = _task_folders(path)
        except FormatError:
            return None
        total = 0
        for folder in folders:
            with open(folder / RECORDS, "rb") as f:
                total += max(sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b"")) - 1, 0)
        return total

    def read(self, path: Path) -> Iterator[Item]:
        """Yield one record per row of every task folder's ``records.csv``.

        Raises:
            FormatError: not a TransferGraph folder, a required file or column is missing (checked for every task
                folder before anything is yielded).
        """
        tasks = [_load_task(folder) for folder in _task_folders(path)]
        loaded = [(task, _read_records(task)) for task in tasks]
        for task, rows in loaded:
            yield from _records(task, rows)


# -- folder layout -----------------------------------------------------------------------------------------------


def _is_task_folder(path: Path) -> bool:
    return (path / RECORDS).is_file() and (path / MODEL_CONFIG).is_file()


def _task_folders(path: Path) -> list[Path]:
    if not path.exists():
        raise FormatError("no such directory", uri=str(path))
    if not path.is_dir():
        raise FormatError("expected the transfergraph folder or one of its task folders, got a file", uri=str(path))
    if (path / RECORDS).is_file():
        return [path]
    subs = [path / sub for sub in TASK_FOLDERS if (path / sub).is_dir()]
    if not subs:
        raise FormatError(f"no {RECORDS} here and no task folder ({', '.join(TASK_FOLDERS)})", uri=str(path))
    for sub in subs:
        if not (sub / RECORDS).is_file():
            raise FormatError(f"missing required file {RECORDS}", uri=str(sub))
    return subs


def _task_kind(folder: Path, header: list[str]) -> str:
    if folder.name in TASK_FOLDERS:
        return folder.name
    return "image_classification" if "lr" in header and "learning_rate" not in header else "sequence_classification"


# -- side files --------------------------------------------------------------------------------------------------


def _read_csv(path: Path, required: tuple[str, ...]) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header and (line number, row) pairs of a CSV; FormatError when missing, empty or lacking columns."""
    if not path.is_file():
        raise FormatError("missing required file", uri=str(path))
    try:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise FormatError("file is empty", uri=str(path))
            header = [h.strip() for h in header]
            rows: list[tuple[int, dict[str, str]]] = []
            for cells in reader:
                if not any(c.strip() for c in cells):
                    continue
                row = {h: (cells[i].strip() if i < len(cells) else "") for i, h in enumerate(header)}
                if len(cells) != len(header):
                    row["__width__"] = f"expected {len(header)} fields, got {len(cells)}"
                rows.append((reader.line_num, row))
    except (UnicodeDecodeError, csv.Error) as e:
        raise FormatError(f"unreadable CSV: {e}", uri=str(path)) from e
    missing = [c for c in required if c not in header]
    if missing:
        raise FormatError(f"missing required column(s) {', '.join(missing)}", uri=str(path), locator="line 1")
    return header, rows


def _header(path: Path) -> list[str]:
    """The column names of a CSV (first line only)."""
    if not path.is_file():
        raise FormatError("missing required file", uri=str(path))
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return [h.strip() for h in next(csv.reader(f), [])]
    except (UnicodeDecodeError, csv.Error) as e:
        raise FormatError(f"unreadable CSV header: {e}", uri=str(path)) from e


def _load_task(folder: Path) -> _Task:
    """Read the per-model and per-target side files of one task folder."""
    task = _Task(folder, _task_kind(folder, _header(folder / RECORDS)))
    _, models = _read_csv(folder / MODEL_CONFIG, ("model",))
    for _, row in models:
        if row.get("model"):
            task.models[row["model"]] = _model_features(row)
    if (folder / TARGET_FEATURES).is_file():
        _, targets = _read_csv(folder / TARGET_FEATURES, ("finetune_dataset",))
        for _, row in targets:
            name = repair_dataset_name(row["finetune_dataset"])
            task.targets[name] = _target_meta(task.kind, name, row)
    return task


def _model_features(row: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if row.get("model_type"):
        out["family"] = row["model_type"]
    n_params = _safe_number(row.get("number_of_parameters"))
    if n_params is not None and n_params >= 0:
        out["n_params"] = int(n_params)
    upstream = row.get("dataset", "")
    if upstream and upstream.lower() != "nan":
        out["upstream_task"] = repair_dataset_name(upstream)
    return out


def _target_meta(kind: str, name: str, row: dict[str, str]) -> dict[str, Any]:
    bad = BAD_FEATURES.get((kind, name), frozenset())
    meta: dict[str, Any] = {}
    size = None if "size" in bad else _safe_number(row.get("size"))
    n_classes = None if "number_of_classes" in bad else _safe_number(row.get("number_of_classes"))
    if size is not None and size >= 0:
        meta["n_samples"] = int(size)
    if n_classes is not None and n_classes >= 1:
        meta["n_classes"] = int(n_classes)
    return meta


def repair_dataset_name(name: str) -> str:
    """The dataset name with known misspellings of the source repaired."""
    name = name.strip()
    return DATASET_NAME_REPAIRS.get(name, name)


# -- records -----------------------------------------------------------------------------------------------------


def _read_records(task: _Task) -> list[tuple[int, dict[str, str]]]:
    required = SEQ_REQUIRED if task.kind == "sequence_classification" else IMG_REQUIRED
    _, rows = _read_csv(task.records, required)
    return rows


def _records(task: _Task, rows: list[tuple[int, dict[str, str]]]) -> Iterator[Item]:
    uri = str(task.records)
    where = f"{task.folder.name}/{RECORDS}"
    methods = Counter(row.get("peft_method", "") for _, row in rows)
    recipes = _method_recipes(rows) if task.kind == "sequence_classification" else {}
    for line, row in rows:
        index = row.get("") or row.get("Unnamed: 0") or ""
        loc = f"{where} row {index} (line {line})" if index else f"{where} line {line}"
        try:
            if "__width__" in row:
                raise RowError("", f"malformed row: {row['__width__']}")
            _check_identity(row)
            if task.kind == "sequence_classification":
                data = _sequence_record(row, task, methods, recipes)
            else:
                data = _image_record(row, task)
        except RowError as e:
            yield Rejected(loc, str(e), field=e.column or None, uri=uri)
            continue
        yield RawRecord(data, loc, uri)


def _check_identity(row: dict[str, str]) -> None:
    """Reject the tails of broken lines: no model id, or a number / method name where the dataset should be."""
    model = row.get("model", "")
    dataset = row.get("finetuned_dataset", "")
    bad_model = not model or bool(_NUMBER.match(model))
    bad_dataset = dataset.lower() in NOT_A_NAME or bool(_NUMBER.match(dataset))
    if bad_model or bad_dataset:
        what = []
        if bad_model:
            what.append(f"model {model!r} is not a model id")
        if bad_dataset:
            what.append(f"finetuned_dataset {dataset!r} is not a dataset name")
        raise RowError("model" if bad_model else "finetuned_dataset",
                       "malformed row: " + " and ".join(what) + " (the tail of a line broken in the source file)")


def _method_recipes(rows: list[tuple[int, dict[str, str]]]) -> dict[str, dict[str, str]]:
    """Per PEFT method, the method columns that are constant over every complete row of that method."""
    seen: dict[str, dict[str, set[str]]] = {}
    for _, row in rows:
        method = row.get("peft_method", "")
        if not method or not all(row.get(c) for c in LORA_COLUMNS if c in row):
            continue
        values = seen.setdefault(method, {c: set() for c in LORA_COLUMNS if c in row})
        for c in values:
            values[c].add(row[c])
    return {m: {c: next(iter(v)) for c, v in cols.items() if len(v) == 1} for m, cols in seen.items()}


def _resolve_method(value: str, methods: Counter[str]) -> tuple[str, bool]:
    """The method a ``peft_method`` cell names, and whether it was repaired from a truncated value."""
    if not value:
        return "full", False
    if canonical_method(value) is not None:
        return value, False
    known = sorted(m for m in methods if m and canonical_method(m) is not None)
    candidates = [m for m in known if m.startswith(value)]
    if len(candidates) == 1:
        return candidates[0], True
    raise RowError("peft_method", f"unknown peft_method {value!r} (methods in this file: {', '.join(known)})")


def _sequence_record(row: dict[str, str], task: _Task, methods: Counter[str],
                     recipes: dict[str, dict[str, str]]) -> dict[str, Any]:
    dataset = repair_dataset_name(row["finetuned_dataset"])
    score = _number(row, "eval_accuracy", required=True, what="the run has no score (line cut before it)")
    method_name, repaired = _resolve_method(row.get("peft_method", ""), methods)
    method: dict[str, Any] = {"name": method_name}
    if method_name != "full":
        cells = {c: row.get(c, "") for c in LORA_COLUMNS}
        if repaired or not any(cells.values()):
            cells = {c: cells[c] or recipes.get(method_name, {}).get(c, "") for c in LORA_COLUMNS}
        r = _number(cells, "lora_attention_dimension")
        alpha = _number(cells, "lora_alpha")
        dropout = _number(cells, "lora_dropout")
        if r is not None:
            method["lora_r"] = _as_int(r, "lora_attention_dimension")
        if alpha is not None:
            method["lora_alpha"] = alpha
        if dropout is not None:
            method["lora_dropout"] = dropout
        if cells.get("lora_bias"):
            method["config"] = {"bias": cells["lora_bias"]}
    hparams: dict[str, Any] = {"learning_rate": _number(row, "learning_rate", required=True)}
    batch = _number(row, "batch_size", required=True)
    hparams["per_device_batch_size"] = _as_int(batch, "batch_size")
    accum = _number(row, "gradient_accumulation_steps")
    if accum is not None:
        hparams["gradient_accumulation_steps"] = _as_int(accum, "gradient_accumulation_steps")
    hparams["epochs"] = _number(row, "num_train_epochs", required=True)
    if row.get("lr_scheduler_type"):
        hparams["lr_scheduler"] = row["lr_scheduler_type"]
    seed = _number(row, "seed")
    if seed is not None:
        hparams["seed"] = _as_int(seed, "seed")
    outcome: dict[str, Any] = {
        "status": "ok",
        "score": score,
        "split": "test" if dataset in NO_VALIDATION_SPLIT else "validation",
        "metrics": {"accuracy": score},
    }
    runtime = _number(row, "train_runtime")
    if runtime is not None:
        outcome["runtime_s"] = runtime
    return _assemble("text-classification", dataset, row["model"], task, method, hparams, outcome)


def _image_record(row: dict[str, str], task: _Task) -> dict[str, Any]:
    dataset = repair_dataset_name(row["finetuned_dataset"])
    score = _number(row, "eval_accuracy", required=True, what="the run has no score (line cut before it)")
    hparams: dict[str, Any] = {
        "learning_rate": _number(row, "lr", required=True),
        "per_device_batch_size": _as_int(_number(row, "batch_size", required=True), "batch_size"),
        "epochs": _number(row, "epochs", required=True),
    }
    extra: dict[str, Any] = {}
    slices = {k: row[f"{k}_slice"] for k in ("train", "val", "test") if row.get(f"{k}_slice")}
    if slices:
        extra["data_slices"] = slices
    image_size = _number(row, "input_shape")
    if image_size is not None:
        extra["image_size"] = _as_int(image_size, "input_shape")
    if extra:
        hparams["extra"] = extra
    metrics: dict[str, float] = {"accuracy": score}
    for col in ("train_loss", "eval_loss"):
        value = _number(row, col)
        if value is not None:
            metrics[col] = value
    outcome: dict[str, Any] = {"status": "ok", "score": score, "metrics": metrics}
    runtime = _number(row, "train_runtime")
    if runtime is not None:
        outcome["runtime_s"] = runtime
    return _assemble("image-classification", dataset, row["model"], task, {"name": "full"}, hparams, outcome)


def _assemble(task_type: str, dataset: str, model_id: str, task: _Task, method: dict[str, Any],
              hparams: dict[str, Any], outcome: dict[str, Any]) -> dict[str, Any]:
    data_part: dict[str, Any] = {"name": dataset}
    if task.targets.get(dataset):
        data_part["meta"] = dict(task.targets[dataset])
    return {
        "task": {"type": task_type, "primary_metric": "accuracy"},
        "dataset": data_part,
        "model": {"id": model_id, **task.models.get(model_id, {})},
        "method": method,
        "hparams": hparams,
        "outcome": outcome,
        "provenance": {"license": LICENSE},
    }


# -- cells -------------------------------------------------------------------------------------------------------


def _safe_number(cell: str | None) -> float | None:
    if cell is None or not _NUMBER.match(cell.strip()):
        return None
    value = float(cell)
    return value if math.isfinite(value) else None


def _number(row: dict[str, str], column: str, *, required: bool = False, what: str = "") -> float | None:
    """The cell as a float; None when empty; RowError when required and empty, or not a number."""
    cell = (row.get(column) or "").strip()
    if not cell or cell.lower() == "nan":
        if required:
            raise RowError(column, f"no {column}" + (f": {what}" if what else ""))
        return None
    if not _NUMBER.match(cell):
        raise RowError(column, f"{column} {cell!r} is not a number")
    value = float(cell)
    if not math.isfinite(value):
        raise RowError(column, f"{column} {cell!r} is not a finite number")
    return value


def _as_int(value: float | None, column: str) -> int | None:
    if value is None:
        return None
    if value != int(value):
        raise RowError(column, f"{column} {value!r} is not a whole number")
    return int(value)
