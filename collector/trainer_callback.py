"""Record every Hugging Face ``Trainer`` run into the metaml knowledge base.

```python
from collector.trainer_callback import MetamlCallback
from metaml_client import Client

callback = MetamlCallback("glue/sst2", client=Client(url, api_key="mk_..."), train_data=raw_train_split)
trainer = Trainer(model, args, train_dataset=tokenized_train, eval_dataset=tokenized_dev,
                  compute_metrics=accuracy, callbacks=[callback])
trainer.train()
callback.record          # the run record (nested dict), also written to <output_dir>/metaml_run.json
callback.upload_result   # the server's answer (UploadResult), or None
```

When training ends, on the main process only, the callback builds one run record (:func:`build_record`, usable
without a ``Trainer``) and hands it to its sinks. Nothing it does raises into the training loop: every problem is a
:class:`MetamlCallbackWarning`.

What the record holds:

* ``dataset``: the name given; ``n_train_used`` = rows of the training data; ``meta`` = meta-features of the
  training texts and labels (``collector.features.compute_meta_features``, or the service's describe endpoint through
  the client when local computation is not possible). The texts come from ``train_data`` (a ``datasets.Dataset`` or
  anything with ``column_names``/``columns`` and column access, a dict of columns, a list of row dicts, or a
  ``(texts, labels)`` / ``(texts, labels, text_pairs)`` tuple), else from the Trainer's training dataset when its rows
  still hold raw text (the Trainer drops unused columns of a ``datasets.Dataset``, so pass the raw split then).
  Columns are found by name like ``metaml describe`` does (``text``, ``sentence``, ``sentence1``/``sentence2``...,
  ``label``, ``labels``...) unless named.
* ``model``: the id given, else the config's ``_name_or_path`` (a local path gives its last component; a model built
  from a config alone gives its ``model_type``); features from the config (``collector.features``: family,
  architecture type, base-model parameter count, layers, width, heads, vocabulary, positions). ``n_params`` follows
  the knowledge base's convention (base model, no task head): counted analytically for known families, else from the
  live backbone's parameters.
* ``method``: a PEFT model (``peft.PeftModel`` or a model with a ``peft_config``) -> the active adapter's config,
  mapped as the ``hf_trainer`` importer maps ``adapter_config.json`` (lora: ``lora_r``, ``lora_alpha``,
  ``lora_dropout``, ``target_modules``; prompt/prefix tuning: ``n_virtual_tokens``; the rest in ``method.config``).
  A plain model -> from ``requires_grad``: ``full`` when the whole backbone trains, ``bitfit`` when only its biases
  do, ``linear_probe`` when none of it does, ``partial_freeze`` otherwise (``n_frozen_layers`` = leading encoder layers
  frozen whole). ``trainable_params`` is counted in every case.
* ``hparams``: from ``TrainingArguments`` through the mapping the Trainer's model card and the importer share
  (learning rate, per-device and effective batch size, accumulation, epochs or ``max_steps``, warmup, scheduler,
  optimizer with its betas/epsilon in ``extra``, seed, fp16), plus weight decay, precision (``bf16``, ``fp16`` or
  ``fp32``) and ``max_seq_length`` when given; ``extra`` also gets ``total_steps``, ``total_flos`` and what
  ``extra_hparams`` adds.
* ``outcome``: ``metrics`` from the last evaluation in ``state.log_history`` (``eval_`` stripped, canonical names),
  ``score`` = the primary metric (``primary_metric``, else ``args.metric_for_best_model``, else accuracy, else the
  importer's preference order among what was reported; percent values are declared and normalized), ``runtime_s`` =
  ``train_runtime``, ``peak_memory_gb`` (see :class:`MetamlCallback`), ``curve`` = training loss and evaluation
  metrics by step and epoch. ``status`` is ``failed`` with ``error_kind = "diverged"`` when a logged loss, the final
  training or evaluation loss, or a trainable parameter at the end is NaN/inf.
* ``hardware``: the accelerator (``torch.cuda.get_device_name`` or ``cpu``) and how many were used, the CPU, the
  machine's memory, software versions (``pytorch``, ``transformers``, ``peft``, ``accelerate``, ``python``).
* ``provenance``: source ``trainer_callback``, locator = ``output_dir``, the uploader given (the server replaces it
  with its API key's name, and the source with ``upload:<key name>`` unless the key is an admin key).

Stopping early: with ``stop=StopRule(incumbent=...)`` and a ``client`` that has ``decide_curve``
(:class:`metaml_client.Client`), after each evaluation the callback sends the primary metric's evaluations so far
(by step, against the Trainer's planned ``max_steps``) to the service's ``/v1/decide/curve`` with the search's best
final score so far (and its finished runs' curves, when given); when the answer is stop, training stops
(``control.should_training_stop``) and the record is stored with ``outcome.status = "stopped"``: no score, its curve
kept. A failed request never stops training (it warns). :attr:`MetamlCallback.decisions` holds every answer.

Sinks: ``client=`` posts the record (:meth:`Client.upload_runs`, the key needs the ``write`` scope); ``kb=`` validates
and appends it to a local DuckDB knowledge base through the collector's ingestion pipeline. The record is always
written to ``<output_dir>/metaml_run.json``. A record the server or the pipeline rejects is reported with the reason.
When posting fails (server unreachable, an error answer after the client's retries), the record is appended to
``<output_dir>/metaml_spool.jsonl`` and a warning names the file; ``Client.upload_runs(path)`` or
``metaml ingest PATH`` sends it later.

Dependencies: this module imports ``transformers`` (the ``train`` extra). Building a record reuses the mapping of the
``hf_trainer`` importer and the collector's feature extractors, imported when training ends. ``client=`` is any object
with the :class:`RunClient` methods (:class:`metaml_client.Client` has them); the collector does not import the
client package.
"""

from __future__ import annotations

import contextlib
import copy
import enum
import json
import logging
import math
import os
import platform
import random
import re
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Protocol

import transformers
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

if TYPE_CHECKING:
    from collector.ingest import IngestReport

__all__ = ["RECORD_FILE", "SOURCE", "SPOOL_FILE", "MetamlCallback", "MetamlCallbackWarning", "RunClient", "StopRule",
           "build_record"]

#: ``provenance.source`` of the records this module builds.
SOURCE = "trainer_callback"
#: File in ``output_dir`` that receives every record built.
RECORD_FILE = "metaml_run.json"
#: File in ``output_dir`` that receives the records that could not be posted (JSON Lines, appended).
SPOOL_FILE = "metaml_spool.jsonl"
#: Most rows sent to the describe endpoint (a seeded sample of larger training sets; the server's default limit).
MAX_DESCRIBE_ROWS = 20_000
FEATURE_MODES = ("auto", "local", "server", "none")

_GIB = 2**30
_LAYER_INDEX = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.")
_EMBEDDING = re.compile(r"(?:^|\.)(?:embeddings?|wte|wpe|embed_tokens|embed_positions|shared)(?:\.|$)")

logger = logging.getLogger(__name__)


class RunClient(Protocol):
    """What the callback needs of a service client (:class:`metaml_client.Client` provides both)."""

    def upload_runs(self, records: Any, **kwargs: Any) -> Any: ...

    def describe_dataset(self, texts: Any = None, labels: Any = None, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class StopRule:
    """When the callback stops a run from its partial learning curve (see the module docstring).

    Attributes:
        incumbent: the best final score so far in the search, on the normalized scale (0.91, not 91).
        history: the search's finished runs, as :meth:`metaml_client.Client.decide_curve` takes them (dicts with
            ``curve`` ({step: value}), ``score`` and ``total_steps``).
        max_false_stop: stop only when P(final > incumbent + tolerance) is below this (the stated error rate).
        tolerance: continue only runs that may finish this much above the incumbent.
        min_progress: never stop before this share of the planned steps.
        min_history: never stop with fewer finished runs in ``history``.
    """

    incumbent: float
    history: Sequence[Mapping[str, Any]] = ()
    max_false_stop: float = 0.05
    tolerance: float = 0.0
    min_progress: float = 0.0
    min_history: int = 0


class MetamlCallbackWarning(UserWarning):
    """A run could not be recorded completely: no evaluation, no texts, a rejected record, a failed upload."""


def _warn(message: str) -> None:
    warnings.warn(message, MetamlCallbackWarning, stacklevel=3)


# --------------------------------------------------------------------------------------------------------- the record


def build_record(
    args: TrainingArguments,
    state: TrainerState,
    model: Any,
    *,
    dataset: str,
    train_data: Any = None,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str | None = None,
    model_id: str | None = None,
    task_type: str | None = None,
    primary_metric: str | None = None,
    split: str = "validation",
    max_seq_length: int | None = None,
    extra_hparams: Mapping[str, Any] | None = None,
    features: str = "auto",
    client: RunClient | None = None,
    domain: str | None = None,
    landmark_sample: int = 2000,
    uploader: str | None = None,
    peak_memory_gb: float | None = None,
    runtime_s: float | None = None,
) -> dict[str, Any]:
    """The run record of a finished training, in the nested record shape (a JSON-ready dict, not yet validated).

    Args:
        args: the run's training arguments.
        state: the trainer's state after training (its ``log_history`` holds the losses and evaluations).
        model: the trained model (a ``transformers`` model or a PEFT model wrapping one).
        dataset: the dataset's name (canonicalized, e.g. ``SST-2`` -> ``glue/sst2``).
        train_data: the training data with raw texts and labels (see the module docstring for the shapes read);
            ``None`` leaves ``dataset.meta`` and ``n_train_used`` empty.
        text_column: the text column (found by name when not given); ``text_pair_column`` the second text of pairs.
        label_column: the label column (found by name when not given).
        model_id: the starting checkpoint's id (default: from the model's config).
        task_type: the record's ``task.type`` (default: from the model class, e.g. ``...ForSequenceClassification`` ->
            ``text-classification``; ``text-regression`` for a one-output regression head).
        primary_metric: the metric ``outcome.score`` is (default: ``args.metric_for_best_model``, else accuracy).
            A metric the knowledge base does not know is declared unbounded, its direction taken from
            ``args.greater_is_better`` (higher is better when unset).
        split: the evaluation split the metrics are on.
        max_seq_length: the tokenizer's truncation length, when the caller knows it.
        extra_hparams: added to ``hparams.extra`` (they are part of the run's identity).
        features: ``auto`` (compute the meta-features locally, else ask the service), ``local``, ``server``, ``none``.
        client: the client ``server`` features are asked through.
        domain: the dataset's domain (news, reviews, social...), passed to the meta-features.
        landmark_sample: rows of the TF-IDF landmark feature (0 skips it).
        uploader: ``provenance.uploader``.
        peak_memory_gb: the peak memory measured by the caller (default: measured now, see :class:`MetamlCallback`).
        runtime_s: training wall-clock seconds, when ``log_history`` has no ``train_runtime``.

    Returns:
        The record. A run without any evaluation gets no score: validation will reject it with that reason.

    Raises:
        ValueError: an unknown ``features`` mode.
        ImportError: ``collector`` (this project's own package) cannot be imported.
    """
    if features not in FEATURE_MODES:
        raise ValueError(f"features must be one of {', '.join(FEATURE_MODES)}, not {features!r}")
    from collector.importers import hf_trainer as hf
    from collector.importers._trainer_card import metric_name
    from collector.schema import canonical_dataset, metric_info

    log = [e for e in (state.log_history or []) if isinstance(e, Mapping)]
    final_eval = next((dict(e) for e in reversed(log) if _is_eval_entry(e, hf)), {})
    summary = next((dict(e) for e in reversed(log) if "train_runtime" in e), {})
    state_part = {"log_history": log, "global_step": state.global_step, "total_flos": state.total_flos}
    parsed = hf._Parsed(eval=final_eval, train=summary, state=state_part)

    metrics, bad, extra = hf._eval_metrics(parsed)
    outcome: dict[str, Any] = {"status": "ok", "split": split}
    dataset_part: dict[str, Any] = {"name": canonical_dataset(dataset)}
    hf._train_part(parsed, metrics, bad, outcome, dataset_part, extra)
    hf._state_extra(state_part, extra)
    if outcome.get("runtime_s") is None and runtime_s is not None:
        outcome["runtime_s"] = runtime_s

    primary = _primary(primary_metric, args, metrics, bad, hf, metric_name)
    if not final_eval:
        _warn("no evaluation in the trainer's log history (set eval_strategy and an eval_dataset, or evaluate "
              "before training ends): the record has no score and will be rejected")
    hf._failure(metrics, bad, primary, outcome)
    divergence = _divergence(log, model)
    if divergence:
        outcome["status"], outcome["error_kind"] = "failed", "diverged"
        outcome["error_message"] = "; ".join(filter(None, [outcome.get("error_message"), divergence]))

    base = _base_model(model)
    config = _config_dict(base)
    model_part = _model_part(model, base, config, model_id, hf)
    method = _method(model, hf)
    hparams = _hparams(args, hf, max_seq_length, extra)
    if extra_hparams:
        hparams.setdefault("extra", {}).update(_jsonable(dict(extra_hparams)))

    data = _TrainData.find(train_data, text_column, text_pair_column, label_column)
    if data is not None:
        dataset_part["n_train_used"] = data.n_rows
        meta = _meta_features(data, features, client, domain, landmark_sample, args.seed)
        if meta:
            dataset_part["meta"] = meta

    memory = peak_memory_gb if peak_memory_gb is not None else _peak_memory_gb(args)
    if memory is not None:
        outcome["peak_memory_gb"] = memory
    hardware = _hardware(args)
    if outcome.get("runtime_s") and hardware.get("accelerator") not in (None, "cpu"):
        outcome["gpu_hours"] = outcome["runtime_s"] * (hardware.get("accelerator_count") or 1) / 3600

    task: dict[str, Any] = {"type": task_type or _task_type(base, config, hf), "primary_metric": primary}
    if metric_info(primary) is None:
        task["metric_scale"] = "unbounded"
        task["higher_is_better"] = args.greater_is_better is not False
    provenance: dict[str, Any] = {"source": SOURCE, "locator": str(Path(args.output_dir).resolve())
                                  if args.output_dir else None}
    if uploader:
        provenance["uploader"] = uploader
    record = {"task": task, "dataset": dataset_part, "model": model_part, "method": method, "hparams": hparams,
              "outcome": outcome, "hardware": hardware, "provenance": provenance}
    curve = hf._state_curve(state_part)
    draft = hf._Draft(data=record, locator=provenance["locator"] or SOURCE, metrics=metrics, primary=primary,
                      curve=curve, own_percent=hf._own_percent(metrics), group=None)
    return _jsonable(hf._finalize(draft, draft.own_percent, provenance["locator"] or SOURCE).data)


def _is_eval_entry(entry: Mapping[str, Any], hf: Any) -> bool:
    return any(k.startswith("eval_") and not hf._EVAL_NON_METRICS.search(k[5:]) and k != "eval_samples"
               for k in entry)


def _primary(given: str | None, args: TrainingArguments, metrics: dict[str, float], bad: list[str], hf: Any,
             metric_name: Any) -> str:
    """The primary metric: the one given, else ``metric_for_best_model``, else accuracy, else the first reported of
    the importer's preference order."""
    if given:
        return metric_name(given)
    reported = set(metrics) | set(bad)
    for candidate in (args.metric_for_best_model, "accuracy"):
        if candidate and metric_name(candidate) in reported:
            return metric_name(candidate)
    fallback = hf._generic_primary(None, metrics, bad)
    if fallback is not None:
        return fallback
    return metric_name(args.metric_for_best_model) if args.metric_for_best_model else "accuracy"


def _divergence(log: list[Mapping[str, Any]], model: Any) -> str | None:
    """Why the run diverged: a non-finite loss logged during training (the Trainer filters NaN steps out of its
    logged averages by default, so the weights are checked too), or non-finite trainable parameters at the end."""
    for entry in log:
        value = entry.get("loss")
        if isinstance(value, int | float) and not math.isfinite(value):
            return f"non-finite training loss logged at step {entry.get('step')}"
    try:
        import torch

        for name, p in model.named_parameters():
            if p.requires_grad and not bool(torch.isfinite(p.detach()).all()):
                return f"non-finite trainable parameters at the end of training ({name})"
    except (AttributeError, ImportError, RuntimeError, TypeError):
        return None
    return None


# ------------------------------------------------------------------------------------------------------------ model


def _is_peft(model: Any) -> bool:
    return isinstance(getattr(model, "peft_config", None), Mapping) and bool(model.peft_config)


def _base_model(model: Any) -> Any:
    """The ``transformers`` model under a PEFT wrapper (the model itself otherwise)."""
    getter = getattr(model, "get_base_model", None)
    if _is_peft(model) and callable(getter):
        return getter()
    return model


def _config_dict(model: Any) -> dict[str, Any]:
    config = getattr(model, "config", None)
    if config is None:
        return {}
    if isinstance(config, Mapping):
        return dict(config)
    try:
        return dict(config.to_dict())
    except (AttributeError, TypeError):
        return {}


def _model_part(model: Any, base: Any, config: dict[str, Any], model_id: str | None, hf: Any) -> dict[str, Any]:
    mid = model_id
    if not mid:
        found, _path = hf._generic_model(hf._Parsed(config=config), None)
        mid = found or str(config.get("model_type") or type(base).__name__)
    out: dict[str, Any] = {"id": mid}
    basic = {"family": config.get("model_type"), "n_layers": config.get("num_hidden_layers"),
             "hidden_size": config.get("hidden_size"), "n_heads": config.get("num_attention_heads"),
             "vocab_size": config.get("vocab_size"), "max_positions": config.get("max_position_embeddings")}
    exact = False
    try:
        from collector.features import count_parameters, model_features_from_config

        out.update(model_features_from_config(config, model_id=mid))
        count = count_parameters(config)
        exact = count is not None and count.exact
    except Exception as e:  # any failure leaves the basic fields
        _warn(f"model features could not be computed from the config ({type(e).__name__}: {e}); "
              "the basic config fields are recorded")
        out.update({k: v for k, v in basic.items() if v is not None})
    if not exact:
        live = _backbone_params(model, base)
        if live:
            out["n_params"] = live
    return _jsonable(out)


def _backbone_params(model: Any, base: Any) -> int | None:
    """Parameters of the live backbone (``base_model``, no task head), adapters left out."""
    backbone = getattr(base, "base_model", base)
    prefix = getattr(getattr(model, "base_model", None), "prefix", None) if _is_peft(model) else None
    markers = tuple(m for m in (prefix, "lora_", "modules_to_save") if m)
    try:
        return sum(p.numel() for n, p in backbone.named_parameters() if not any(m in n for m in markers)) or None
    except AttributeError:
        return None


def _task_type(base: Any, config: dict[str, Any], hf: Any) -> str:
    architectures = [type(base).__name__, *(config.get("architectures") or [])]
    kind = hf._generic_task_type(hf._Parsed(config={"architectures": architectures}), None)
    n_labels = len(config.get("id2label") or {}) or config.get("num_labels")
    if kind == "text-classification" and (config.get("problem_type") == "regression"
                                          or (n_labels == 1 and not config.get("problem_type"))):
        return "text-regression"
    return kind


# ----------------------------------------------------------------------------------------------------------- method


def _method(model: Any, hf: Any) -> dict[str, Any]:
    params = list(model.named_parameters())
    trainable = sum(p.numel() for _, p in params if p.requires_grad)
    if _is_peft(model):
        name = getattr(model, "active_adapter", None)
        name = name[0] if isinstance(name, list | tuple) and name else name
        cfg = model.peft_config.get(name) if isinstance(name, str) else None
        cfg = cfg if cfg is not None else next(iter(model.peft_config.values()))
        raw = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(vars(cfg))
        method = hf._peft_method(_jsonable(raw))
    else:
        method = _plain_method(model, params)
    method["trainable_params"] = trainable
    return _jsonable(method)


def _plain_method(model: Any, params: list[tuple[str, Any]]) -> dict[str, Any]:
    """``full``, ``bitfit``, ``linear_probe`` or ``partial_freeze`` from which backbone parameters train."""
    prefix = getattr(model, "base_model_prefix", "") or ""
    body = [(n, p) for n, p in params if prefix and hasattr(model, prefix) and n.startswith(prefix + ".")] or params
    training = [(n, p) for n, p in body if p.requires_grad]
    if len(training) == len(body):
        return {"name": "full"}
    if not training:
        return {"name": "linear_probe"}
    if all(n.endswith("bias") for n, _ in training):
        return {"name": "bitfit"}
    layers: dict[int, list[bool]] = {}
    others: list[tuple[str, bool]] = []
    for n, p in body:
        match = _LAYER_INDEX.search(n)
        if match:
            layers.setdefault(int(match.group(1)), []).append(p.requires_grad)
        else:
            others.append((n, p.requires_grad))
    order = sorted(layers)
    frozen = 0
    while frozen < len(order) and not any(layers[order[frozen]]):
        frozen += 1
    config: dict[str, Any] = {}
    embeddings = [t for n, t in others if _EMBEDDING.search(n)]
    if embeddings and not any(embeddings):
        config["frozen_embeddings"] = True
    regular = all(all(layers[i]) for i in order[frozen:]) and all(t for n, t in others if not _EMBEDDING.search(n))
    if not regular:
        config["frozen_tensors"] = sum(1 for _, p in body if not p.requires_grad)
        return {"name": "partial_freeze", "config": config}
    return {"name": "partial_freeze", "n_frozen_layers": frozen, **({"config": config} if config else {})}


# ---------------------------------------------------------------------------------------------------------- hparams


def _hparams(args: TrainingArguments, hf: Any, max_seq_length: int | None,
             state_extra: dict[str, Any]) -> dict[str, Any]:
    """The card mapping (``TrainingArguments`` -> the Trainer's model-card hyperparameters -> the importer's
    ``hparams``), completed with what the card leaves out."""
    from transformers.modelcard import extract_hyperparameters_from_trainer

    from collector.importers._trainer_card import TrainerCard

    card = extract_hyperparameters_from_trainer(SimpleNamespace(args=args))
    hp = hf._merge_hparams([("card", TrainerCard(hyperparameters=_jsonable(card)).record_hparams()),
                            ("extra", {"extra": state_extra})])
    optim = str(getattr(args.optim, "value", args.optim)).lower()
    hp["optimizer"] = "adamw" if optim.startswith("adamw") else optim  # as the card reads Adam variants, and others too
    extra = hp.setdefault("extra", {})
    extra["optim"] = optim
    extra.pop("optimizer_text", None)
    warmup_ratio = getattr(args, "warmup_ratio", None) or 0.0
    warmup_steps = float(getattr(args, "warmup_steps", 0) or 0)
    if 0 < warmup_steps < 1:  # transformers 5: a warmup_steps below 1 is a ratio of the training steps
        warmup_ratio, warmup_steps = warmup_steps, 0.0
    if warmup_ratio:
        hp["warmup_ratio"] = float(warmup_ratio)
        hp.pop("warmup_steps", None)
    elif warmup_steps:
        hp["warmup_steps"] = int(warmup_steps)
    hp["weight_decay"] = float(args.weight_decay)
    hp["precision"] = "bf16" if args.bf16 else "fp16" if args.fp16 else hp.get("precision") or "fp32"
    if max_seq_length:
        hp["max_seq_length"] = int(max_seq_length)
    if getattr(args, "data_seed", None) is not None:
        extra["data_seed"] = args.data_seed
    return hp


# ---------------------------------------------------------------------------------------------------- training data


class _TrainData:
    """Texts, optional second texts and labels of the training data, found by column name."""

    def __init__(self, texts: list[str], labels: list[Any] | None, pairs: list[str] | None, n_rows: int) -> None:
        self.texts, self.labels, self.pairs, self.n_rows = texts, labels, pairs, n_rows

    @classmethod
    def find(cls, data: Any, text_column: str | None, pair_column: str | None,
             label_column: str | None) -> _TrainData | None:
        if data is None:
            return None
        if isinstance(data, tuple) and len(data) in (2, 3):
            texts, labels = list(data[0]), _scalars(data[1])
            pairs = [str(t) for t in data[2]] if len(data) == 3 and data[2] is not None else None
            return cls([str(t) for t in texts], labels, pairs, len(texts))
        columns, get = _column_access(data)
        try:
            n_rows = len(data)
        except TypeError:
            n_rows = None
        if columns is None:
            _warn(f"cannot read columns from the training data ({type(data).__name__}); pass train_data= as a "
                  "datasets.Dataset, a dict of columns, a list of row dicts or a (texts, labels) tuple")
            return None
        from collector.features._text_io import LABEL_COLUMNS, PAIR_COLUMNS, TEXT_COLUMNS

        by_lower = {c.lower(): c for c in reversed(columns)}
        text, pair = text_column, pair_column
        if text is None:
            found = next(((by_lower[a], by_lower[b]) for a, b in PAIR_COLUMNS if a in by_lower and b in by_lower),
                         None) or next(((by_lower[t], None) for t in TEXT_COLUMNS if t in by_lower), None)
            text, pair = found if found else (None, None)
        label = label_column or next((by_lower[c] for c in LABEL_COLUMNS if c in by_lower), None)
        texts = get(text) if text in columns else None
        if not texts or not all(isinstance(t, str) for t in texts[:100]):
            _warn(f"no text column in the training data (columns: {', '.join(map(str, columns)) or 'none'}): "
                  "dataset meta-features are not recorded; pass the raw split as train_data= (and text_column=)")
            return cls.empty(n_rows)
        pairs = [str(t) for t in get(pair)] if pair in columns else None
        labels = _scalars(get(label)) if label in columns else None
        return cls(list(texts), labels, pairs, n_rows if n_rows is not None else len(texts))

    @classmethod
    def empty(cls, n_rows: int | None) -> _TrainData | None:
        return cls([], None, None, n_rows) if n_rows is not None else None


def _column_access(data: Any) -> tuple[list[str] | None, Any]:
    """The column names of ``data`` and a function reading one column as a list."""
    names = getattr(data, "column_names", None)
    if names is None and hasattr(data, "columns") and hasattr(data, "__getitem__") and not isinstance(data, Mapping):
        names = list(data.columns)  # a pandas DataFrame
    if isinstance(names, Mapping):  # a datasets.DatasetDict: not one split
        return None, None
    if names is not None:
        return [str(n) for n in names], lambda c: list(data[c])
    if isinstance(data, Mapping):
        return [str(k) for k in data], lambda c: list(data[c])
    try:
        n = len(data)
        first = data[0] if n else None
    except (TypeError, KeyError, IndexError):
        return None, None
    if not isinstance(first, Mapping):
        return None, None

    def column(name: str) -> list[Any]:  # rows are read only for the columns that are used
        rows = (data[i] for i in range(n))
        return [r.get(name) if isinstance(r, Mapping) else None for r in rows]

    return [str(k) for k in first], column


def _scalars(values: Any) -> list[Any]:
    out = []
    for v in values:
        if hasattr(v, "item") and getattr(v, "ndim", 0) == 0:
            v = v.item()
        out.append(v)
    return out


def _meta_features(data: _TrainData, mode: str, client: RunClient | None, domain: str | None, landmark_sample: int,
                   seed: int) -> dict[str, Any]:
    if mode == "none" or not data.texts:
        return {}
    error: Exception | None = None
    if mode in ("auto", "local"):
        try:
            from collector.features import compute_meta_features

            meta = compute_meta_features(data.texts, data.labels, text_pairs=data.pairs,
                                         landmark_sample=landmark_sample, seed=seed, domain=domain)
            return meta.model_dump(mode="json", exclude_none=True)
        except Exception as e:  # the service may still compute them
            error = e
    if mode in ("auto", "server") and client is not None:
        rows = list(range(len(data.texts)))
        if len(rows) > MAX_DESCRIBE_ROWS:
            rows = sorted(random.Random(seed).sample(rows, MAX_DESCRIBE_ROWS))
        try:
            described = client.describe_dataset(
                [data.texts[i] for i in rows], [data.labels[i] for i in rows] if data.labels is not None else None,
                text_pairs=[data.pairs[i] for i in rows] if data.pairs is not None else None,
                landmark_sample=min(landmark_sample, 10_000), seed=max(seed, 0), domain=domain)
            return {k: v for k, v in described.meta.items() if v is not None}
        except Exception as e:  # reported below
            error = e
    why = f" ({type(error).__name__}: {error})" if error is not None else " (no client to ask the service)"
    _warn(f"dataset meta-features could not be computed{why}; the record has none")
    return {}


# --------------------------------------------------------------------------------------------------------- hardware


def _peak_memory_gb(args: TrainingArguments) -> float | None:
    """Peak CUDA memory allocated on the training device (GiB) when training on CUDA, else the process's peak RSS."""
    try:
        import torch

        if args.device.type == "cuda" and torch.cuda.is_available():
            return torch.cuda.max_memory_allocated(args.device) / _GIB
    except (AttributeError, ImportError, RuntimeError):
        pass
    return _peak_rss_gb()


def _peak_rss_gb() -> float | None:
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / _GIB if sys.platform == "darwin" else peak * 1024 / _GIB  # bytes on macOS, KiB elsewhere
    except (ImportError, OSError, ValueError):
        pass
    try:
        import psutil

        info = psutil.Process().memory_info()
        return float(getattr(info, "peak_wset", info.rss)) / _GIB
    except (ImportError, OSError):
        return None


def _hardware(args: TrainingArguments) -> dict[str, Any]:
    hw: dict[str, Any] = {"accelerator": "cpu", "accelerator_count": 0}
    try:
        import torch

        device = args.device
        if device.type == "cuda" and torch.cuda.is_available():
            hw["accelerator"] = torch.cuda.get_device_name(device)
            hw["accelerator_count"] = max(args.n_gpu, 1) * max(args.world_size, 1)
        elif device.type != "cpu":
            hw["accelerator"] = device.type
            hw["accelerator_count"] = max(args.world_size, 1)
    except (AttributeError, ImportError, RuntimeError):
        pass
    cpu = _cpu_name()
    if cpu:
        hw["cpu"] = cpu
    with contextlib.suppress(AttributeError, OSError, ValueError):
        hw["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / _GIB, 2)
    hw["software"] = _software()
    return hw


def _cpu_name() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _software() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "transformers": transformers.__version__}
    for key, dist in (("pytorch", "torch"), ("peft", "peft"), ("accelerate", "accelerate")):
        try:
            out[key] = version(dist)
        except PackageNotFoundError:
            continue
    return out


def _run_id(record: dict[str, Any]) -> str | None:
    """The id the knowledge base will give ``record``, or ``None`` when it does not validate."""
    from pydantic import ValidationError

    from collector.schema import RunRecord

    try:
        return RunRecord.model_validate(copy.deepcopy(record)).run_id
    except ValidationError:
        return None


def _jsonable(value: Any) -> Any:
    """``value`` with enums, sets, tuples, paths and numpy/torch scalars turned into JSON types; non-finite floats
    into ``None``."""
    if isinstance(value, enum.Enum):
        return _jsonable(value.value)
    if isinstance(value, bool) or value is None or isinstance(value, int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return sorted((_jsonable(v) for v in value), key=str)
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return _jsonable(value.item())
    return str(value)


# ------------------------------------------------------------------------------------------------------- the callback


class MetamlCallback(TrainerCallback):
    """Builds a run record when training ends and stores it (see the module docstring).

    Args:
        dataset: the dataset's name (``glue/sst2``, ``SST-2``...).
        client: a :class:`~metaml_client.Client` to post the record with (its key needs the ``write`` scope).
        kb: a local DuckDB knowledge base to append the record to (validated by the collector's ingestion).
        train_data: the training data with raw texts and labels; default: the Trainer's training dataset, when its
            rows still hold raw text.
        text_column, text_pair_column, label_column: column names, when not found by name.
        model_id: the starting checkpoint's id (default: from the model's config).
        task_type, primary_metric, split, max_seq_length, extra_hparams, domain, landmark_sample: as
            :func:`build_record`.
        features: where dataset meta-features are computed: ``auto`` (locally, else by the service), ``local``,
            ``server`` or ``none``.
        uploader: ``provenance.uploader`` (a server sets it to its key's name).
        spool_file: file in ``output_dir`` receiving the records that could not be posted.
        record_file: file in ``output_dir`` receiving the record (``None``: not written).
        stop: stop the run early from its partial curve (:class:`StopRule`; needs ``client``).

    Attributes:
        record: the last record built (a nested dict), or ``None``.
        run_id: its content-derived id (as the knowledge base computes it), or ``None`` when it does not validate.
        upload_result: the server's answer to the last upload, or ``None``.
        ingest_report: the local knowledge base's :class:`~collector.ingest.IngestReport`, or ``None``.
        record_path: where the record was written.
        spooled_to: the spool file, when the last upload failed.
        error: why the last record could not be built or stored, or ``None``.
        decisions: the service's answers to the stopping questions of the last run, in order.
        stopped: the answer that stopped the last run, or ``None``.

    Peak memory (``outcome.peak_memory_gb``, GiB): when training on CUDA, ``torch.cuda.max_memory_allocated`` on the
    training device, whose peak counter the callback resets when training begins; otherwise the process's peak
    resident set size (``ru_maxrss``), which covers the process's whole life, not just this run.
    """

    def __init__(self, dataset: str, *, client: RunClient | None = None, kb: str | os.PathLike[str] | None = None,
                 train_data: Any = None, text_column: str | None = None, text_pair_column: str | None = None,
                 label_column: str | None = None, model_id: str | None = None, task_type: str | None = None,
                 primary_metric: str | None = None, split: str = "validation", max_seq_length: int | None = None,
                 extra_hparams: Mapping[str, Any] | None = None, features: str = "auto", domain: str | None = None,
                 landmark_sample: int = 2000, uploader: str | None = None, spool_file: str = SPOOL_FILE,
                 record_file: str | None = RECORD_FILE, stop: StopRule | None = None) -> None:
        if features not in FEATURE_MODES:
            raise ValueError(f"features must be one of {', '.join(FEATURE_MODES)}, not {features!r}")
        if stop is not None and not hasattr(client, "decide_curve"):
            raise ValueError("stop needs a client with decide_curve (metaml_client.Client)")
        if not dataset or not str(dataset).strip():
            raise ValueError("dataset must name the dataset")
        self.client = client
        self.kb = Path(kb) if kb is not None else None
        self.train_data = train_data
        self.spool_file = spool_file
        self.record_file = record_file
        self._options: dict[str, Any] = {
            "dataset": dataset, "text_column": text_column, "text_pair_column": text_pair_column,
            "label_column": label_column, "model_id": model_id, "task_type": task_type,
            "primary_metric": primary_metric, "split": split, "max_seq_length": max_seq_length,
            "extra_hparams": extra_hparams, "features": features, "domain": domain,
            "landmark_sample": landmark_sample, "uploader": uploader,
        }
        self.record: dict[str, Any] | None = None
        self.run_id: str | None = None
        self.upload_result: Any = None
        self.ingest_report: IngestReport | None = None
        self.record_path: Path | None = None
        self.spooled_to: Path | None = None
        self.error: str | None = None
        self.stop = stop
        self.decisions: list[Any] = []
        self.stopped: Any = None
        self._started: float | None = None

    # -- events ----------------------------------------------------------------------------------------------------

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        self.record = self.run_id = self.upload_result = self.ingest_report = None
        self.record_path = self.spooled_to = None
        self.error = None
        self.decisions, self.stopped = [], None
        self._started = time.perf_counter()
        try:
            import torch

            if args.device.type == "cuda" and torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats(args.device)
        except (AttributeError, ImportError, RuntimeError):
            pass

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> None:
        if self.stop is None or not state.is_world_process_zero or self.stopped is not None:
            return
        try:
            decision = self._ask_to_stop(args, state, kwargs.get("model"))
        except Exception as e:  # never break the training script: a failed request does not stop training
            _warn(f"no stopping decision ({type(e).__name__}: {e}); training continues")
            return
        if decision is not None:
            self.decisions.append(decision)
            if decision.action == "stop":
                self.stopped = decision
                control.should_training_stop = True
                logger.info("stopping the run at step %s: P(final > %.4f) = %.3f < %g", state.global_step,
                            self.stop.incumbent, decision.p_above, decision.threshold)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        try:
            self._record_run(args, state, kwargs.get("model"), kwargs.get("train_dataloader"))
        except Exception as e:  # never break the training script
            self.error = f"{type(e).__name__}: {e}"
            hint = " (building a record needs the collector package of metaml)" if isinstance(e, ImportError) else ""
            _warn(f"the run was not recorded: {self.error}{hint}")

    # -- work ------------------------------------------------------------------------------------------------------

    def _ask_to_stop(self, args: TrainingArguments, state: TrainerState, model: Any) -> Any:
        """The service's answer for the primary metric's evaluations so far (None before the first one); the dataset
        goes with its number of classes when the model's config says it (the chance level)."""
        from collector.importers._trainer_card import metric_name

        assert self.stop is not None and self.client is not None
        name = self._options["primary_metric"] or args.metric_for_best_model or "accuracy"
        key = name if name.startswith("eval_") else f"eval_{name}"
        curve = {int(e["step"]): float(e[key]) for e in state.log_history or []
                 if isinstance(e, Mapping) and isinstance(e.get(key), int | float) and e.get("step")}
        if not curve or not state.max_steps:
            return None
        if max(curve.values()) > 1.0:  # percent, as some compute_metrics report it
            curve = {k: v / 100.0 for k, v in curve.items()}
        rule = self.stop
        dataset: dict[str, Any] = {"name": self._options["dataset"]}
        labels = getattr(getattr(_base_model(model), "config", None), "num_labels", None) if model is not None else None
        if isinstance(labels, int) and labels > 1:
            dataset["meta"] = {"n_classes": labels}
        return self.client.decide_curve(  # type: ignore[attr-defined]
            {"primary_metric": metric_name(key[len("eval_"):])}, dataset, curve, rule.incumbent,
            total_steps=int(state.max_steps), history=list(rule.history), tolerance=rule.tolerance,
            max_false_stop=rule.max_false_stop, min_progress=rule.min_progress, min_history=rule.min_history)

    def _record_run(self, args: TrainingArguments, state: TrainerState, model: Any, loader: Any) -> None:
        if model is None:
            raise ValueError("the trainer passed no model to the callback")
        data = self.train_data if self.train_data is not None else getattr(loader, "dataset", None)
        runtime = time.perf_counter() - self._started if self._started is not None else None
        self.record = build_record(args, state, model, train_data=data, client=self.client, runtime_s=runtime,
                                   **self._options)
        if self.stopped is not None and self.record["outcome"].get("status") == "ok":
            # stopped by its search: no final score, what it reported is its curve
            self.record["outcome"]["status"] = "stopped"
            self.record["outcome"].pop("score", None)
        self.run_id = _run_id(self.record)
        out = Path(args.output_dir) if args.output_dir else Path.cwd()
        if self.record_file:
            out.mkdir(parents=True, exist_ok=True)
            self.record_path = out / self.record_file
            self.record_path.write_text(json.dumps(self.record, indent=2, ensure_ascii=False) + "\n",
                                        encoding="utf-8")
        if self.kb is not None:
            self._append_local(self.record)
        if self.client is not None:
            self._post(self.record, out)

    def _append_local(self, record: dict[str, Any]) -> None:
        from collector.formats import RawRecord
        from collector.ingest import ingest_items
        from collector.store import KnowledgeBase

        locator = str(record["provenance"].get("locator") or SOURCE)
        report = ingest_items(KnowledgeBase(self.kb), [RawRecord(data=record, locator=locator)], source=SOURCE,
                              uri=locator, fmt=SOURCE, uploader=self._options["uploader"])
        self.ingest_report = report
        for reject in report.rejects:
            self.error = f"rejected by the knowledge base: {reject.field or 'record'}: {reject.reason}"
            _warn(f"the run was not stored in {self.kb}: {reject.field or 'record'}: {reject.reason}")
        if report.error:
            self.error = report.error
            _warn(f"the run was not stored in {self.kb}: {report.error}")
        if report.ingested or report.duplicates:
            logger.info("run %s %s in %s", record.get("run_id") or "", "stored" if report.ingested else
                        "already present", self.kb)

    def _post(self, record: dict[str, Any], out: Path) -> None:
        assert self.client is not None
        try:
            result = self.client.upload_runs([record])
        except Exception as e:  # transport errors and error answers alike: keep the run
            self.spooled_to = out / self.spool_file
            out.mkdir(parents=True, exist_ok=True)
            with open(self.spooled_to, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
            self.error = f"upload failed: {type(e).__name__}: {e}"
            _warn(f"the run could not be posted to {self.client.base_url} ({type(e).__name__}: {e}); it was "
                  f"written to {self.spooled_to}: upload it later with Client.upload_runs({str(self.spooled_to)!r})")
            return
        self.upload_result = result
        for status in result.records:
            if status.status == "rejected":
                self.error = f"rejected by the server: {status.field or 'record'}: {status.reason}"
                _warn(f"the server rejected the run: {status.field or 'record'}: {status.reason}")
            else:
                logger.info("run %s %s by %s", status.run_id, status.status, self.client.base_url)
