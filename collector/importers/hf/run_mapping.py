"""What a Hugging Face ``Trainer`` run reports, mapped to the run record: one mapping for the Trainer's output
directories (:mod:`collector.importers.hf.trainer_output`, TaskWeb) and for live runs
(:mod:`collector.trainer_callback`).

Inputs are what the Trainer writes or holds: the final evaluation (``eval_*`` keys of ``eval_results.json`` or of the
last evaluation in ``state.log_history``), the training summary (``train_*`` keys), the state (``log_history``,
``global_step``, ``total_flos``, ``best_metric``...), the arguments (``TrainingArguments``, through the hyperparameter
block of the Trainer's model card), the model's ``config`` and a PEFT / adapter-transformers adapter config.

* :func:`eval_metrics` -> ``outcome.metrics`` (``eval_`` stripped, canonical names: ``eval_spearmanr`` ->
  ``spearman``), the names of non-finite values, ``eval_samples`` for ``hparams.extra``; runtimes and throughputs
  are not metrics.
* :func:`apply_train_results` -> ``outcome.runtime_s``, ``metrics.train_loss``, ``dataset.n_train_used``,
  ``hparams.extra.total_flos``; :func:`state_extra`, :func:`state_hparams`, :func:`state_curve` -> the rest of
  what the state says (``total_steps``, ``best_metric``, epochs, per-device batch, the learning curve).
* :func:`mark_failure`: a NaN/inf loss makes the run ``failed``/``diverged``; a non-finite primary metric alone
  ``failed``/``error``.
* :func:`primary_metric`, :func:`model_id`, :func:`task_type`: what to call the run's score, model and task when
  nothing more specific says.
* :func:`adapter_method`, :func:`peft_method`: ``method`` from an adapter config.
* :func:`hparams_from_args`, :func:`merge_hparams`: ``hparams`` from ``TrainingArguments`` / layers of evidence.
* :class:`Draft` and :func:`finalize`: the metric scale. Percent runs (``eval_accuracy`` 38.08) declare
  ``task.metric_scale = "percent"`` and the schema converts accuracy-like metrics; correlations and composite
  scores (``combined_score``), which the schema's [0, 100] percent scale cannot hold, are divided here.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from collector.formats._base import RawRecord
from collector.importers.hf.card import HUB_ID, TrainerCard, hparams_from_card, metric_name
from collector.schema._vocab import MetricScale, canonical_method, metric_info

#: The primary metric when nothing names one: the first of these reported wins.
PRIMARY_PREFERENCE = ("accuracy", "f1", "f1_macro", "matthews_correlation", "spearman", "pearson", "exact_match",
                      "rougel", "rouge1", "bleu", "wer", "cer", "mae", "rmse", "mse", "loss")
#: Unknown-scale metrics that are means of unit-scale ones (converted with them when a run is in percent).
COMPOSITE_METRICS = frozenset({"combined_score", "average_metrics"})
#: ``eval_*`` key suffixes that describe the evaluation run, not the model.
EVAL_NON_METRICS = re.compile(r"(runtime|_per_second|^samples$|^epoch$|^mem_|_mem_|^step$|^jit_compilation_time$)")
_ARCH_TASKS = (("ForSequenceClassification", "text-classification"),
               ("ForTokenClassification", "token-classification"),
               ("ForQuestionAnswering", "question-answering"), ("ForMultipleChoice", "multiple-choice"),
               ("ForCausalLM", "text-generation"), ("ForImageClassification", "image-classification"),
               ("ForCTC", "automatic-speech-recognition"))
#: Task types a model-index may name that the record takes as they are.
TASK_TYPES = frozenset({"text-classification", "token-classification", "question-answering", "multiple-choice",
                        "text-regression", "summarization", "translation", "text-generation", "image-classification",
                        "automatic-speech-recognition", "other"})
_CONFLICT_KEYS = ("learning_rate", "batch_size", "epochs", "seed")


@dataclass
class RunMetrics:
    """The final evaluation of a run: finite metrics by canonical name, the names of non-finite ones, and
    bookkeeping values bound for ``hparams.extra``."""

    metrics: dict[str, float] = field(default_factory=dict)
    bad: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def reported(self) -> set[str]:
        """Every metric reported, finite or not."""
        return set(self.metrics) | set(self.bad)


@dataclass
class TrainerReport:
    """What one Trainer run left behind, as read: its final evaluation (``eval_*`` keys, and the file they came
    from), training summary (``train_*`` keys), state, model config, adapter and head configs, and model card."""

    eval: dict[str, Any] = field(default_factory=dict)
    eval_file: str | None = None
    train: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    adapter: dict[str, Any] | None = None
    head: dict[str, Any] | None = None
    card: TrainerCard | None = None


#: Largest difference between a card's final result and the evaluation results for the card to be this run's.
CARD_TOLERANCE = 5e-4


def trusted_card(report: TrainerReport, run: RunMetrics) -> TrainerCard | None:
    """The run's card when it is evidence about this run: None without a card, and None (with
    ``run.extra["card_ignored"]`` saying why) when its final results contradict the evaluation results by more
    than :data:`CARD_TOLERANCE` (a card left in the directory by an earlier run)."""
    card = report.card
    if card is None:
        return None
    for name, value in card.metrics().items():
        if name in run.metrics and abs(run.metrics[name] - value) > CARD_TOLERANCE * max(1.0, abs(value) / 100):
            run.extra["card_ignored"] = (f"README.md results differ from {report.eval_file} (a card left by another "
                                         "run)")
            return None
    return card


def software(report: TrainerReport, card: TrainerCard | None) -> dict[str, str]:
    """``hardware.software``: transformers from the config, adapter-transformers from the adapter config, then the
    card's framework versions."""
    versions: dict[str, str] = {}
    if report.config and report.config.get("transformers_version"):
        versions["transformers"] = str(report.config["transformers_version"])
    if report.adapter and "peft_type" not in report.adapter and report.adapter.get("version"):
        versions["adapter-transformers"] = str(report.adapter["version"])
    if card is not None:
        versions.update(card.software())
    return versions


def is_eval_key(key: str) -> bool:
    """Whether ``key`` (``eval_accuracy``) is an evaluation metric, not bookkeeping (``eval_runtime``)."""
    return key.startswith("eval_") and key != "eval_samples" and not EVAL_NON_METRICS.search(key[5:])


def eval_metrics(results: Mapping[str, Any]) -> RunMetrics:
    """The ``eval_*`` entries of an evaluation (``eval_results.json``, a ``log_history`` entry)."""
    out = RunMetrics()
    for key, value in results.items():
        if not key.startswith("eval_"):
            continue
        short = key[len("eval_"):]
        if short == "samples" and isinstance(value, int):
            out.extra["eval_samples"] = value
            continue
        number = _number(value)
        name = metric_name(short) if not EVAL_NON_METRICS.search(short) else None
        if number is None or name is None:
            continue
        if math.isfinite(number):
            out.metrics[name] = number
        else:
            out.bad.append(name)
    return out


def apply_train_results(train: Mapping[str, Any], state: Mapping[str, Any] | None, run: RunMetrics,
                        outcome: dict[str, Any], dataset: dict[str, Any]) -> None:
    """Put the training summary (``train_results.json`` or the state's last ``log_history`` entry) into the record:
    ``train_loss`` into ``run.metrics`` (or ``run.bad``), ``runtime_s`` into ``outcome``, ``n_train_used`` into
    ``dataset``, ``total_flos`` (else the state's) into ``run.extra``."""
    loss = _number(train.get("train_loss"))
    if loss is not None:
        if math.isfinite(loss):
            run.metrics["train_loss"] = loss
        else:
            run.bad.append("train_loss")
    runtime = _number(train.get("train_runtime"))
    if runtime is not None and math.isfinite(runtime) and runtime >= 0:
        outcome["runtime_s"] = runtime
    samples = train.get("train_samples")
    if isinstance(samples, int) and samples >= 0:
        dataset["n_train_used"] = samples
    flos = _number(train.get("total_flos"))
    if flos is None and state:
        flos = _number(state.get("total_flos"))
    if flos is not None and math.isfinite(flos):
        run.extra["total_flos"] = flos


def state_extra(state: Mapping[str, Any] | None) -> dict[str, Any]:
    """``hparams.extra`` entries from the Trainer state: ``total_steps``, ``best_metric``, ``best_model_checkpoint``."""
    extra: dict[str, Any] = {}
    if not state:
        return extra
    if isinstance(state.get("global_step"), int):
        extra["total_steps"] = state["global_step"]
    best = _number(state.get("best_metric"))
    if best is not None and math.isfinite(best):
        extra["best_metric"] = best
    if state.get("best_model_checkpoint"):
        extra["best_model_checkpoint"] = str(state["best_model_checkpoint"])
    return extra


def state_hparams(state: Mapping[str, Any] | None) -> dict[str, Any]:
    """``epochs`` and ``per_device_batch_size`` as ``trainer_state.json`` records them."""
    if not state:
        return {}
    hp: dict[str, Any] = {}
    epochs = _number(state.get("num_train_epochs"))
    if epochs is not None and epochs > 0:
        hp["epochs"] = epochs
    if isinstance(state.get("train_batch_size"), int) and state["train_batch_size"] > 0:
        hp["per_device_batch_size"] = state["train_batch_size"]
    return hp


def state_curve(state: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Learning-curve points from ``log_history``: ``loss`` -> ``train_loss``, ``eval_*`` -> metric points, with
    step and epoch; the final summary entry (``train_runtime``) is not a point."""
    if not state or not isinstance(state.get("log_history"), list):
        return []
    points: list[dict[str, Any]] = []
    for entry in state["log_history"]:
        if not isinstance(entry, Mapping) or "train_runtime" in entry:
            continue
        base: dict[str, Any] = {}
        step, epoch = entry.get("step"), _number(entry.get("epoch"))
        if isinstance(step, int) and step >= 0:
            base["step"] = step
        if epoch is not None and math.isfinite(epoch) and epoch >= 0:
            base["epoch"] = epoch
        for key, value in entry.items():
            name = "train_loss" if key == "loss" else metric_name(key[5:]) if is_eval_key(key) else None
            number = _number(value)
            if name is not None and number is not None and math.isfinite(number):
                points.append({**base, "metric": name, "value": number})
    return points


def mark_failure(run: RunMetrics, primary: str, outcome: dict[str, Any]) -> None:
    """Mark the run failed when its primary metric or a loss is not finite: ``diverged`` when a loss is (NaN/inf
    training or evaluation loss), ``error`` when only the metric is (e.g. a correlation of constant predictions)."""
    bad = run.bad
    if not bad or (primary in run.metrics and "train_loss" not in bad and "loss" not in bad):
        return
    outcome["status"] = "failed"
    diverged = "train_loss" in bad or "loss" in bad
    outcome["error_kind"] = "diverged" if diverged else "error"
    detail = "" if diverged else f" ({primary} undefined, e.g. constant predictions)"
    outcome["error_message"] = f"non-finite values reported for: {', '.join(sorted(set(bad)))}{detail}"


def primary_metric(run: RunMetrics, named: Iterable[str] = ()) -> str | None:
    """The first of ``named`` (canonical names a card or the arguments give) that was reported, else the first
    reported of :data:`PRIMARY_PREFERENCE`, else None."""
    reported = run.reported
    for name in [*named, *PRIMARY_PREFERENCE]:
        if name in reported:
            return name
    return None


def model_id(candidates: Iterable[Any]) -> tuple[str | None, str | None]:
    """``(model id, local path)`` from candidate names in order of trust (adapter base, card, config
    ``_name_or_path``): the first Hub-like id; else the last component of the first local path, the path kept."""
    values = [c.strip() for c in candidates if isinstance(c, str) and c.strip()]
    for value in values:
        if HUB_ID.fullmatch(value) and not value.startswith("."):
            return value, None
    if values:
        local = values[0].rstrip("/\\")
        return re.split(r"[/\\]", local)[-1] or local, values[0]
    return None, None


def task_type(architectures: Iterable[Any], named: str | None = None) -> str:
    """The task type: ``named`` (a model-index task type) when the record knows it, else from the model's
    architecture (``...ForSequenceClassification`` -> text-classification), else ``other``."""
    if named in TASK_TYPES:
        return named  # type: ignore[return-value]
    for arch in architectures:
        for suffix, kind in _ARCH_TASKS:
            if str(arch).endswith(suffix):
                return kind
    return "other"


def adapter_method(adapter: Mapping[str, Any] | None, head: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``method`` fields from ``adapter_config.json`` (PEFT: :func:`peft_method`; adapter-transformers: the
    architecture, reduction factor and defining options) and a head config; {} without an adapter."""
    if not adapter:
        return {}
    if "peft_type" in adapter:
        return peft_method(adapter)
    inner = adapter.get("config") if isinstance(adapter.get("config"), dict) else {}
    method: dict[str, Any] = {}
    config: dict[str, Any] = {"library": "adapter-transformers"}
    arch = str(inner.get("architecture") or "").lower()
    if arch in ("", "bottleneck"):
        if inner.get("output_adapter") and inner.get("mh_adapter"):
            arch = "houlsby"
        elif inner.get("output_adapter"):
            arch = "pfeiffer"
        method["name"] = "adapter"
    elif arch == "lora":
        method.update(name="lora", lora_r=inner.get("r"), lora_alpha=inner.get("alpha"),
                      lora_dropout=inner.get("dropout"))
    else:
        method["name"] = arch
    if arch:
        config["adapter_architecture"] = arch
    reduction = inner.get("reduction_factor")
    if isinstance(reduction, int | float) and not isinstance(reduction, bool):
        method["adapter_reduction_factor"] = float(reduction)
    elif reduction is not None:
        config["reduction_factor"] = reduction
    for key in ("non_linearity", "mh_adapter", "output_adapter", "residual_before_ln", "original_ln_before",
                "original_ln_after", "ln_before", "ln_after", "use_gating", "is_parallel", "scaling", "init_weights",
                "prefix_length", "bottleneck_size"):
        if inner.get(key) is not None:
            config[key] = inner[key]
    for key in ("leave_out", "inv_adapter", "phm_layer", "cross_adapter"):
        if inner.get(key):
            config[key] = inner[key]
    if adapter.get("name"):
        config["adapter_name"] = adapter["name"]
    if isinstance((head or {}).get("config"), dict):
        config["head"] = head["config"]  # type: ignore[index]
    method["config"] = config
    return {k: v for k, v in method.items() if v is not None}


def peft_method(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``method`` from a PEFT config (``adapter_config.json`` or a live ``PeftConfig.to_dict()``): the PEFT type
    (``use_dora`` -> dora), ``lora_r``, ``lora_alpha``, ``lora_dropout``, ``target_modules``, ``n_virtual_tokens``;
    the other non-empty options in ``config``."""
    peft_type = str(cfg.get("peft_type") or "").lower()
    name = "dora" if peft_type == "lora" and cfg.get("use_dora") else peft_type
    method: dict[str, Any] = {"name": canonical_method(name) or name}
    if isinstance(cfg.get("r"), int) and cfg["r"] > 0:
        method["lora_r"] = cfg["r"]
    for key in ("lora_alpha", "lora_dropout"):
        if _number(cfg.get(key)) is not None:
            method[key] = float(cfg[key])
    modules = cfg.get("target_modules")
    if isinstance(modules, str):
        method["target_modules"] = [modules]
    elif isinstance(modules, list) and modules:
        method["target_modules"] = sorted(str(m) for m in modules)
    if isinstance(cfg.get("num_virtual_tokens"), int) and cfg["num_virtual_tokens"] > 0:
        method["n_virtual_tokens"] = cfg["num_virtual_tokens"]
    skip = {"peft_type", "r", "lora_alpha", "lora_dropout", "target_modules", "num_virtual_tokens",
            "base_model_name_or_path", "inference_mode", "revision", "use_dora"}
    config = {k: v for k, v in cfg.items() if k not in skip and v not in (None, "", [], {}, False)}
    config["library"] = "peft"
    method["config"] = config
    return method


def merge_hparams(layers: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Merge hyperparameter layers ``(name, hparams)``, later ones winning; ``extra`` dicts are merged. A value the
    ``dirname`` and ``card`` layers disagree on is kept in ``extra`` as ``card_<key>`` and ``dirname_<key>``."""
    merged: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    by_source = dict(layers)
    for _, layer in layers:
        for key, value in layer.items():
            if key == "extra":
                extra.update(value)
            elif value is not None:
                merged[key] = value
    name_hp, card_hp = by_source.get("dirname", {}), by_source.get("card", {})
    for key in _CONFLICT_KEYS:
        a, b = name_hp.get(key), card_hp.get(key)
        if a is not None and b is not None and not math.isclose(float(a), float(b), rel_tol=1e-9):
            extra[f"card_{key}"] = b
            extra[f"dirname_{key}"] = a
    if extra:
        merged["extra"] = extra
    return merged


def hparams_from_args(args: Any, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``hparams`` from live ``TrainingArguments``: the block the Trainer's model card writes
    (``transformers.modelcard.extract_hyperparameters_from_trainer``) read by :func:`hparams_from_card`, completed
    with what the card leaves out (the optimizer's implementation, warmup, weight decay, precision, data seed).

    Raises:
        ImportError: ``transformers`` is not installed.
    """
    from transformers.modelcard import extract_hyperparameters_from_trainer

    block = jsonable(extract_hyperparameters_from_trainer(SimpleNamespace(args=args)))
    hp = merge_hparams([("card", hparams_from_card(block)), ("extra", {"extra": dict(extra or {})})])
    optim = str(getattr(args.optim, "value", args.optim)).lower()
    hp["optimizer"] = "adamw" if optim.startswith("adamw") else optim  # as the card reads Adam variants, others too
    out_extra = hp.setdefault("extra", {})
    out_extra["optim"] = optim
    out_extra.pop("optimizer_text", None)
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
    if getattr(args, "data_seed", None) is not None:
        out_extra["data_seed"] = args.data_seed
    return hp


# ------------------------------------------------------------------------------------------------- metric scale


@dataclass
class Draft:
    """A run mapped to a record, waiting for its metric scale to be decided (:func:`finalize`).

    ``group`` names the runs whose scale is decided together (TaskWeb: target, model, method), or None.
    """

    data: dict[str, Any]
    locator: str
    metrics: dict[str, float]
    primary: str
    curve: list[dict[str, Any]]
    own_percent: bool
    group: tuple[str, ...] | None = None


def own_percent(metrics: Mapping[str, float]) -> bool:
    """Whether a run's own values show percent: an accuracy-like or correlation metric beyond [-1, 1]."""
    return any(abs(v) > 1.0 for k, v in metrics.items() if scaled_metric(k))


def scaled_metric(name: str) -> bool:
    """Metrics whose values move with the reported scale (accuracy-like, correlations, their means)."""
    info = metric_info(name)
    return name in COMPOSITE_METRICS or (
        info is not None and info.scale in (MetricScale.unit, MetricScale.signed_unit))


def _divided_here(name: str, declared: bool) -> bool:
    """Whether this mapping (rather than the schema) divides a metric by 100 in a percent run: all scaled metrics
    when the run cannot declare ``percent``; else only correlations and composites, which the schema leaves alone."""
    if not scaled_metric(name):
        return False
    info = metric_info(name)
    return not declared or info is None or info.scale is MetricScale.signed_unit


def finalize(draft: Draft, percent: bool, uri: str | None) -> RawRecord:
    """The record of ``draft``, its metrics and curve on one scale (percent when ``percent``): ``outcome.metrics``,
    ``outcome.curve`` and ``outcome.score`` (the primary metric, kept by a failed run that measured it)."""
    data = draft.data
    metrics = dict(draft.metrics)
    curve = [dict(p) for p in draft.curve]
    if percent:
        info = metric_info(draft.primary)
        declared = info is not None and info.scale is MetricScale.unit
        for name in metrics:
            if _divided_here(name, declared):
                metrics[name] /= 100.0
        for point in curve:
            if _divided_here(point["metric"], declared):
                point["value"] /= 100.0
        if declared:
            data["task"]["metric_scale"] = "percent"
    outcome = data["outcome"]
    outcome["metrics"] = metrics
    if curve:
        outcome["curve"] = curve
    if draft.primary in metrics:
        outcome["score"] = metrics[draft.primary]
    return RawRecord(data=data, locator=draft.locator, uri=uri)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def jsonable(value: Any) -> Any:
    """``value`` with enums, sets, tuples, paths and numpy/torch scalars turned into JSON types; non-finite floats
    into ``None`` (live ``TrainingArguments`` values, configs, metrics)."""
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if isinstance(value, bool) or value is None or isinstance(value, int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return sorted((jsonable(v) for v in value), key=str)
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return jsonable(value.item())
    return str(value)


__all__ = [
    "CARD_TOLERANCE",
    "COMPOSITE_METRICS",
    "EVAL_NON_METRICS",
    "PRIMARY_PREFERENCE",
    "TASK_TYPES",
    "Draft",
    "RunMetrics",
    "TrainerReport",
    "adapter_method",
    "apply_train_results",
    "eval_metrics",
    "finalize",
    "hparams_from_args",
    "is_eval_key",
    "jsonable",
    "mark_failure",
    "merge_hparams",
    "model_id",
    "own_percent",
    "peft_method",
    "primary_metric",
    "scaled_metric",
    "software",
    "state_curve",
    "state_extra",
    "state_hparams",
    "task_type",
    "trusted_card",
]
