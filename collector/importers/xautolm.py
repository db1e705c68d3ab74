"""XAutoLM / AutoGOAL experience store: one JSON file per pipeline the AutoML search evaluated.

Source: github.com/EEstevanell/XAutoLLM (XAutoLM, EMNLP 2025, arXiv 2508.00924; a fork of AutoGOAL), store
``experiments/data/experience_store/<task folder>/<YYYY-MM-DD>/<HH_MM_SS>-<uuid4>.json`` written by AutoGOAL's
``ExperienceStore.save_experience`` (``json.dump(indent=4)``). License: MIT (``provenance.license = "MIT"``).

Input: the store (a folder of task folders), one task folder, one date folder, or one experience file; a folder that
holds the store beside other files (``experience_store/``, ``overall_results.*.json``) is walked by ``metaml ingest``,
and the paper's aggregates ``overall_results*.json`` are skipped as files that hold no runs (:meth:`Xautolm.skips`).

One record per file (every file is one evaluated pipeline, whatever its outcome):

* ``algorithms[0]``: one ``{<Class>: {param: {"value": v}}}``. The class is method x classifier:
  ``FineTune`` -> ``full``, ``PartialFineTune`` -> ``partial_freeze`` (``num_trainable_layers`` ->
  ``method.config``), ``Lora`` -> ``lora`` (``lora_r``, ``lora_alpha``, ``lora_dropout``; ``lora_bias`` ->
  ``method.config.bias``, ``init_lora_weights``, ``fan_in_fan_out``, ``model_save`` -> ``method.config``); the
  suffix ``LLMEmbeddingClassifier`` / ``GenLLMClassifier`` -> ``method.config.classifier`` = ``embedding`` /
  ``generative``. ``inner_model.value`` holds the model as a class name (``WORD_EMB_Roberta_Large``), mapped to its
  Hub id by :data:`MODELS`; a class missing there is rejected (the reason names it).
* Training parameters: ``batch_size`` -> ``hparams.per_device_batch_size`` (x ``gradient_accumulation_steps`` =
  ``batch_size``), ``max_length`` -> ``max_seq_length``, ``learning_rate``, ``epochs``, ``warmup_steps``,
  ``weight_decay``, ``optimizer``, ``lr_scheduler``, ``dropout_rate`` -> ``dropout``, ``use_mixed_precision`` ->
  ``precision`` ``fp16`` / ``fp32``, ``gradient_clipping_max_norm`` -> ``hparams.extra.max_grad_norm`` when
  ``use_gradient_clipping`` is true (dropped when false: it did nothing); ``class_weighted_loss``,
  ``early_stopping_delta``, ``use_early_stopping``, ``early_stopping_patience``, ``num_workers`` ->
  ``hparams.extra``.
* ``dataset_features`` (AutoGOAL's ``TextClassificationFeatureExtractor``: n_instances, n_classes, class entropy in
  bits, min and max class probability, min/max class ratio, mean, std and coefficient of variation of the document
  length in characters, decision-tree landmarker accuracy) -> ``dataset.meta`` (``n_samples``, ``n_classes``,
  ``class_entropy`` = bits / log2(n_classes), ``min_class_share``, ``max_class_share``, ``imbalance_ratio`` = 1 /
  the ratio, ``chars_mean``, ``chars_std``); the coefficient of variation and the landmarker ->
  ``hparams.extra.dataset_coef_var_doc_length`` / ``dataset_landmark_decision_tree``.
* ``system_features`` (physical cores, logical cores, max CPU GHz, RAM GB, GPU memory GB) -> ``hardware.cpu``
  (``"8 cores, 16 threads, 5.0 GHz"``), ``hardware.memory_gb`` (rounded to 0.1 GB), ``hardware.accelerator``
  (``"GPU, <n> GB"`` when the GPU memory is above 0; 0 means it was not measured).
* Task folder (``liar``, ``sst2_warmstart (f-pos cos k=0.5)[F1+Time] (seed_42)``) -> ``dataset.name``: the part
  before ``_warmstart``, canonicalized (``sst2`` -> ``glue/sst2``); a file outside a ``<task>/<date>/`` layout takes
  it from its ``alias``. Task ``text-classification``, primary metric ``f1_macro`` (``f1`` is macro F1 on the
  search's holdout split, ``outcome.split = "holdout"``); ``accuracy`` -> ``outcome.metrics``;
  ``evaluation_time`` -> ``outcome.runtime_s`` (training and evaluation wall time, seconds).

Failures, both kept as ``status = "failed"`` runs: an ``error`` text (with null metrics) -> ``error_message`` and
``error_kind`` from :func:`~collector.importers._failures.error_kind` (``timeout`` for "Exceeded allowed time",
``oom`` for CUDA/CPU/shared memory exhaustion, else ``error``); ``f1 = -Infinity`` with ``evaluation_time =
Infinity`` and no text (AutoGOAL's mark of an evaluation that failed without an exception) -> ``error_kind =
"error"`` with a message saying so. Rejected, with the file as locator: invalid or truncated JSON, a file that is not
an experience, a score outside [0, 1] or NaN, neither score nor error, an unknown model class or algorithm.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from collector.errors import FormatError
from collector.formats._base import Format, Item, RawRecord, RecordProblem, Rejected
from collector.importers._failures import clip_message, error_kind
from collector.schema._vocab import canonical_dataset

LICENSE = "MIT"
SPLIT = "holdout"
MAX_FILE_BYTES = 1 << 20
EXPERIENCE_KEYS = frozenset({"algorithms", "dataset_features", "system_features"})
AGGREGATES = re.compile(r"^overall_results(\..+)?\.json$")
DATE_DIR = re.compile(r"^\d{4}-\d{2}-\d{2}$")
INF_MESSAGE = ("no error text: the search recorded f1 = -Infinity and evaluation_time = Infinity, AutoGOAL's mark of "
               "an evaluation that failed without an exception")

#: Algorithm class prefix -> method name (longest prefix first).
METHODS: tuple[tuple[str, str], ...] = (("PartialFineTune", "partial_freeze"), ("FineTune", "full"), ("Lora", "lora"))
#: Algorithm class suffix -> ``method.config.classifier``.
CLASSIFIERS: dict[str, str] = {"LLMEmbeddingClassifier": "embedding", "GenLLMClassifier": "generative"}

#: AutoGOAL model class name -> Hugging Face Hub id (the checkpoint the class loads; error texts in the store confirm
#: google-t5/t5-11b, the Mistral ids and microsoft/Phi-3-mini-4k-instruct).
MODELS: dict[str, str] = {
    "WORD_EMB_Albert_Base_V1": "albert-base-v1",
    "WORD_EMB_Albert_Large_V1": "albert-large-v1",
    "WORD_EMB_Albert_Xlarge_V1": "albert-xlarge-v1",
    "WORD_EMB_Albert_Xxlarge_V1": "albert-xxlarge-v1",
    "WORD_EMB_Bert_Base_Cased": "bert-base-cased",
    "WORD_EMB_Bert_Base_Uncased": "bert-base-uncased",
    "WORD_EMB_Bert_Base_Multilingual_Cased": "bert-base-multilingual-cased",
    "WORD_EMB_Bert_Base_Multilingual_Uncased": "bert-base-multilingual-uncased",
    "WORD_EMB_Bert_Large_Cased": "bert-large-cased",
    "WORD_EMB_Bert_Large_Uncased": "bert-large-uncased",
    "WORD_EMB_Distilbert_Base_Cased": "distilbert-base-cased",
    "WORD_EMB_Distilbert_Base_Uncased": "distilbert-base-uncased",
    "WORD_EMB_Distilbert_Base_Multilingual_Cased": "distilbert-base-multilingual-cased",
    "WORD_EMB_Google_Electra_Small_Discriminator": "google/electra-small-discriminator",
    "WORD_EMB_Google_Electra_Base_Discriminator": "google/electra-base-discriminator",
    "WORD_EMB_Microsoft_Deberta_Base": "microsoft/deberta-base",
    "WORD_EMB_Microsoft_Deberta_V3_Base": "microsoft/deberta-v3-base",
    "WORD_EMB_Microsoft_Mdeberta_V3_Base": "microsoft/mdeberta-v3-base",
    "WORD_EMB_Roberta_Base": "roberta-base",
    "WORD_EMB_Roberta_Large": "roberta-large",
    "WORD_EMB_Xlm_Roberta_Base": "xlm-roberta-base",
    "WORD_EMB_Xlm_Roberta_Large": "xlm-roberta-large",
    "WORD_EMB_Plantl_Gob_Es_Roberta_Base_Bne": "PlanTL-GOB-ES/roberta-base-bne",
    "WORD_EMB_Pysentimiento_Robertuito_Base_Uncased": "pysentimiento/robertuito-base-uncased",
    "TEXT_GEN_Gpt2": "gpt2",
    "TEXT_GEN_Gpt2_Medium": "gpt2-medium",
    "TEXT_GEN_Gpt2_Large": "gpt2-large",
    "TEXT_GEN_Gpt2_Xl": "gpt2-xl",
    "TEXT_GEN_Google_T5_T5_Small": "t5-small",
    "TEXT_GEN_Google_T5_T5_Base": "t5-base",
    "TEXT_GEN_Google_T5_T5_Large": "t5-large",
    "TEXT_GEN_Google_T5_T5_3B": "t5-3b",
    "TEXT_GEN_Google_T5_T5_11B": "t5-11b",
    "TEXT_GEN_Google_Flan_T5_Base": "google/flan-t5-base",
    "TEXT_GEN_Google_Flan_T5_Large": "google/flan-t5-large",
    "TEXT_GEN_Google_Flan_T5_Xl": "google/flan-t5-xl",
    "TEXT_GEN_Google_Flan_T5_Xxl": "google/flan-t5-xxl",
    "TEXT_GEN_Facebook_Bart_Base": "facebook/bart-base",
    "TEXT_GEN_Facebook_Bart_Large": "facebook/bart-large",
    "TEXT_GEN_Microsoft_Phi_1_5": "microsoft/phi-1_5",
    "TEXT_GEN_Microsoft_Phi_2": "microsoft/phi-2",
    "TEXT_GEN_Microsoft_Phi_3_Mini_4K_Instruct": "microsoft/Phi-3-mini-4k-instruct",
    "TEXT_GEN_Microsoft_Phi_3_Medium_4K_Instruct": "microsoft/Phi-3-medium-4k-instruct",
    "TEXT_GEN_Mistralai_Mistral_7B_V01": "mistralai/Mistral-7B-v0.1",
    "TEXT_GEN_Mistralai_Mistral_7B_Instruct_V01": "mistralai/Mistral-7B-Instruct-v0.1",
    "TEXT_GEN_Mistralai_Mistral_7B_Instruct_V02": "mistralai/Mistral-7B-Instruct-v0.2",
    "TEXT_GEN_Mistralai_Mixtral_8X7B_Instruct_V01": "mistralai/Mixtral-8x7B-Instruct-v0.1",
}

#: Training parameter -> ``hparams`` field.
HPARAMS: dict[str, str] = {
    "batch_size": "per_device_batch_size",
    "gradient_accumulation_steps": "gradient_accumulation_steps",
    "max_length": "max_seq_length",
    "learning_rate": "learning_rate",
    "epochs": "epochs",
    "warmup_steps": "warmup_steps",
    "weight_decay": "weight_decay",
    "optimizer": "optimizer",
    "lr_scheduler": "lr_scheduler",
    "dropout_rate": "dropout",
}
#: Training parameters kept verbatim in ``hparams.extra``.
EXTRA_HPARAMS = ("class_weighted_loss", "early_stopping_delta", "use_early_stopping", "early_stopping_patience",
                 "num_workers")
LORA_FIELDS = ("lora_r", "lora_alpha", "lora_dropout")
#: LoRA parameter -> ``method.config`` key.
LORA_CONFIG = {"lora_bias": "bias", "init_lora_weights": "init_lora_weights", "fan_in_fan_out": "fan_in_fan_out",
               "model_save": "model_save"}
#: Parameters consumed elsewhere (not copied to ``hparams.extra``).
CONSUMED = frozenset({"inner_model", "use_mixed_precision", "use_gradient_clipping", "gradient_clipping_max_norm",
                      "num_trainable_layers", *HPARAMS, *EXTRA_HPARAMS, *LORA_FIELDS, *LORA_CONFIG})


class Xautolm(Format):
    """Reads an XAutoLM / AutoGOAL experience store (the store, a task or date folder, or one file)."""

    name: ClassVar[str] = "xautolm"
    priority: ClassVar[int] = 130
    description: ClassVar[str] = ("XAutoLM / AutoGOAL experience store: one JSON per evaluated pipeline "
                                  "(<task>/<date>/<time>-<uuid>.json), failures included")
    source: ClassVar[str] = "xautolm"

    @classmethod
    def detect(cls, path: Path) -> bool:
        """An experience file, or a folder whose first JSON file within two folder levels (<task>/<date>/) is one."""
        if path.is_file():
            return path.suffix.lower() == ".json" and _looks_like_experience(path)
        first = _first_json(path, depth=2)
        return first is not None and _looks_like_experience(first)

    @classmethod
    def skips(cls, path: Path) -> str | None:
        """The paper's aggregate tables (``overall_results*.json``) hold no runs."""
        if path.is_file() and AGGREGATES.match(path.name):
            return "XAutoLM aggregate results (summaries per search, not runs)"
        return None

    def estimate(self, path: Path) -> int | None:
        return len(_files(path)) if path.exists() else None

    def read(self, path: Path) -> Iterator[Item]:
        """Yield one item per experience file under ``path`` (sorted by path).

        Raises:
            FormatError: ``path`` does not exist or holds no JSON file.
        """
        if not path.exists():
            raise FormatError("no such file or directory", uri=str(path))
        files = _files(path)
        if not files:
            raise FormatError("no experience file (*.json) here", uri=str(path))
        root = path.parent if path.is_file() else path
        for file in files:
            loc = file.relative_to(root).as_posix()
            try:
                yield RawRecord(_record(_load(file), file), loc, str(file))
            except RecordProblem as e:
                yield Rejected(loc, str(e), field=e.field, uri=str(file))


# -- files ---------------------------------------------------------------------------------------------------------


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*.json") if p.is_file() and not AGGREGATES.match(p.name)
                  and not any(part.startswith(".") for part in p.relative_to(path).parts))


def _first_json(path: Path, depth: int) -> Path | None:
    """The first JSON file found descending into the first sub-folder at each level (bounded, for detection)."""
    if not path.is_dir() or depth < 0:
        return None
    try:
        children = sorted(c for c in path.iterdir() if not c.name.startswith("."))
    except OSError:
        return None
    for child in children[:200]:
        if child.is_file() and child.suffix.lower() == ".json" and not AGGREGATES.match(child.name):
            return child
    for child in children[:20]:
        if child.is_dir():
            found = _first_json(child, depth - 1)
            if found is not None:
                return found
    return None


def _looks_like_experience(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(8192)
    except OSError:
        return False
    return b'"algorithms"' in head and (b'"dataset_features"' in head or b'"inner_model"' in head)


def _load(file: Path) -> dict[str, Any]:
    try:
        size = file.stat().st_size
        if size > MAX_FILE_BYTES:
            raise RecordProblem(None, f"file of {size:,} bytes, larger than an experience can be "
                                          f"({MAX_FILE_BYTES:,})")
        if size == 0:
            raise RecordProblem(None, "empty file")
        text = file.read_bytes().decode("utf-8")
        value = json.loads(text)  # accepts the -Infinity / Infinity tokens AutoGOAL writes
    except UnicodeDecodeError as e:
        raise RecordProblem(None, f"not UTF-8 text: {e}") from None
    except json.JSONDecodeError as e:
        raise RecordProblem(None, f"invalid JSON (truncated or malformed) at line {e.lineno} column {e.colno}: "
                                      f"{e.msg}") from None
    except OSError as e:
        raise RecordProblem(None, f"cannot read: {e}") from None
    if not isinstance(value, dict):
        raise RecordProblem(None, f"expected a JSON object, got {type(value).__name__}")
    missing = sorted(EXPERIENCE_KEYS - set(value))
    if missing:
        raise RecordProblem(missing[0], f"not an experience: missing {', '.join(missing)}")
    return value


# -- one experience ------------------------------------------------------------------------------------------------


def _record(exp: dict[str, Any], file: Path) -> dict[str, Any]:
    cls, params = _algorithm(exp)
    method = _method(cls, params)
    hparams = _hparams(params)
    meta, extra = _dataset_features(exp.get("dataset_features"))
    hparams.setdefault("extra", {}).update(extra)
    if not hparams["extra"]:
        del hparams["extra"]
    record: dict[str, Any] = {
        "task": {"type": "text-classification", "primary_metric": "f1_macro"},
        "dataset": {"name": _dataset_name(exp, file), "meta": meta},
        "model": {"id": _model_id(params)},
        "method": method,
        "hparams": hparams,
        "outcome": _outcome(exp),
        "provenance": {"license": LICENSE},
    }
    hardware = _hardware(exp.get("system_features"))
    if hardware:
        record["hardware"] = hardware
    return record


def _algorithm(exp: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    algorithms = exp["algorithms"]
    if not isinstance(algorithms, list) or len(algorithms) != 1 or not isinstance(algorithms[0], dict) \
            or len(algorithms[0]) != 1:
        raise RecordProblem("algorithms", "expected one algorithm ({class: parameters})")
    (cls, params), = algorithms[0].items()
    if not isinstance(params, dict):
        raise RecordProblem(f"algorithms.{cls}", "the algorithm's parameters are not an object")
    values: dict[str, Any] = {}
    for key, wrapped in params.items():
        values[key] = wrapped.get("value") if isinstance(wrapped, dict) and "value" in wrapped else wrapped
    return cls, values


def _method(cls: str, params: dict[str, Any]) -> dict[str, Any]:
    name = next((m for prefix, m in METHODS if cls.startswith(prefix)), None)
    classifier = next((c for suffix, c in CLASSIFIERS.items() if cls.endswith(suffix)), None)
    if name is None or classifier is None:
        raise RecordProblem("algorithms", f"unknown algorithm class {cls!r}: expected FineTune, PartialFineTune "
                                              f"or Lora followed by {' or '.join(CLASSIFIERS)}")
    method: dict[str, Any] = {"name": name}
    config: dict[str, Any] = {"classifier": classifier}
    if name == "partial_freeze" and params.get("num_trainable_layers") is not None:
        config["num_trainable_layers"] = params["num_trainable_layers"]
    if name == "lora":
        for key in LORA_FIELDS:
            if params.get(key) is not None:
                method[key] = params[key]
        for key, target in LORA_CONFIG.items():
            if params.get(key) is not None:
                config[target] = params[key]
    method["config"] = config
    return method


def _model_id(params: dict[str, Any]) -> str:
    inner = params.get("inner_model")
    if not isinstance(inner, dict) or len(inner) != 1:
        raise RecordProblem("inner_model", "expected inner_model.value to hold one model class")
    (cls,) = inner
    if cls not in MODELS:
        raise RecordProblem("inner_model", f"unknown model class {cls!r}: add its Hub id to "
                                               "collector.importers.xautolm.MODELS")
    return MODELS[cls]


def _hparams(params: dict[str, Any]) -> dict[str, Any]:
    hp: dict[str, Any] = {key: params[src] for src, key in HPARAMS.items() if params.get(src) is not None}
    if isinstance(params.get("use_mixed_precision"), bool):
        hp["precision"] = "fp16" if params["use_mixed_precision"] else "fp32"
    extra = {k: params[k] for k in EXTRA_HPARAMS if params.get(k) is not None}
    if params.get("use_gradient_clipping") is True and params.get("gradient_clipping_max_norm") is not None:
        extra["max_grad_norm"] = params["gradient_clipping_max_norm"]
    extra.update({k: v for k, v in params.items() if k not in CONSUMED and v is not None})
    if extra:
        hp["extra"] = extra
    return hp


def _dataset_name(exp: dict[str, Any], file: Path) -> str:
    folder = file.parent.parent.name if DATE_DIR.match(file.parent.name) else None
    name = folder or (exp.get("alias") if isinstance(exp.get("alias"), str) else None)
    if not name:
        raise RecordProblem("alias", "no task folder (<task>/<date>/<file>) and no alias to name the dataset")
    return canonical_dataset(re.split(r"_warmstart", name, maxsplit=1)[0].strip())


def _dataset_features(values: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    if values is None:
        return {}, {}
    if not isinstance(values, list) or len(values) != 10 or not all(_finite(v) for v in values):
        raise RecordProblem("dataset_features", "expected 10 finite numbers (TextClassificationFeatureExtractor)")
    n, k, entropy, p_min, p_max, ratio, mean, std, coef_var, landmark = values
    meta: dict[str, Any] = {"n_samples": int(n), "n_classes": int(k), "min_class_share": p_min,
                            "max_class_share": p_max, "chars_mean": mean, "chars_std": std}
    if k > 1:
        meta["class_entropy"] = min(1.0, entropy / math.log2(k))
    if ratio > 0:
        meta["imbalance_ratio"] = max(1.0, 1.0 / ratio)
    extra = {"dataset_coef_var_doc_length": coef_var, "dataset_landmark_decision_tree": landmark}
    return meta, extra


def _hardware(values: Any) -> dict[str, Any]:
    if not isinstance(values, list) or len(values) != 5 or not all(_finite(v) for v in values):
        return {}
    cores, threads, ghz, ram_gb, gpu_gb = values
    hardware: dict[str, Any] = {"cpu": f"{int(cores)} cores, {int(threads)} threads, {ghz:g} GHz",
                                "memory_gb": round(ram_gb, 1)}
    if gpu_gb > 0:
        hardware["accelerator"] = f"GPU, {gpu_gb:g} GB"
    return hardware


def _outcome(exp: dict[str, Any]) -> dict[str, Any]:
    error = exp.get("error")
    f1, accuracy, seconds = exp.get("f1"), exp.get("accuracy"), exp.get("evaluation_time")
    if isinstance(error, str) and error.strip():
        return {"status": "failed", "error_kind": error_kind(error), "error_message": clip_message(error)}
    if isinstance(f1, float) and f1 == -math.inf:
        return {"status": "failed", "error_kind": "error", "error_message": INF_MESSAGE}
    if f1 is None:
        raise RecordProblem("f1", "neither a score (f1) nor an error")
    if not _finite(f1) or not 0.0 <= f1 <= 1.0:
        raise RecordProblem("f1", f"f1 = {f1!r} is not a macro F1 in [0, 1]")
    out: dict[str, Any] = {"status": "ok", "score": f1, "split": SPLIT, "metrics": {"f1_macro": f1}}
    if _finite(accuracy):
        out["metrics"]["accuracy"] = accuracy
    if _finite(seconds) and seconds >= 0:
        out["runtime_s"] = seconds
    return out


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
