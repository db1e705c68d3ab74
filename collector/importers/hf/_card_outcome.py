"""Hub model cards: the run's outcome (final metrics, primary metric, one declared scale), hyperparameters and
method, by the rules documented in ``docs/sources/hf_cards.md``."""

from __future__ import annotations

import re
from typing import Any

from collector.formats._base import RecordProblem
from collector.importers.hf._card_task import LM_TASKS, CardContext
from collector.importers.hf.card import CardParts, ModelIndex, as_number, metric_name, parse_value
from collector.schema._vocab import METHODS, MetricScale, metric_info

#: Metrics the vocabulary does not know but cards use as headline numbers: name -> (scale, higher is better).
EXTRA_METRICS: dict[str, tuple[MetricScale, bool]] = {
    "rougelsum": (MetricScale.unit, True),
    "meteor": (MetricScale.unit, True),
    "mer": (MetricScale.unbounded, False),
    "wil": (MetricScale.unbounded, False),
    "combined_score": (MetricScale.signed_unit, True),
    "mean_iou": (MetricScale.unit, True),
    "mean_accuracy": (MetricScale.unit, True),
}
#: Error rates: unbounded in the registry, but in percent in some cards.
RATE_METRICS = {"wer", "cer", "mer", "wil"}
PRIMARY_BY_TASK: dict[str, tuple[str, ...]] = {
    "text-classification": ("accuracy", "f1", "f1_macro", "f1_micro", "f1_weighted", "matthews_correlation",
                            "pearson", "spearman", "combined_score", "mae", "mse", "rmse"),
    "multiple-choice": ("accuracy", "f1"),
    "image-classification": ("accuracy", "f1", "f1_macro"),
    "token-classification": ("f1", "accuracy", "f1_macro", "f1_micro"),
    "question-answering": ("f1", "exact_match"),
    "automatic-speech-recognition": ("wer", "cer"),
    "summarization": ("rouge1", "rougel", "rouge2", "rougelsum", "bleu"),
    "translation": ("bleu", "meteor", "rouge1"),
}
FALLBACK_PRIMARY = ("accuracy", "f1", "f1_macro", "rouge1", "rougel", "bleu", "exact_match", "wer",
                    "matthews_correlation", "pearson", "spearman", "mae", "mse", "perplexity")

PEFT_NAME_TOKENS = sorted((m for m in METHODS if m not in ("full", "adapter", "partial_freeze", "linear_probe",
                                                           "distillation", "setfit", "perfect", "miss", "road",
                                                           "lily", "bone", "osf", "c3a", "hra", "oft", "boft",
                                                           "cartridge")), key=len, reverse=True)


def final_metrics(parts: CardParts) -> tuple[dict[str, float], str]:
    """The run's final metrics (results list > last table row > model-index) and their split: ``test`` when the
    results list says "on the test set", else ``validation``."""
    index = parts.model_index
    metrics: dict[str, float] = {}
    for raw_name, raw_value in parts.results:
        _add_metric(metrics, raw_name, raw_value)
    if not _task_metrics(metrics) and parts.table and parts.table.rows:
        for name, value in zip(parts.table.header, parts.table.rows[-1], strict=True):
            if metric_name(name) not in metrics:
                _add_metric(metrics, name, value)
    if not _task_metrics(metrics):
        for m in index.metrics:
            name = m.get("type") or m.get("name")
            if isinstance(name, str) and metric_name(name) not in metrics:
                _add_metric(metrics, name, m.get("value"))
    where = (parts.results_heading or "").lower()
    split = "test" if "test" in where else "validation"
    return metrics, split


def _add_metric(metrics: dict[str, float], raw_name: str, raw_value: Any) -> None:
    if isinstance(raw_value, str) and raw_value.strip().startswith("{"):
        raw_value = parse_value(raw_value)
    if isinstance(raw_value, dict):
        for key, value in raw_value.items():
            _add_metric(metrics, str(key), value)
        return
    name = metric_name(raw_name.strip("{}'\" "))
    value = as_number(raw_value)
    if name is not None and value is not None:
        metrics.setdefault(name, value)


def _task_metrics(metrics: dict[str, float]) -> list[str]:
    return [m for m in metrics if m not in ("loss", "train_loss") and not m.startswith("train_")]



def card_primary(task_type: str, hf_task: str | None, final: dict[str, float], index: ModelIndex) -> str:
    """The primary metric: the task's preferred one reported (:data:`PRIMARY_BY_TASK`), else the model-index's,
    else :data:`FALLBACK_PRIMARY`; a language-modelling run falls back to its loss.

    Raises:
        RecordProblem: the card reports no usable task metric.
    """
    usable = [m for m in _task_metrics(final) if metric_info(m) is not None or m in EXTRA_METRICS]
    for name in PRIMARY_BY_TASK.get(task_type, ()):
        if name in usable:
            return name
    for m in index.metrics:
        name = metric_name(str(m.get("type") or m.get("name") or ""))
        if name in usable:
            return name
    for name in FALLBACK_PRIMARY:
        if name in usable:
            return name
    if usable:
        return usable[0]
    if (hf_task in LM_TASKS or task_type == "text-generation") and "loss" in final:
        return "loss"
    if not final:
        raise RecordProblem("outcome.score",
                            "no metric: no results list, Training results table or model-index metric")
    if set(final) <= {"loss", "train_loss"} or not _task_metrics(final):
        raise RecordProblem("outcome.score",
                            f"only a loss is reported, no task metric (task: {hf_task or 'not stated'})")
    raise RecordProblem("outcome.score", f"no known task metric among {sorted(final)}")


def _is_percent(name: str, final: float | None, curve: list[float]) -> bool:
    """Whether the series of metric ``name`` (its final value and table column) is on 0-100.

    Raises:
        RecordProblem: a fractional final value next to a table column that is mostly above 1 is not, but some
            values are (the table's columns are shifted).
    """
    values = ([final] if final is not None else []) + curve
    if not values:
        return False
    if name in RATE_METRICS:
        return max(values) > 2
    info = metric_info(name)
    scale = info.scale if info else EXTRA_METRICS.get(name, (None, None))[0]
    if scale is not MetricScale.unit:
        return False
    if final is None:
        return max(curve) > 1
    if final > 1:
        return True
    above = [v for v in curve if v > 1]
    if not above:
        return False
    if len(above) * 2 > len(curve):
        return True
    raise RecordProblem("outcome.curve", f"Training results table column {name!r} has values above 1 ({max(above)}) "
                        f"while the final value is {final}: the table's columns are shifted or mixed")


def scaled_outcome(primary: str, final: dict[str, float], curve: list[dict[str, Any]]
            ) -> tuple[dict[str, Any], dict[str, float], list[dict[str, Any]], float]:
    """The task part, metrics, curve and score with every series brought to one declared scale."""
    columns: dict[str, list[float]] = {}
    for p in curve:
        columns.setdefault(p["metric"], []).append(p["value"])
    percent = {n for n in set(final) | set(columns) if _is_percent(n, final.get(n), columns.get(n, []))}
    declared_percent = primary in percent and primary not in RATE_METRICS
    schema_converts = {n for n in set(final) | set(columns)
                       if (info := metric_info(n)) is not None and info.scale is MetricScale.unit}

    def fix(name: str, value: float) -> float:
        if name in schema_converts:
            if declared_percent and name not in percent:
                return value * 100.0
            if not declared_percent and name in percent:
                return value / 100.0
            return value
        return value / 100.0 if name in percent else value

    metrics = {n: fix(n, v) for n, v in final.items()}
    points = [{**p, "value": fix(p["metric"], p["value"])} for p in curve]
    task: dict[str, Any] = {"primary_metric": primary}
    if declared_percent:
        task["metric_scale"] = "percent"
    elif primary in EXTRA_METRICS:
        scale, higher = EXTRA_METRICS[primary]
        task["metric_scale"] = scale.value
        task["higher_is_better"] = higher
    return task, metrics, points, metrics[primary]


# --- hyperparameters ----------------------------------------------------------------------------------------------

_ADAM = re.compile(r"(?:Use\s+)?(?P<name>[\w.\- \[\]()/:]*?)\s+with betas=\((?P<b1>[\d.e-]+),\s*(?P<b2>[\d.e-]+)\)"
                   r"\s+and epsilon=(?P<eps>[\d.e+-]+)", re.I)


def card_hparams(block: dict[str, Any], frameworks: dict[str, str], axolotl: dict[str, Any]
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(hparams, hardware)`` from a card's hyperparameter block (Trainer and Keras spellings), its framework
    versions and an embedded axolotl config; values that cannot be right (a non-positive learning rate...) are kept
    in ``extra`` as ``<name>_as_written``."""
    hp: dict[str, Any] = {"extra": {}}
    hw: dict[str, Any] = {"software": dict(frameworks)}
    extra = hp["extra"]
    mapping = {
        "learning_rate": ("learning_rate", float), "lr": ("learning_rate", float),
        "train_batch_size": ("per_device_batch_size", int),
        "per_device_train_batch_size": ("per_device_batch_size", int),
        "batch_size_per_device": ("per_device_batch_size", int),
        "gradient_accumulation_steps": ("gradient_accumulation_steps", int),
        "gradient_accumulation": ("gradient_accumulation_steps", int),
        "num_epochs": ("epochs", float), "epoch": ("epochs", float),
        "training_steps": ("max_steps", int), "max_steps": ("max_steps", int), "num_steps": ("max_steps", int),
        "lr_scheduler_warmup_steps": ("warmup_steps", int), "lr_warmup_steps": ("warmup_steps", int),
        "warmup_steps": ("warmup_steps", int), "lr_scheduler_warmup_ratio": ("warmup_ratio", float),
        "lr_scheduler_type": ("lr_scheduler", str), "lr_scheduler": ("lr_scheduler", str),
        "seed": ("seed", int), "random_seed": ("seed", int),
        "label_smoothing_factor": ("label_smoothing", float), "weight_decay": ("weight_decay", float),
        "max_length": ("max_seq_length", int), "max_seq_length": ("max_seq_length", int),
    }
    for key, value in block.items():
        if key in mapping and value is not None:
            target, kind = mapping[key]
            converted = _convert(value, kind)
            if converted is not None and target not in hp:
                hp[target] = converted
                continue
        if key == "total_train_batch_size" and _convert(value, int):
            hp["batch_size"] = _convert(value, int)
        elif key == "optimizer":
            _optimizer(value, hp)
        elif key in ("mixed_precision_training", "training_precision", "mixed_precision"):
            _precision(value, hp)
        elif key in ("num_devices", "num_gpus") and _convert(value, int):
            hw["accelerator_count"] = _convert(value, int)
        elif key == "distributed_type" and isinstance(value, str) and value.lower() == "tpu":
            hw["accelerator"] = "tpu"
            extra[key] = value
        elif value is not None:
            extra[key] = value
    _effective_batch(hp, hw)
    _axolotl_hparams(axolotl, hp)
    torch = frameworks.get("pytorch", "")
    if torch.endswith("+cpu") and "accelerator" not in hw:
        hw["accelerator"] = "cpu"
    for bad in [k for k in ("epochs", "max_steps", "per_device_batch_size", "batch_size", "learning_rate",
                            "gradient_accumulation_steps") if k in hp and not hp[k] > 0]:
        extra[f"{bad}_as_written"] = hp.pop(bad)
    if "warmup_ratio" in hp and not 0 <= hp["warmup_ratio"] <= 1:
        extra["warmup_ratio_as_written"] = hp.pop("warmup_ratio")
    return hp, {k: v for k, v in hw.items() if v not in ({}, None)}


def _convert(value: Any, kind: type) -> Any:
    if kind is str:
        return str(value).strip() if value is not None else None
    number = as_number(value) if not isinstance(value, int | float) or isinstance(value, bool) else float(value)
    if number is None:
        return None
    if kind is int:
        return int(number) if number == int(number) else None
    return number


def _optimizer(value: Any, hp: dict[str, Any]) -> None:
    extra = hp["extra"]
    if isinstance(value, dict):
        name = str(value.get("name") or value.get("class_name") or "").lower()
        if name:
            hp["optimizer"] = "adamw" if name == "adamweightdecay" else name
        lr = value.get("learning_rate")
        if isinstance(lr, dict):
            config = lr.get("config") or {}
            extra["lr_schedule"] = lr.get("class_name")
            lr = config.get("initial_learning_rate")
        if as_number(lr) and "learning_rate" not in hp and as_number(lr) > 0:
            hp["learning_rate"] = as_number(lr)
        if as_number(value.get("weight_decay_rate")) is not None:
            hp.setdefault("weight_decay", as_number(value["weight_decay_rate"]))
        for key in ("beta_1", "beta_2", "epsilon"):
            if as_number(value.get(key)) is not None:
                extra[f"adam_{key.replace('_', '')}"] = as_number(value[key])
        return
    if not isinstance(value, str):
        return
    match = _ADAM.search(value)
    if match is None:
        hp["optimizer"] = value.strip().lower()
        return
    name = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", match.group("name")).strip().lower()
    name = name.replace("optimizernames.", "")
    hp["optimizer"] = "adamw" if name in ("adam", "") else re.sub(r"\s+", "_", name)
    extra["adam_beta1"], extra["adam_beta2"] = float(match.group("b1")), float(match.group("b2"))
    extra["adam_epsilon"] = float(match.group("eps"))


def _precision(value: Any, hp: dict[str, Any]) -> None:
    text = str(value).strip().lower()
    if "apex" in text:
        hp["precision"] = "fp16"
        hp["extra"]["apex_opt_level"] = value
    elif "native amp" in text or text in ("mixed_float16", "fp16", "float16"):
        hp["precision"] = "fp16"
    elif "bfloat16" in text or "bf16" in text:
        hp["precision"] = "bf16"
    elif text in ("float32", "fp32"):
        hp["precision"] = "fp32"
    elif text and text != "none":
        hp["extra"]["precision_as_written"] = value


def _effective_batch(hp: dict[str, Any], hw: dict[str, Any]) -> None:
    if "batch_size" in hp or "per_device_batch_size" not in hp:
        return
    devices = hw.get("accelerator_count") or 1
    hp["batch_size"] = hp["per_device_batch_size"] * (hp.get("gradient_accumulation_steps") or 1) * devices


# --- method -------------------------------------------------------------------------------------------------------


def _axolotl_hparams(axolotl: dict[str, Any], hp: dict[str, Any]) -> None:
    seq = _convert(axolotl.get("sequence_len"), int) if axolotl.get("sequence_len") else None
    if seq and seq > 0:
        hp.setdefault("max_seq_length", seq)
    if "precision" not in hp:
        if axolotl.get("bf16") is True:
            hp["precision"] = "bf16"
        elif axolotl.get("fp16") is True:
            hp["precision"] = "fp16"


def card_method(parts: CardParts, ctx: CardContext, axolotl: dict[str, Any], text: str) -> dict[str, Any]:
    """``full`` unless the card shows PEFT (framework, tags, ``library_name``, an axolotl ``adapter``): then
    ``qlora`` when 4-bit loading is stated, a PEFT method named in the model id, else ``lora``, with the LoRA
    settings of an axolotl config."""
    fm = parts.front_matter
    tags = {t.lower() for t in list(ctx.tags) + [t for t in fm.get("tags") or [] if isinstance(t, str)]}
    adapter = str(axolotl.get("adapter") or "").lower()
    peft = bool(
        "peft" in parts.frameworks or tags & {"peft", "lora", "qlora"} or str(fm.get("library_name")).lower() == "peft"
        or adapter
    )
    if not peft:
        return {"name": "full"}
    out: dict[str, Any] = {"name": _peft_method(ctx.model_id, adapter, axolotl, text)}
    for src, dst, kind in (("lora_r", "lora_r", int), ("lora_alpha", "lora_alpha", float),
                           ("lora_dropout", "lora_dropout", float)):
        value = _convert(axolotl.get(src), kind) if axolotl.get(src) is not None else None
        if value is not None:
            out[dst] = value
    modules = axolotl.get("lora_target_modules")
    if isinstance(modules, list) and modules:
        out["target_modules"] = [str(m) for m in modules]
    elif axolotl.get("lora_target_linear") is True:
        out["config"] = {"target_linear": True}
    return out


def _peft_method(model_id: str, adapter: str, axolotl: dict[str, Any], text: str) -> str:
    if adapter in METHODS and adapter != "full":
        return adapter
    four_bit = (axolotl.get("load_in_4bit") is True or re.search(r"load_in_4bit:\s*True|bnb_4bit|bits:\s*4", text)
                or "qlora" in model_id.lower())
    if four_bit:
        return "qlora"
    ids = re.sub(r"[^a-z0-9]+", "_", model_id.lower())
    for name in PEFT_NAME_TOKENS:
        if re.search(rf"(?:^|_){name}(?:_|$)", ids):
            return name
    return "lora"


__all__ = ["EXTRA_METRICS", "FALLBACK_PRIMARY", "PRIMARY_BY_TASK", "RATE_METRICS", "card_hparams", "card_method",
           "card_primary", "final_metrics", "scaled_outcome"]
