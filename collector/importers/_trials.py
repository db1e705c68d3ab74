"""Trials of a hyperparameter search as run records: the mapping shared by the ``optuna``, ``ray_tune`` and
``syne_tune`` importers.

A tuner keeps, for each trial, the parameters it chose, what the trial reported (values at steps), its state and its
times. Which parameter is the model, the method or the learning rate, and which dataset and task the search ran on,
are not in the tuner's files: a *mapping* says it, or the parameter names do. One mapping file format serves the
three importers (``metaml ingest PATH --mapping FILE``); YAML or JSON, every key optional::

    dataset: glue/sst2                    # the dataset every trial ran on (a parameter can name it instead)
    task: {type: text-classification, primary_metric: accuracy}    # or just  task: accuracy
    metric: eval_accuracy                 # the reported value that is the score (Optuna: objective name or index)
    budget: {attr: epoch, max: 4}         # what a scheduler measured trials by, and a full trial's value of it
                                          # (max may name a parameter: max: num_epochs)
    params:                               # parameter -> record field, or drop
      lr: hparams.learning_rate
      backbone: model.id
      peft: {field: method.name, values: {true: lora, false: full}}
      trial_dir: drop
    set:                                  # record field -> the same value for every trial
      method.name: lora
      hparams.epochs: 3
    infer: true                           # map the parameters not named above by their names (INFERRED)

Fields are dotted paths into the run record's ``task``, ``dataset``, ``model``, ``method``, ``hparams`` and
``hardware`` parts, plus ``hparams.extra.<key>`` and ``method.config.<key>``. Nested parameters (Ray Tune's
``{"train_loop_config": {"lr": ...}}``) are flattened with ``/`` (``train_loop_config/lr``); a mapping names them so,
and inference looks at the last part. A parameter neither mapped nor inferred goes to ``hparams.extra`` under its
flat name: the search varied it, so it is part of what defines the trial. A method parameter may hold a label as the
metaml service writes it (``lora(lora_r=8, lora_alpha=16)``): its name and its settings are both read.

Precedence: what the tuner's own attributes say (e.g. an Optuna study's ``dataset`` user attribute) < inferred
parameters < mapped parameters < ``set``. Without a method, ``lora`` when a LoRA rank is set, else ``full``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from collector.errors import FormatError
from collector.formats._base import Format, RecordProblem
from collector.importers._failures import clip_message, error_kind
from collector.schema import RunRecord
from collector.schema._vocab import METRICS, canonical_metric

#: Parameter name (lower case, last part of a nested name) -> record field, for parameters a mapping does not name.
INFERRED: dict[str, str] = {
    **dict.fromkeys(("model", "model_id", "model_name", "model_name_or_path", "checkpoint", "pretrained_model",
                     "base_model", "backbone"), "model.id"),
    **dict.fromkeys(("method", "peft", "peft_type", "peft_method", "finetuning_method", "fine_tuning_method",
                     "adaptation"), "method.name"),
    **dict.fromkeys(("dataset", "dataset_name", "task_name"), "dataset.name"),
    **dict.fromkeys(("learning_rate", "lr"), "hparams.learning_rate"),
    **dict.fromkeys(("batch_size", "train_batch_size", "total_batch_size", "effective_batch_size"),
                    "hparams.batch_size"),
    **dict.fromkeys(("per_device_train_batch_size", "per_device_batch_size"), "hparams.per_device_batch_size"),
    **dict.fromkeys(("gradient_accumulation_steps", "grad_accum", "accumulation_steps"),
                    "hparams.gradient_accumulation_steps"),
    **dict.fromkeys(("epochs", "num_epochs", "num_train_epochs", "n_epochs"), "hparams.epochs"),
    **dict.fromkeys(("max_steps", "num_steps", "training_steps"), "hparams.max_steps"),
    "warmup_ratio": "hparams.warmup_ratio",
    "warmup_steps": "hparams.warmup_steps",
    **dict.fromkeys(("weight_decay", "wd"), "hparams.weight_decay"),
    **dict.fromkeys(("lr_scheduler", "lr_scheduler_type", "scheduler"), "hparams.lr_scheduler"),
    **dict.fromkeys(("optimizer", "optim"), "hparams.optimizer"),
    **dict.fromkeys(("max_seq_length", "max_length", "max_seq_len", "max_source_length"), "hparams.max_seq_length"),
    **dict.fromkeys(("dropout", "hidden_dropout_prob", "dropout_rate"), "hparams.dropout"),
    **dict.fromkeys(("label_smoothing", "label_smoothing_factor"), "hparams.label_smoothing"),
    **dict.fromkeys(("seed", "random_seed"), "hparams.seed"),
    "precision": "hparams.precision",
    **dict.fromkeys(("lora_r", "lora_rank", "r", "rank"), "method.lora_r"),
    "lora_alpha": "method.lora_alpha",
    "lora_dropout": "method.lora_dropout",
    "target_modules": "method.target_modules",
    **dict.fromkeys(("n_frozen_layers", "num_frozen_layers", "frozen_layers"), "method.n_frozen_layers"),
    **dict.fromkeys(("num_virtual_tokens", "n_virtual_tokens"), "method.n_virtual_tokens"),
    **dict.fromkeys(("reduction_factor", "adapter_reduction_factor"), "method.adapter_reduction_factor"),
}

#: Record parts a mapping may write, with the model that defines their fields.
PARTS: tuple[str, ...] = ("task", "dataset", "model", "method", "hparams", "hardware")
#: Free-form mappings a field path may reach into.
OPEN_FIELDS = {("hparams", "extra"), ("method", "config")}
MAPPING_KEYS = frozenset({"dataset", "task", "metric", "budget", "params", "set", "infer"})
DROP = "drop"
_LABEL = re.compile(r"^\s*(?P<name>[A-Za-z][\w\-]*)\s*\((?P<args>.*)\)\s*$")
#: Reported keys that are a metric's bookkeeping, not a metric of the model (never curves nor ``outcome.metrics``).
NOT_METRICS = frozenset({"epoch", "step", "training_iteration", "iterations_since_restore", "timestamp",
                         "time_this_iter_s", "time_total_s", "time_since_restore", "pid", "done",
                         "learning_rate", "lr", "grad_norm", "total_flos", "trial_id"})


#: A trial that cannot become a record (with the record field concerned).
TrialProblem = RecordProblem


@dataclass(frozen=True)
class ParamRule:
    """Where one parameter goes: a record field (or ``drop``), with an optional translation of its values."""

    field: str
    values: Mapping[str, Any] | None = None

    def apply(self, value: Any) -> Any:
        if self.values is None:
            return value
        key = json.dumps(value) if isinstance(value, bool) else str(value)
        if key in self.values:
            return self.values[key]
        raise TrialProblem(self.field, f"value {value!r} is not one of the mapping's values "
                                       f"({', '.join(map(str, self.values))})")


@dataclass(frozen=True)
class Budget:
    """What a scheduler measured trials by (a reported key such as ``epoch`` or ``training_iteration``) and a full
    trial's value of it: a number, or the name of a parameter (or record field) holding each trial's own."""

    attr: str
    max: float | str | None = None


@dataclass(frozen=True)
class TrialMapping:
    """How trials become records (see the module docstring for the file format)."""

    params: Mapping[str, ParamRule] = field(default_factory=dict)
    constants: Mapping[str, Any] = field(default_factory=dict)
    metric: str | None = None
    budget: Budget | None = None
    infer: bool = True

    @classmethod
    def load(cls, source: str | Path | Mapping[str, Any] | TrialMapping | None) -> TrialMapping:
        """A mapping from a YAML/JSON file, a dict in the file's shape, or None (infer everything).

        Raises:
            FormatError: the file cannot be read, or names an unknown key or record field.
        """
        if source is None:
            return cls()
        if isinstance(source, TrialMapping):
            return source
        uri = None
        if isinstance(source, str | Path):
            uri = str(source)
            source = _read_mapping_file(Path(source))
        if not isinstance(source, Mapping):
            raise FormatError("a mapping is an object (dataset, task, metric, budget, params, set, infer)", uri=uri)
        try:
            return _parse(source)
        except ValueError as e:
            raise FormatError(f"bad mapping: {e}", uri=uri) from None

    @property
    def primary_metric(self) -> str | None:
        """The primary metric the mapping declares (``task.primary_metric``), canonical, or None."""
        value = self.constants.get("task.primary_metric")
        return canonical_metric(str(value)) if value else None

    def configuration(self, params: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The ``task``, ``dataset``, ``model``, ``method``, ``hparams`` (and ``hardware``) parts of a trial's
        record, from its parameters (nested ones flattened with ``/``) and ``defaults`` (field path -> value, what
        the tuner itself says, lowest precedence).

        Raises:
            TrialProblem: no dataset, no model, or a value the mapping cannot translate.
        """
        flat = flatten(params)
        layers: list[dict[str, Any]] = [dict(defaults or {}), {}, {}, dict(self.constants)]
        extra: dict[str, Any] = {}
        for name, value in flat.items():
            rule = self.params.get(name)
            if rule is not None:
                if rule.field != DROP:
                    layers[2][rule.field] = rule.apply(value)
                continue
            inferred = INFERRED.get(name.rsplit("/", 1)[-1].lower()) if self.infer else None
            if inferred is not None:
                layers[1].setdefault(inferred, value)
            elif value is not None and _scalar_or_list(value):
                extra[name] = value
        merged: dict[str, Any] = {f"hparams.extra.{k}": v for k, v in extra.items()}
        for layer in layers:
            merged.update({k: v for k, v in layer.items() if v is not None})
        return _nest(merged)

    def full_budget(self, parts: Mapping[str, Any], params: Mapping[str, Any],
                    default: float | None = None) -> float | None:
        """A full trial's value of the budget attribute for this trial: the mapping's ``budget.max`` (a number, or
        the parameter or record field it names), else ``default`` (what the tuner itself says)."""
        if self.budget is None or self.budget.max is None:
            return default
        if isinstance(self.budget.max, int | float):
            return float(self.budget.max)
        value = flatten(params).get(self.budget.max)
        if value is None and "." in self.budget.max:
            part, _, key = self.budget.max.partition(".")
            value = (parts.get(part) or {}).get(key)
        return finite_number(value)


class TrialFormat(Format):
    """A tuner's format: it reads trials and takes a mapping (a file, a dict in the file's shape, or a
    :class:`TrialMapping`; None infers everything from parameter names)."""

    def __init__(self, mapping: str | Path | Mapping[str, Any] | TrialMapping | None = None) -> None:
        self.mapping = TrialMapping.load(mapping)


# -- outcome -------------------------------------------------------------------------------------------------------


@dataclass
class TrialResult:
    """What a trial came to, in the tuner's terms: ``status`` ok / failed / stopped, the final reported values
    (``values``: key -> number, for ok trials), the curve (``(step, epoch, key, value)`` rows, keys as reported),
    runtime in seconds and, for failures, the error text."""

    status: str
    values: dict[str, float] = field(default_factory=dict)
    curve: list[tuple[int | None, float | None, str, float]] = field(default_factory=list)
    runtime_s: float | None = None
    error: str | None = None


def trial_record(parts: dict[str, Any], result: TrialResult, metric_key: str | None, *,
                 higher_is_better: bool | None = None, split: str | None = None) -> dict[str, Any]:
    """The run record of a trial: its configuration ``parts`` (from :meth:`TrialMapping.configuration`) and what it
    came to. ``metric_key`` is the reported key (or objective name) whose value is the score; metric names in
    ``outcome.metrics`` and the curve are canonical (``eval_accuracy`` -> ``accuracy``). ``higher_is_better`` (the
    search's direction) declares the direction of a metric the vocabulary does not know, on an unbounded scale.

    Raises:
        TrialProblem: no primary metric can be named, or an ok trial never reported it.
    """
    record = {part: parts.get(part, {}) for part in ("task", "dataset", "model", "method", "hparams")}
    if parts.get("hardware"):
        record["hardware"] = parts["hardware"]
    _require(record)
    task = record["task"]
    primary = task.get("primary_metric") or (canonical_metric(metric_key) if metric_key else None)
    if not primary:
        raise TrialProblem("task.primary_metric", "the search does not say which metric its value is: set "
                           "task.primary_metric (or metric) in the mapping")
    task["primary_metric"] = primary
    if canonical_metric(primary) not in METRICS and higher_is_better is not None:
        task.setdefault("higher_is_better", higher_is_better)
        task.setdefault("metric_scale", "unbounded")
    outcome: dict[str, Any] = {"status": result.status}
    if result.status == "ok":
        key = metric_key or primary
        value = result.values.get(key)
        if not _finite(value):
            reported = ", ".join(sorted(result.values)) or "nothing"
            raise TrialProblem("outcome.score", f"the trial finished without a finite {key!r} (value {value!r}); "
                                                f"it reported: {reported}")
        outcome["score"] = value
        outcome["metrics"] = {_metric_name(k): v for k, v in result.values.items() if _finite(v) and is_metric(k)}
    elif result.status == "failed":
        message = result.error or "the trial failed (no error text kept)"
        outcome["error_kind"] = error_kind(message)
        outcome["error_message"] = clip_message(message)
    if split:
        outcome["split"] = split
    if result.runtime_s is not None and _finite(result.runtime_s) and result.runtime_s >= 0:
        outcome["runtime_s"] = result.runtime_s
    curve = [{"step": step, "epoch": epoch, "metric": _metric_name(key), "value": value}
             for step, epoch, key, value in result.curve if _finite(value) and is_metric(key)]
    if curve:
        outcome["curve"] = [{k: v for k, v in p.items() if v is not None} for p in curve]
    record["outcome"] = outcome
    record["provenance"] = {}
    return record


def is_metric(key: str) -> bool:
    """Whether a reported key is a metric of the model (not a tuner's bookkeeping nor a metaml decision)."""
    return key not in NOT_METRICS and not key.startswith(("metaml_", "st_", "config/", "config_"))


def budget_reached(reports: Iterable[Mapping[str, Any]], attr: str | None) -> float | None:
    """The most of the budget attribute ``attr`` a trial's reports reached (None when they never report it)."""
    if not attr:
        return None
    return max((v for r in reports if (v := finite_number(r.get(attr))) is not None), default=None)


def stopped_early(reached: float | None, full: float | None) -> bool:
    """Whether a trial that reached ``reached`` of its budget attribute, out of ``full``, ended before its budget."""
    return reached is not None and full is not None and reached < full


# -- helpers -------------------------------------------------------------------------------------------------------


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested parameters as one level, names joined with ``/`` (Ray Tune's own spelling)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}/"))
        else:
            out[name] = value
    return out


def numeric_items(values: Mapping[str, Any]) -> Iterable[tuple[str, float]]:
    """The finite numbers among reported values (booleans excluded)."""
    for key, value in values.items():
        if _finite(value):
            yield key, float(value)


def _metric_name(key: str) -> str:
    """A reported key as the record names the metric: ``eval_accuracy`` -> ``accuracy``; a validation loss keeps its
    prefix so that it stays apart from the training ``loss``; unknown keys stay as reported."""
    if key.lower() in ("eval_loss", "val_loss", "validation_loss"):
        return key
    name = canonical_metric(key)
    return name if name in METRICS else key


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def finite_number(value: Any) -> float | None:
    """``value`` as a float when it is a finite number (booleans are not), else None."""
    return float(value) if _finite(value) else None


def _scalar_or_list(value: Any) -> bool:
    return isinstance(value, str | int | float | bool | list | tuple)


def _require(record: dict[str, Any]) -> None:
    if not record["dataset"].get("name"):
        raise TrialProblem("dataset.name", "no dataset: name it in the mapping (dataset: glue/sst2) or as a "
                                           "parameter or attribute called dataset")
    if not record["model"].get("id"):
        raise TrialProblem("model.id", "no model: map the parameter that holds it (params: {NAME: model.id}) or "
                                       "fix it in the mapping (set: {model.id: roberta-base})")
    method = record["method"]
    if not method.get("name"):
        method["name"] = "lora" if method.get("lora_r") is not None else "full"


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"hparams.learning_rate": 1e-4}`` -> ``{"hparams": {"learning_rate": 1e-4}}``; method labels expanded."""
    out: dict[str, Any] = {}
    for path, value in flat.items():
        parts = path.split(".")
        if parts[:2] == ["method", "name"] and isinstance(value, str) and _LABEL.match(value):
            name, settings = _parse_label(value)
            method = out.setdefault("method", {})
            method["name"] = name
            for key, setting in settings.items():
                if key in _fields("method"):
                    method.setdefault(key, setting)
                else:
                    method.setdefault("config", {}).setdefault(key, setting)
            continue
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def _parse_label(label: str) -> tuple[str, dict[str, Any]]:
    """``lora(lora_r=8, lora_alpha=16.0)`` -> ``("lora", {"lora_r": 8, "lora_alpha": 16.0})``."""
    match = _LABEL.match(label)
    assert match is not None
    settings: dict[str, Any] = {}
    for item in match.group("args").split(","):
        key, sep, raw = item.partition("=")
        if not sep:
            continue
        raw = raw.strip()
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        settings[key.strip()] = value
    return match.group("name"), settings


def _fields(part: str) -> dict[str, Any]:
    annotation = RunRecord.model_fields[part].annotation
    assert isinstance(annotation, type) and issubclass(annotation, BaseModel)
    return annotation.model_fields


def check_field(path: str) -> str:
    """``path`` if it names a field a mapping may write (see the module docstring), else ValueError."""
    parts = path.split(".")
    if parts[0] not in PARTS:
        raise ValueError(f"{path!r}: a field starts with one of {', '.join(PARTS)}")
    if len(parts) == 3 and tuple(parts[:2]) in OPEN_FIELDS and parts[2]:
        return path
    if len(parts) != 2 or parts[1] not in _fields(parts[0]):
        known = ", ".join(f"{parts[0]}.{f}" for f in _fields(parts[0]) if f not in ("meta", "kind"))
        raise ValueError(f"{path!r} is not a record field; {parts[0]} has {known}")
    return path


def _read_mapping_file(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise FormatError(f"cannot read the mapping: {e}", uri=str(path)) from None
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise FormatError(f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}", uri=str(path)) from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise FormatError(f"invalid YAML: {e}", uri=str(path)) from None


def _parse(raw: Mapping[str, Any]) -> TrialMapping:
    unknown = sorted(set(raw) - MAPPING_KEYS)
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)}; a mapping has {', '.join(sorted(MAPPING_KEYS))}")
    constants: dict[str, Any] = {}
    dataset = raw.get("dataset")
    if isinstance(dataset, Mapping):
        constants.update({check_field(f"dataset.{k}"): v for k, v in dataset.items()})
    elif dataset is not None:
        constants["dataset.name"] = str(dataset)
    task = raw.get("task")
    if isinstance(task, Mapping):
        constants.update({check_field(f"task.{k}"): v for k, v in task.items()})
    elif task is not None:
        constants["task.primary_metric"] = str(task)
    sets = raw.get("set") or {}
    if not isinstance(sets, Mapping):
        raise ValueError("set: expected field: value pairs")
    constants.update({check_field(str(k)): v for k, v in sets.items()})
    params: dict[str, ParamRule] = {}
    for name, target in (raw.get("params") or {}).items():
        if isinstance(target, str):
            params[str(name)] = ParamRule(target if target == DROP else check_field(target))
        elif isinstance(target, Mapping) and isinstance(target.get("field"), str):
            values = target.get("values")
            if values is not None and not isinstance(values, Mapping):
                raise ValueError(f"params.{name}.values: expected value: replacement pairs")
            translated = {(json.dumps(k) if isinstance(k, bool) else str(k)): v for k, v in (values or {}).items()}
            params[str(name)] = ParamRule(check_field(target["field"]), translated if values is not None else None)
        else:
            raise ValueError(f"params.{name}: expected a record field or {{field: ..., values: {{...}}}}")
    budget = raw.get("budget")
    parsed_budget = None
    if budget is not None:
        if not isinstance(budget, Mapping) or not isinstance(budget.get("attr"), str):
            raise ValueError("budget: expected {attr: <reported key>, max: <number or parameter>}")
        maximum = budget.get("max")
        if maximum is not None and not isinstance(maximum, int | float | str):
            raise ValueError("budget.max: expected a number or a parameter name")
        parsed_budget = Budget(budget["attr"], maximum)
    metric = raw.get("metric")
    infer = raw.get("infer", True)
    if not isinstance(infer, bool):
        raise ValueError("infer: expected true or false")
    return TrialMapping(params, constants, str(metric) if metric is not None else None, parsed_budget, infer)
