"""Hugging Face model cards: one card written by the Trainer -> one fine-tuning run.

Formats
    ``hf_cards`` (:class:`ModelCards`, source ``hf_cards``) reads ``<author>/<model>/README.md`` cards from a
    ``.tar.gz`` archive (the shipped ``cards.tar.gz``, read in place) or from a plain directory (what
    :func:`collector.importers.harvest.harvest_hub` writes, with an optional ``config.json`` beside each card).
    ``hub_samples`` (:class:`HubSamples`, source ``hub_samples``) reads a JSON object of Hub API model entries
    (``modelId``, ``tags``, ``downloads``, ``likes``, ``modelcard_text``): the same card parser, with the Hub tags as
    hints (pipeline task, ``dataset:``, ``base_model:``, ``license:``).

Field mapping (card part -> record field; the card is cut by :mod:`collector.importers._card_parse`)
    * ``provenance.locator`` = the fine-tuned model's id (``author/model``, where the record lives on the Hub); the
      same id is kept as ``hparams.extra["output_model"]`` (it is part of the run's identity: two cards with the same
      base model, data and hyperparameters are two runs). ``provenance.license`` = the card's ``license:`` (front
      matter) or the Hub tag ``license:x``; the scrape itself states no license (ORIGIN.txt).
    * ``model.id`` = the base model (the starting checkpoint) from "This model is a fine-tuned version of
      [x](https://huggingface.co/x)" (the link's URL wins over its text), else front matter ``base_model``, else the
      Hub tag ``base_model:x``.
    * ``task.type`` = model-index ``task.type`` > front matter ``pipeline_tag`` > a pipeline-task Hub tag or card tag
      > the metric signature (wer/cer -> ASR, rouge -> summarization, bleu -> translation, exact_match -> QA,
      seqeval ``overall_*`` -> token classification) > the dataset (conll2003 -> token classification, squad -> QA,
      xsum -> summarization, ...) > words in the model ids (``-ner``, ``squad``, ``wav2vec2``, ``gpt``...) > other.
      ``text2text-generation`` becomes summarization / translation by its metrics (rouge / bleu), else
      text-generation; ``fill-mask`` and other Hub tasks without a task type of their own become ``other``; the Hub
      task name is then kept as ``hparams.extra["hf_task"]``.
    * ``dataset.name`` = model-index ``dataset.type`` + ``/`` + ``dataset.args`` (or ``config``) > the sentence
      "on the X dataset" (``GLUE MNLI`` -> ``glue/mnli``, ``MOZILLA-FOUNDATION/COMMON_VOICE_8_0 - FR`` ->
      ``mozilla-foundation/common_voice_8_0/fr``; several datasets -> their names joined by ``+``) > front matter
      ``datasets`` > Hub tags ``dataset:x`` > the axolotl config's ``datasets[].path``. A benchmark named without its
      task (``glue``, ``super_glue``, ``tweet_eval``) takes the task from the model id (``...-finetuned-cola`` ->
      ``glue/cola``); Common Voice / FLEURS without a config take the card's single language tag.
    * ``method.name`` = ``full`` unless the card shows PEFT (framework ``PEFT``/``peft==``, tags ``peft``/``lora``,
      ``library_name: peft``, an axolotl ``adapter:``): then ``qlora`` when 4-bit loading is stated, a PEFT method
      named in the model id (``adalora``, ``ia3``, ``prefix_tuning``...), else ``lora``; ``lora_r`` / ``lora_alpha`` /
      ``lora_dropout`` / ``target_modules`` from an axolotl config when the card embeds one.
    * ``hparams``: ``learning_rate``; ``per_device_batch_size`` = ``train_batch_size``; ``batch_size`` =
      ``total_train_batch_size`` (else per-device x accumulation x devices); ``gradient_accumulation_steps``;
      ``epochs`` = ``num_epochs``; ``max_steps`` = ``training_steps``; ``warmup_steps`` / ``warmup_ratio`` =
      ``lr_scheduler_warmup_steps`` / ``_ratio``; ``lr_scheduler`` = ``lr_scheduler_type``; ``optimizer``: the
      Trainer's "Adam with betas=(b1,b2) and epsilon=e" is its AdamW (the template printed "Adam" for it) -> ``adamw``
      with the betas and epsilon in ``extra``; Keras optimizer dicts give their name, learning rate (scalar or the
      ``initial_learning_rate`` of a schedule) and ``weight_decay_rate``; ``precision``: ``Native AMP`` / Apex ->
      fp16, ``training_precision: float32`` -> fp32, ``mixed_float16`` -> fp16 (absent stays unknown: old Trainer
      versions printed nothing for bf16); ``seed``; ``label_smoothing`` = ``label_smoothing_factor``;
      ``weight_decay``. Every other key of the block goes verbatim into ``hparams.extra`` (``eval_batch_size``,
      ``distributed_type``, ...).
    * ``outcome``: ``metrics`` = the final results list ("It achieves the following results on the evaluation set:")
      with canonical names (``Loss`` / ``Validation Loss`` -> ``loss``, ``Train Loss`` -> ``train_loss``, ``Overall
      F1`` -> ``f1``, ``Rouge2 Fmeasure`` -> ``rouge2``, ``Sacrebleu`` -> ``bleu``...; epoch, step, runtime and
      throughput entries are not metrics and are dropped); when the list is missing: the last row of the results
      table, then the model-index metrics. ``split`` = ``test`` when the list says "on the test set", else
      ``validation``. ``curve`` = every numeric cell of the "Training results" table, one point per (row, metric
      column) with the row's ``Step`` and ``Epoch``; "No log" cells are skipped. ``score`` = the primary metric.
    * ``hardware.software`` = "Framework versions" (``transformers``, ``pytorch``, ``datasets``, ``tokenizers``,
      ``tensorflow``, ``peft``...); ``hardware.accelerator`` = ``cpu`` for a ``+cpu`` PyTorch build, ``tpu`` for
      ``distributed_type: tpu``; ``accelerator_count`` = ``num_devices``.
    * ``config.json`` beside a harvested card: ``model_type`` -> ``model.family``, layers / hidden size / heads /
      vocabulary / positions -> ``model.*``, ``len(id2label)`` -> ``dataset.meta.n_classes`` (classification).

Primary metric
    text/image classification and multiple choice: accuracy, else f1 (then f1_macro, f1_micro, f1_weighted, matthews
    correlation, pearson, spearman, mae, mse); token classification: f1 (entity-level seqeval F1; token accuracy is
    dominated by the O tag), else accuracy; question answering: f1, else exact_match; ASR: wer, else cer; others: the
    model-index's first metric, else rouge1/rougel/bleu/accuracy/f1. Language-modelling runs (text-generation,
    fill-mask) fall back to perplexity, then the evaluation loss. Any other task whose card reports only a loss is
    rejected (no task metric).

Scales
    Cards mostly report fractions, but the summarization and translation scripts (rouge, bleu) and the Whisper
    fine-tuning event (wer) report percents. Detection is per metric series (final value, model-index value and the
    table column together): a unit-scale metric with any value above 1 is in percent; wer/cer are in percent when a
    value exceeds 2 (a fractional WER can pass 1, rarely 2). When the primary metric is in percent the record
    declares ``task.metric_scale: percent`` and the schema converts; unit-scale series on the other scale are
    brought to the declared one first, and wer/cer percents (unbounded in the registry, so never converted by the
    schema) are divided by 100 here.

Rejected (one Rejected per card, nothing dropped silently)
    no Trainer hyperparameter block; base model unknown / trained from scratch / a local path; no dataset ("on the
    None dataset", "an unknown dataset", a description instead of a name); a benchmark without its task; no metric;
    only a loss for a non-LM task; a malformed "Training results" table (row and cell counts in the reason); a front
    matter that is not YAML; a card that is not UTF-8. Cards whose final score is at chance level stay ``ok``.

Conflicts
    The final results list wins over the table's last row and over the model-index (for Trainer cards they agree; in
    hand-edited cards the model-index often holds test-set numbers of a separate evaluation, e.g. WER with a language
    model). The model-index wins over the sentence for the task and dataset (it carries the config). A card's own
    text wins over Hub tags.
"""

from __future__ import annotations

import json
import math
import re
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

from collector.errors import FormatError
from collector.formats._base import Format, Item, RawRecord, Rejected
from collector.importers._card_parse import CardParts, ResultsTable, parse_card, parse_value
from collector.schema._vocab import METHODS, MetricScale, canonical_dataset, canonical_metric, metric_info

# ----------------------------------------------------------------------------------------------------------------
# Vocabulary specific to model cards

#: Hub pipeline tags that are task types of the record as they are.
DIRECT_TASKS = {
    "text-classification", "token-classification", "question-answering", "multiple-choice", "summarization",
    "translation", "text-generation", "image-classification", "automatic-speech-recognition",
}
#: Hub pipeline tags without a task type of their own (-> ``other``, the tag kept in ``hparams.extra["hf_task"]``).
OTHER_TASKS = {
    "fill-mask", "audio-classification", "image-segmentation", "object-detection", "feature-extraction",
    "sentence-similarity", "text-to-speech", "image-to-text", "conversational", "table-question-answering",
    "text2text-generation", "audio-to-audio", "voice-activity-detection",
    "visual-question-answering", "document-question-answering", "text-to-image", "reinforcement-learning",
    "tabular-classification", "tabular-regression", "depth-estimation", "video-classification",
    "zero-shot-image-classification", "image-to-image", "text-to-audio",
}
TASK_ALIASES = {
    "speech-recognition": "automatic-speech-recognition",
    "asr": "automatic-speech-recognition",
    "ner": "token-classification",
    "named-entity-recognition": "token-classification",
    "sequence-classification": "text-classification",
    "natural-language-inference": "text-classification",
    "sentiment-analysis": "text-classification",
    "causal-lm": "text-generation",
    "text generation": "text-generation",
    "masked-language-modeling": "fill-mask",
    "zero-shot-classification": "text-classification",
}
LM_TASKS = {"text-generation", "fill-mask"}

#: Dataset (first path part, canonical) -> task, for cards that name no task.
DATASET_TASKS: dict[str, str] = {
    **dict.fromkeys(
        ["conll2003", "conll2002", "wnut_17", "wikiann", "ncbi_disease", "jnlpba", "mim_gold_ner", "harem",
         "lener_br", "germeval_14", "few_nerd", "bc2gm_corpus", "species_800", "xtreme", "polyglot_ner", "nerd"],
        "token-classification"),
    **dict.fromkeys(
        ["squad", "squad_v2", "squad_es", "squadv1", "squad1.1", "adversarial_qa", "tydiqa", "xquad", "mlqa",
         "covid_qa_deepset", "thaiqa_squad", "quoref", "subjqa", "squad_it", "germanquad"],
        "question-answering"),
    **dict.fromkeys(["swag", "commonsense_qa", "cosmos_qa", "race", "piqa", "hellaswag", "social_i_qa"],
                    "multiple-choice"),
    **dict.fromkeys(
        ["xsum", "cnn_dailymail", "samsum", "scientific_papers", "billsum", "multi_news", "mlsum", "wikihow",
         "gigaword", "reddit_tifu", "big_patent", "newsroom"],
        "summarization"),
    **dict.fromkeys(["wmt14", "wmt16", "wmt19", "wmt16_en_ro_pre_processed", "kde4", "opus_books", "opus100",
                     "opus_wikipedia", "tatoeba", "ted_talks_iwslt", "iwslt2017"], "translation"),
    **dict.fromkeys(["common_voice", "librispeech_asr", "timit_asr", "ami", "openslr", "fleurs", "voxpopuli",
                     "mozilla-foundation", "google", "multilingual_librispeech", "speech-recognition-community-v2"],
                    "automatic-speech-recognition"),
    **dict.fromkeys(["cifar10", "cifar100", "beans", "cats_vs_dogs", "imagefolder", "huggingpics", "food101", "mnist",
                     "fashion_mnist", "eurosat"], "image-classification"),
    **dict.fromkeys(
        ["glue", "super_glue", "tweet_eval", "imdb", "emotion", "amazon_reviews_multi", "ag_news", "yelp_review_full",
         "yelp_polarity", "rotten_tomatoes", "financial_phrasebank", "dbpedia_14", "clinc_oos", "banking77",
         "sst2", "trec", "sms_spam", "ade_corpus_v2", "indonlu", "klue", "tamilmixsentiment", "emo", "go_emotions",
         "snli", "multi_nli", "anli", "xnli", "paws", "hate_speech18", "poem_sentiment", "app_reviews"],
        "text-classification"),
}
#: Datasets that a base model's language-modelling run uses (task: text-generation or fill-mask by the model).
LM_DATASETS = {"wikitext", "oscar", "bookcorpus", "c4", "wikipedia", "cc100", "openwebtext"}

#: Multi-task benchmarks whose name alone does not identify the task: name -> its configs.
BENCHMARK_CONFIGS: dict[str, tuple[str, ...]] = {
    "glue": ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli", "ax"),
    "super_glue": ("boolq", "cb", "copa", "multirc", "record", "rte", "wic", "wsc", "axb", "axg"),
    "tweet_eval": ("emoji", "emotion", "hate", "irony", "offensive", "sentiment", "stance_abortion",
                   "stance_atheism", "stance_climate", "stance_feminist", "stance_hillary"),
}
#: Card spellings of datasets -> their Hub names.
DATASET_NAMES = {
    "cnn/dailymail": "cnn_dailymail",
    "cnn_dailymail": "cnn_dailymail",
    "squadv1": "squad",
    "squad_v1": "squad",
    "squad1.1": "squad",
    "squadv2": "squad_v2",
    "squad2": "squad_v2",
}
#: Words of a free-text dataset phrase that mean "no identifiable dataset".
VAGUE_DATASET_WORDS = {
    "none", "unknown", "unkown", "custom", "our", "my", "own", "private", "the", "a", "an", "some", "texts", "this",
    "their", "internal", "mysterious", "proprietary", "in-house", "company",
}

#: Result / column names that are bookkeeping, not metrics.
NON_METRICS = re.compile(
    r"^(?:eval_|train_|validation_)?(?:epoch|step|runtime|samples_per_second|steps_per_second|total_flos|"
    r"train_runtime|train_samples_per_second)$"
)
#: Card-specific metric spellings -> canonical names (before :func:`canonical_metric`).
CARD_METRIC_NAMES: dict[str, str] = {
    "training_loss": "train_loss",
    "train_loss": "train_loss",
    "validation_loss": "loss",
    "valid_loss": "loss",
    "val_loss": "loss",
    "eval_loss": "loss",
    "loss": "loss",
    "sacrebleu": "bleu",
    "bleu_score": "bleu",
    "f1_score": "f1",
    "fscore": "f1",
    "f_score": "f1",
    "rouge2_fmeasure": "rouge2",
    "rouge1_fmeasure": "rouge1",
    "rougel_fmeasure": "rougel",
    "rouge_1": "rouge1",
    "rouge_2": "rouge2",
    "sparse_categorical_accuracy": "accuracy",
    "binary_accuracy": "accuracy",
    "categorical_accuracy": "accuracy",
    "overall_accuracy": "accuracy",
    "overall_f1": "f1",
    "overall_precision": "precision",
    "overall_recall": "recall",
    "matthews_correlation": "matthews_correlation",
    "f1_micro": "f1_micro",
    "f1_macro": "f1_macro",
    "f1_weighted": "f1_weighted",
    "micro_avg_f1_score": "f1_micro",
    "micro_avg_precision": "precision",
    "micro_avg_recall": "recall",
    "test_wer": "wer",
    "test_cer": "cer",
}
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
#: Folder that a harvest uses for model ids without an author (``_/gpt2/README.md`` is the card of ``gpt2``).
LEGACY_AUTHOR = "_"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(?:/[\w.\-]+)?$")
_AXOLOTL_BLOCK = re.compile(r"```ya?ml\s*\n(.*?)```", re.S)


class CardRejected(Exception):
    """A card that cannot become a usable run; ``reason`` says why, ``field`` which record field is missing."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


@dataclass
class CardContext:
    """What is known about a card besides its text."""

    model_id: str
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] | None = None


# ----------------------------------------------------------------------------------------------------------------
# Card -> record


def card_to_record(text: str, ctx: CardContext) -> dict[str, Any]:
    """Map one card to a record dict in the nested RunRecord shape.

    Raises:
        CardRejected: the card cannot yield a usable run (the reason is precise enough to act on).
    """
    parts = parse_card(text)
    if parts.front_matter_error:
        raise CardRejected(parts.front_matter_error)
    if not parts.has_hparam_block:
        raise CardRejected("no Trainer hyperparameter block", "hparams")
    if parts.table_error:
        raise CardRejected(f"unparseable {parts.table_error}", "outcome.curve")
    fm = parts.front_matter
    axolotl = _axolotl_config(text)
    base = _base_model(parts, fm, ctx, axolotl)
    index = _model_index(fm)
    dataset = _dataset(parts, fm, ctx, index, axolotl)
    final, split = _final_metrics(parts, index)
    hf_task = _task(parts, fm, ctx, index, final, dataset, base)
    task_type = _task_type(hf_task, final)
    primary = _primary_metric(task_type, hf_task, final, index)
    curve = _curve(parts.table)
    hparams, hardware = _hparams(parts.hyperparameters, parts.frameworks, axolotl)
    hparams["extra"]["output_model"] = ctx.model_id
    if hf_task and hf_task != task_type:
        hparams["extra"]["hf_task"] = hf_task
    task, metrics, curve_points, score = _scaled(primary, final, curve)
    task["type"] = task_type
    record: dict[str, Any] = {
        "task": task,
        "dataset": {"name": dataset},
        "model": {"id": base},
        "method": _method(parts, fm, ctx, axolotl, text),
        "hparams": hparams,
        "outcome": {"status": "ok", "score": score, "split": split, "metrics": metrics, "curve": curve_points},
        "hardware": hardware,
        "provenance": {"license": _license(fm, ctx)},
    }
    if ctx.config:
        _apply_config(record, ctx.config, task_type)
    return record


def card_task(text: str, model_id: str, tags: Iterable[str] = ()) -> set[str]:
    """The task names of a card (its Hub task and the record's task type), by the same precedence as
    :func:`card_to_record`, for cards that cannot yield a record too (used to list an offline directory by task)."""
    parts = parse_card(text)
    fm, ctx = parts.front_matter, CardContext(model_id, list(tags))
    index = _model_index(fm)
    final, _ = _final_metrics(parts, index)
    base = (_hub_id(parts.base_model_text) if parts.base_model_text else None) or ""
    try:
        dataset = _dataset(parts, fm, ctx, index, {})
    except CardRejected:
        dataset = ""
    hf_task = _task(parts, fm, ctx, index, final, dataset, base)
    return {t for t in (hf_task, _task_type(hf_task, final)) if t}


# --- base model ---------------------------------------------------------------------------------------------------


def _base_model(parts: CardParts, fm: dict[str, Any], ctx: CardContext, axolotl: dict[str, Any]) -> str:
    candidates: list[str] = []
    if parts.base_model_text:
        candidates.append(parts.base_model_text)
    fm_base = fm.get("base_model")
    if isinstance(fm_base, list) and fm_base:
        fm_base = fm_base[0]
    if isinstance(fm_base, str):
        candidates.append(fm_base)
    candidates += [t.split(":", 1)[1] for t in ctx.tags if t.startswith("base_model:") and t.count(":") == 1]
    candidates += [t.rsplit(":", 1)[1] for t in ctx.tags if t.startswith("base_model:") and t.count(":") == 2]
    if isinstance(axolotl.get("base_model"), str):
        candidates.append(axolotl["base_model"])
    if not candidates:
        if parts.trained_from_scratch:
            raise CardRejected("no base model: the card says the model was trained from scratch", "model.id")
        raise CardRejected("no base model: the card does not say which checkpoint it was fine-tuned from", "model.id")
    raw = candidates[0]
    model = _hub_id(raw)
    if model is None:
        if re.fullmatch(r"\s*(?:https?://)?huggingface\.co/?\s*", raw):
            raise CardRejected("no base model: the card's base-model link is empty (https://huggingface.co/)",
                               "model.id")
        raise CardRejected(f"base model {raw!r} is a local path, not a Hub model id", "model.id")
    return model


def _hub_id(raw: str) -> str | None:
    """The Hub model id in a link URL or name, or None for a local path / empty link."""
    text = raw.strip().strip("`*'\"")
    if "huggingface.co/" in text:
        text = text.split("huggingface.co/", 1)[1]
    text = re.split(r"[?#]", text)[0]
    text = re.sub(r"/(?:tree|blob|resolve)/.*$", "", text).strip("/")
    if not text or text.startswith((".", "~", "\\")) or raw.strip().startswith("/") or "\\" in text:
        return None
    if re.search(r"(?:^|/)checkpoint[-_]\d+$", text) or "content/" in text or "drive/" in text:
        return None
    if text.startswith("models/") and text.count("/") >= 2:
        text = text[len("models/") :]
    return text if _HUB_ID.match(text) else None


# --- dataset ------------------------------------------------------------------------------------------------------


def _model_index(fm: dict[str, Any]) -> dict[str, Any]:
    """The first result of the front matter's model-index (task, dataset, metrics), or {}."""
    index = fm.get("model-index", fm.get("model_index"))
    if not isinstance(index, list) or not index or not isinstance(index[0], dict):
        return {}
    results = index[0].get("results")
    if not isinstance(results, list) or not results or not isinstance(results[0], dict):
        return {}
    first = results[0]
    metrics = first.get("metrics", first.get("metric"))
    if isinstance(metrics, dict):
        metrics = [metrics]
    return {
        "task": first.get("task") if isinstance(first.get("task"), dict) else {},
        "datasets": [r["dataset"] for r in results if isinstance(r, dict) and isinstance(r.get("dataset"), dict)],
        "metrics": [m for m in metrics or [] if isinstance(m, dict)],
    }


def _dataset(parts: CardParts, fm: dict[str, Any], ctx: CardContext, index: dict[str, Any],
             axolotl: dict[str, Any]) -> str:
    """The canonical dataset: see the module docstring. The front matter's ``datasets`` (the Trainer's dataset
    tags) arbitrate when the sentence and the model-index disagree."""
    declared = _declared_datasets(fm, ctx)
    indexed = [n for n in (_dataset_from_index(ds) for ds in index.get("datasets") or []) if n]
    said, strong = _dataset_from_phrase(parts.dataset_phrase, declared) if parts.dataset_phrase else (None, False)
    ordered: list[str] = []
    if said is not None:
        with_config = [n for n in indexed if n.startswith(said + "/")]
        ordered.append(with_config[0] if with_config else said)
        if not strong and not with_config:
            ordered = [*indexed, *ordered]
    ordered += [n for n in indexed if n not in ordered]
    known = {canonical_dataset(d) for d in declared}
    agreeing = [c for c in ordered if any(c == d or c.startswith(d + "/") for d in known)]
    name = (agreeing or ordered or [None])[0]
    if name is None:
        fallback = declared or _axolotl_datasets(axolotl)
        if fallback:
            name = "+".join(dict.fromkeys(canonical_dataset(d) for d in fallback[:4]))
    if name is None:
        phrase = parts.dataset_phrase
        why = f"the card names it {phrase!r}" if phrase else "the card names none"
        raise CardRejected(f"no dataset: {why}", "dataset.name")
    return _complete_config(name, ctx.model_id, fm, ctx.tags)


def _dataset_from_index(ds: dict[str, Any]) -> str | None:
    hub = ds.get("type") or ds.get("name")
    if not isinstance(hub, str) or not hub.strip() or hub.strip().lower() in VAGUE_DATASET_WORDS:
        return None
    hub = hub.strip()
    if " " in hub and not _HUB_ID.match(hub):
        hub = re.sub(r"\s+", "_", hub)
    config = ds.get("args", ds.get("config"))
    if isinstance(config, dict):
        config = config.get("name") or config.get("config") or config.get("lang")
    return _with_config(hub, config if isinstance(config, str) else None)


def _with_config(hub: str, config: str | None) -> str:
    """``hub/config`` canonical, without a config that only repeats the dataset's name (``conll2003/conll2003``)."""
    hub = DATASET_NAMES.get(hub.strip().lower(), hub.strip())
    if config is None or not config.strip() or config.strip().lower() in ("default", "none", "plain_text", "na"):
        return canonical_dataset(hub)
    config = config.strip()
    if re.sub(r"[^a-z0-9]", "", config.lower()) == re.sub(r"[^a-z0-9]", "", hub.lower().rsplit("/", 1)[-1]):
        return canonical_dataset(hub)
    return canonical_dataset(f"{hub}/{config}")


def _declared_datasets(fm: dict[str, Any], ctx: CardContext) -> list[str]:
    declared = fm.get("datasets", fm.get("dataset"))
    if isinstance(declared, str):
        declared = [declared]
    names = [d for d in declared or [] if isinstance(d, str) and d.strip()]
    names += [t.split(":", 1)[1] for t in ctx.tags if t.startswith("dataset:")]
    return list(dict.fromkeys(n.strip() for n in names))


def _dataset_from_phrase(phrase: str, declared: list[str]) -> tuple[str | None, bool]:
    """A canonical dataset name from "on the X dataset" (None when X names no identifiable dataset), and whether
    it is a strong name (a Hub id, ``NAME - CONFIG`` or ``GLUE TASK``) rather than free text."""
    text = re.sub(r"[\[\]`*]", "", phrase).strip().strip(".,;:")
    glue = re.fullmatch(r"(GLUE|SUPER_?GLUE)\s+(\w+)", text, re.I)
    if glue:
        bench = "glue" if glue.group(1).lower() == "glue" else "super_glue"
        return canonical_dataset(f"{bench}/{glue.group(2).lower()}"), True
    pieces = [p.strip() for p in re.split(r",|\s+and\s+|\s+&\s+", text) if p.strip()]
    found = [_phrase_piece(p, declared) for p in pieces]
    names = [n for n, _ in found if n]
    if not names:
        return None, False
    return "+".join(dict.fromkeys(names)), all(strong for n, strong in found if n)


def _phrase_piece(piece: str, declared: list[str]) -> tuple[str | None, bool]:
    piece = re.sub(r"^(?:the|a|an)\s+", "", piece, flags=re.I).strip()
    words = piece.split()
    if not words or words[0].lower() in VAGUE_DATASET_WORDS:
        return None, False
    if " - " in piece:
        hub, config = (s.strip() for s in piece.split(" - ", 1))
        hub = hub.split()[-1] if hub.split() else ""
        hub = _match_declared(hub, declared) or hub
        if not hub:
            return None, False
        return _with_config(hub.lower(), config.strip("-").strip().lower()), True
    match = _match_declared(piece, declared)
    if match:
        return _with_config(match, None), True
    if _HUB_ID.match(piece):
        return _with_config(piece, None), True
    if len(words) > 4 or any(w.lower() in VAGUE_DATASET_WORDS for w in words) or re.search(
            r"\d+\s+(?:hours|epochs)", piece, re.I):
        return None, False
    return canonical_dataset(piece), False


def _match_declared(piece: str, declared: list[str]) -> str | None:
    """The declared dataset id (front matter / tags) whose letters contain the phrase's ("Common Voice 11.0" ->
    mozilla-foundation/common_voice_11_0)."""
    key = re.sub(r"[^a-z0-9]", "", piece.lower())
    for d in declared:
        if key and key in re.sub(r"[^a-z0-9]", "", d.lower()):
            return d
    return None


def _complete_config(name: str, model_id: str, fm: dict[str, Any], tags: list[str]) -> str:
    """Add the task of a benchmark named alone (from the model id) or the language of a speech corpus."""
    if name in BENCHMARK_CONFIGS:
        tokens = set(re.split(r"[^a-z0-9]+", model_id.lower().replace("sst-2", "sst2").replace("sts-b", "stsb")))
        found = [c for c in BENCHMARK_CONFIGS[name] if c in tokens]
        if len(found) != 1:
            raise CardRejected(
                f"dataset {name!r} names a benchmark without its task (config) and the model id "
                f"{model_id!r} does not name one", "dataset.name")
        return canonical_dataset(f"{name}/{found[0]}")
    if _SPEECH_CORPUS.match(name):
        langs = _languages(fm, tags)
        if len(langs) == 1:
            return f"{name}/{langs[0]}"
    return name


_SPEECH_CORPUS = re.compile(r"^(?:mozilla-foundation/)?common_voice(?:_[\d_]+)?$|^(?:google/)?fleurs$")


def _languages(fm: dict[str, Any], tags: list[str]) -> list[str]:
    lang = fm.get("language", fm.get("languages"))
    langs = [lang] if isinstance(lang, str) else [x for x in lang or [] if isinstance(x, str)]
    if not langs:
        langs = [t for t in tags if re.fullmatch(r"[a-z]{2,3}(?:-[A-Za-z]{2,4})?", t)]
    return list(dict.fromkeys(x.lower() for x in langs))


# --- task ---------------------------------------------------------------------------------------------------------


def _normalize_task(name: Any) -> str | None:
    if not isinstance(name, str) or not name.strip():
        return None
    key = name.strip().lower().replace("_", "-")
    key = TASK_ALIASES.get(key, key)
    return key if key in DIRECT_TASKS or key in OTHER_TASKS else None


def _task(parts: CardParts, fm: dict[str, Any], ctx: CardContext, index: dict[str, Any],
          final: dict[str, float], dataset: str, base: str) -> str | None:
    """The Hub task name (pipeline tag spelling) of the run, by the precedence in the module docstring."""
    for candidate in ((index.get("task") or {}).get("type"), (index.get("task") or {}).get("name"),
                      fm.get("pipeline_tag")):
        task = _normalize_task(candidate)
        if task:
            return task
    for tag in list(ctx.tags) + [t for t in fm.get("tags") or [] if isinstance(t, str)]:
        task = _normalize_task(tag)
        if task:
            return task
    return (_task_from_metrics(final) or _task_from_dataset(dataset, base, final)
            or _task_from_ids(ctx.model_id, base, final))


def _task_from_metrics(final: dict[str, float]) -> str | None:
    names = set(final)
    if names & {"wer", "cer"}:
        return "automatic-speech-recognition"
    if any(n.startswith("rouge") for n in names):
        return "summarization"
    if "bleu" in names:
        return "translation"
    if "exact_match" in names:
        return "question-answering"
    return None


def _task_from_dataset(dataset: str, base: str, final: dict[str, float]) -> str | None:
    head = dataset.split("+")[0].split("/")[0]
    if head in LM_DATASETS:
        return "text-generation" if _is_causal(base) else "fill-mask"
    if _AUDIO.search(base.lower()) and not final.keys() & {"wer", "cer"}:
        return None
    flat = dataset.split("+")[0]
    if "common_voice" in flat or "librispeech" in flat:
        return "automatic-speech-recognition"
    return DATASET_TASKS.get(head)


def _is_causal(model: str) -> bool:
    return bool(re.search(r"gpt|opt-|llama|bloom|pythia|mistral|falcon|codegen|neo|phi-|qwen|gemma", model.lower()))


_AUDIO = re.compile(r"wav2vec|hubert|whisper|wavlm|xls-?r|xlsr|unispeech|(?:^|[/_-])sew|speech|audio|(?:^|/)ast-")
_VISION = re.compile(r"(?:^|[/_-])vit(?:$|[/_-])|convnext|swin|beit|deit|resnet|image|segformer|mobilevit|"
                     r"efficientnet|dinov2|levit|regnet|poolformer|(?:^|/)cvt")
_CLASSIFICATION_METRICS = {"accuracy", "f1", "f1_macro", "f1_micro", "f1_weighted", "matthews_correlation",
                           "pearson", "spearman", "mae", "mse", "rmse", "precision", "recall", "roc_auc"}


def _task_from_ids(model_id: str, base: str, final: dict[str, float]) -> str | None:
    """The task from words of the model ids, then from the base model's modality and the metrics."""
    ids = f"{model_id} {base}".lower()
    tokens = set(re.split(r"[^a-z0-9]+", ids))
    classifies = bool(final.keys() & _CLASSIFICATION_METRICS)
    if _AUDIO.search(base.lower()):
        if final.keys() & {"wer", "cer"}:
            return "automatic-speech-recognition"
        return "audio-classification" if classifies else None
    if _VISION.search(base.lower()):
        return "image-classification" if classifies else None
    rules: list[tuple[bool, str]] = [
        (bool(tokens & {"ner", "pos", "token", "conll", "conll2003", "wnut"}), "token-classification"),
        (bool(tokens & {"squad", "squad2", "squadv2", "qa"}), "question-answering"),
        ("swag" in tokens, "multiple-choice"),
        (bool(re.search(r"summar|xsum|cnn|samsum", ids)), "summarization"),
        (bool(re.search(r"translat|opus-mt|\ben-(?:ro|de|fr|es)\b", ids)), "translation"),
        (bool(tokens & {"mlm", "pretraining", "pretrained"}), "fill-mask"),
        (classifies, "text-classification"),
        (_is_causal(base), "text-generation"),
    ]
    return next((task for hit, task in rules if hit), None)


def _task_type(hf_task: str | None, final: dict[str, float]) -> str:
    """The record's task type for a Hub task name."""
    if hf_task is None:
        return "other"
    if hf_task in DIRECT_TASKS:
        return hf_task
    if hf_task == "text2text-generation":
        names = set(final)
        if any(n.startswith("rouge") for n in names):
            return "summarization"
        if "bleu" in names:
            return "translation"
        return "text-generation"
    return "other"


# --- metrics ------------------------------------------------------------------------------------------------------


def metric_name(raw: str) -> str | None:
    """The canonical name of a results-list entry or table column, or None for bookkeeping (epoch, step...)."""
    key = re.sub(r"[^a-z0-9]+", "_", raw.strip().lower()).strip("_")
    if not key or NON_METRICS.match(key):
        return None
    if key in CARD_METRIC_NAMES:
        return CARD_METRIC_NAMES[key]
    for prefix, repl in (("train_", "train_"), ("training_", "train_"), ("validation_", ""), ("eval_", ""),
                         ("valid_", ""), ("test_", "")):
        if key.startswith(prefix):
            rest = metric_name(key[len(prefix) :])
            if rest is None:
                return None
            return repl + rest if not rest.startswith("train_") else rest
    if key.startswith("overall_"):
        return metric_name(key[len("overall_") :])
    return canonical_metric(key)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            pass
        else:
            return number if math.isfinite(number) else None
        match = re.match(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*%?\s*(?:\(.*\))?\s*$", value)
        if match:
            number = float(match.group(1))
            return number if math.isfinite(number) else None
    return None


def _final_metrics(parts: CardParts, index: dict[str, Any]) -> tuple[dict[str, float], str]:
    """The run's final metrics (results list > last table row > model-index) and their split."""
    metrics: dict[str, float] = {}
    for raw_name, raw_value in parts.results:
        _add_metric(metrics, raw_name, raw_value)
    if not _task_metrics(metrics) and parts.table and parts.table.rows:
        for name, value in zip(parts.table.header, parts.table.rows[-1], strict=True):
            if metric_name(name) not in metrics:
                _add_metric(metrics, name, value)
    if not _task_metrics(metrics):
        for m in index.get("metrics") or []:
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
    value = _number(raw_value)
    if name is not None and value is not None:
        metrics.setdefault(name, value)


def _task_metrics(metrics: dict[str, float]) -> list[str]:
    return [m for m in metrics if m not in ("loss", "train_loss") and not m.startswith("train_")]


def _curve(table: ResultsTable | None) -> list[dict[str, Any]]:
    if table is None:
        return []
    lower = [h.strip().lower() for h in table.header]
    step_col = lower.index("step") if "step" in lower else None
    epoch_col = lower.index("epoch") if "epoch" in lower else None
    columns = [(i, metric_name(h)) for i, h in enumerate(table.header)]
    points: list[dict[str, Any]] = []
    for row in table.rows:
        step = _number(row[step_col]) if step_col is not None else None
        epoch = _number(row[epoch_col]) if epoch_col is not None else None
        for i, name in columns:
            value = _number(row[i])
            if name is None or value is None:
                continue
            point: dict[str, Any] = {"metric": name, "value": value}
            if step is not None and step >= 0:
                point["step"] = int(step)
            if epoch is not None and epoch >= 0:
                point["epoch"] = epoch
            points.append(point)
    return points


def _primary_metric(task_type: str, hf_task: str | None, final: dict[str, float], index: dict[str, Any]) -> str:
    """The primary metric by task (see the module docstring); raises when the card has none usable."""
    usable = [m for m in _task_metrics(final) if metric_info(m) is not None or m in EXTRA_METRICS]
    for name in PRIMARY_BY_TASK.get(task_type, ()):
        if name in usable:
            return name
    for m in index.get("metrics") or []:
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
        raise CardRejected("no metric: no results list, Training results table or model-index metric",
                           "outcome.score")
    if set(final) <= {"loss", "train_loss"} or not _task_metrics(final):
        raise CardRejected(f"only a loss is reported, no task metric (task: {hf_task or 'not stated'})",
                           "outcome.score")
    raise CardRejected(f"no known task metric among {sorted(final)}", "outcome.score")


def _is_percent(name: str, final: float | None, curve: list[float]) -> bool:
    """Whether the series of metric ``name`` (its final value and table column) is on 0-100.

    Raises:
        CardRejected: a fractional final value next to a table column that is mostly above 1 is not, but some
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
    raise CardRejected(
        f"Training results table column {name!r} has values above 1 ({max(above)}) while the final value is "
        f"{final}: the table's columns are shifted or mixed", "outcome.curve")


def _scaled(primary: str, final: dict[str, float], curve: list[dict[str, Any]]
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


def _hparams(block: dict[str, Any], frameworks: dict[str, str], axolotl: dict[str, Any]
             ) -> tuple[dict[str, Any], dict[str, Any]]:
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
    number = _number(value) if not isinstance(value, int | float) or isinstance(value, bool) else float(value)
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
        if _number(lr) and "learning_rate" not in hp and _number(lr) > 0:
            hp["learning_rate"] = _number(lr)
        if _number(value.get("weight_decay_rate")) is not None:
            hp.setdefault("weight_decay", _number(value["weight_decay_rate"]))
        for key in ("beta_1", "beta_2", "epsilon"):
            if _number(value.get(key)) is not None:
                extra[f"adam_{key.replace('_', '')}"] = _number(value[key])
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


def _axolotl_config(text: str) -> dict[str, Any]:
    """The axolotl training config a card embeds in a ```yaml block (base_model, adapter, lora_*), or {}."""
    if "axolotl" not in text.lower():
        return {}
    import yaml

    for block in _AXOLOTL_BLOCK.findall(text):
        if "base_model" not in block:
            continue
        try:
            data = yaml.safe_load(block)
        except yaml.YAMLError:
            continue
        if isinstance(data, dict):
            return data
    return {}


def _axolotl_datasets(axolotl: dict[str, Any]) -> list[str]:
    datasets = axolotl.get("datasets")
    if not isinstance(datasets, list):
        return []
    return [d["path"] for d in datasets if isinstance(d, dict) and isinstance(d.get("path"), str)
            and not d["path"].startswith((".", "/"))]


def _axolotl_hparams(axolotl: dict[str, Any], hp: dict[str, Any]) -> None:
    seq = _convert(axolotl.get("sequence_len"), int) if axolotl.get("sequence_len") else None
    if seq and seq > 0:
        hp.setdefault("max_seq_length", seq)
    if "precision" not in hp:
        if axolotl.get("bf16") is True:
            hp["precision"] = "bf16"
        elif axolotl.get("fp16") is True:
            hp["precision"] = "fp16"


def _method(parts: CardParts, fm: dict[str, Any], ctx: CardContext, axolotl: dict[str, Any], text: str
            ) -> dict[str, Any]:
    tags = {t.lower() for t in list(ctx.tags) + [t for t in fm.get("tags") or [] if isinstance(t, str)]}
    adapter = str(axolotl.get("adapter") or "").lower()
    peft = bool(
        "peft" in parts.frameworks or tags & {"peft", "lora", "qlora"} or str(fm.get("library_name")).lower() == "peft"
        or adapter
    )
    if not peft:
        return {"name": "full"}
    method: dict[str, Any] = {"name": _peft_method(ctx.model_id, adapter, axolotl, text)}
    for src, dst, kind in (("lora_r", "lora_r", int), ("lora_alpha", "lora_alpha", float),
                           ("lora_dropout", "lora_dropout", float)):
        value = _convert(axolotl.get(src), kind) if axolotl.get(src) is not None else None
        if value is not None:
            method[dst] = value
    modules = axolotl.get("lora_target_modules")
    if isinstance(modules, list) and modules:
        method["target_modules"] = [str(m) for m in modules]
    elif axolotl.get("lora_target_linear") is True:
        method["config"] = {"target_linear": True}
    return method


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


# --- license, config.json -----------------------------------------------------------------------------------------


def _license(fm: dict[str, Any], ctx: CardContext) -> str | None:
    lic = fm.get("license")
    if isinstance(lic, list) and lic:
        lic = lic[0]
    if isinstance(lic, str) and lic.strip():
        return lic.strip()
    tagged = [t.split(":", 1)[1] for t in ctx.tags if t.startswith("license:")]
    return tagged[0] if tagged else None


def _apply_config(record: dict[str, Any], config: dict[str, Any], task_type: str) -> None:
    """Architecture facts of the fine-tuned checkpoint (same architecture as its base) into model.*."""
    model = record["model"]
    pick = {
        "family": ("model_type",),
        "n_layers": ("num_hidden_layers", "n_layers", "n_layer", "num_layers"),
        "hidden_size": ("hidden_size", "d_model", "n_embd", "dim"),
        "n_heads": ("num_attention_heads", "n_head", "num_heads"),
        "vocab_size": ("vocab_size",),
        "max_positions": ("max_position_embeddings", "n_positions"),
    }
    for target, keys in pick.items():
        for key in keys:
            value = config.get(key)
            if target == "family" and isinstance(value, str) and value:
                model[target] = value
                break
            if target != "family" and isinstance(value, int) and not isinstance(value, bool) and value > 0:
                model[target] = value
                break
    labels = config.get("id2label")
    if task_type in ("text-classification", "image-classification") and isinstance(labels, dict) and labels:
        record["dataset"].setdefault("meta", {})["n_classes"] = len(labels)


# ----------------------------------------------------------------------------------------------------------------
# Formats


def _item(text: str, ctx: CardContext, locator: str, uri: str) -> Item:
    try:
        return RawRecord(data=card_to_record(text, ctx), locator=locator, uri=uri)
    except CardRejected as e:
        return Rejected(locator=locator, reason=e.reason, field=e.field, uri=uri)


def _model_id_of(member: str) -> str | None:
    """``author/model`` of an archive member or relative path ``[./]author/model/README.md``, else None."""
    parts = [p for p in PurePosixPath(member).parts if p not in (".", "")]
    if len(parts) == 3 and parts[2].lower() == "readme.md":
        return f"{parts[0]}/{parts[1]}"
    return None


def _decode(data: bytes, locator: str, uri: str) -> str | Rejected:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        return Rejected(locator=locator, reason=f"card is not UTF-8 text ({e.reason} at byte {e.start})", uri=uri)


class ModelCards(Format):
    """Model cards as ``<author>/<model>/README.md`` in a .tar.gz archive or a directory (one card -> one run)."""

    name: ClassVar[str] = "hf_cards"
    description: ClassVar[str] = "Hugging Face model cards (<author>/<model>/README.md, .tar.gz or directory)"
    source: ClassVar[str] = "hf_cards"

    @classmethod
    def detect(cls, path: Path) -> bool:
        """An archive whose first members are ``author/model/README.md``, or a directory of such cards only."""
        if path.is_file():
            if not path.name.endswith((".tar.gz", ".tgz")):
                return False
            try:
                with tarfile.open(path, "r:gz") as tar:
                    for _, member in zip(range(5), tar, strict=False):
                        if member.isfile():
                            return _model_id_of(member.name) is not None
            except (tarfile.TarError, OSError, EOFError, zlib.error):
                return False
            return False
        if path.is_dir():
            return _looks_like_card_dir(path)
        return False

    def read(self, path: Path) -> Iterator[Item]:
        if path.is_dir():
            yield from self._read_dir(path)
        else:
            yield from self._read_tar(path)

    def estimate(self, path: Path) -> int | None:
        if path.is_dir():
            return sum(1 for _ in path.glob("*/*/README.md"))
        return None

    def _read_tar(self, path: Path) -> Iterator[Item]:
        uri = str(path)
        if not path.exists():
            raise FormatError("no such file", uri=uri)
        try:
            tar = tarfile.open(path, "r:gz")  # noqa: SIM115 - closed in finally; streamed member by member
        except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
            raise FormatError(f"not a readable .tar.gz archive: {e}", uri=uri) from e
        seen = 0
        try:
            while True:
                try:
                    member = tar.next()
                except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
                    raise FormatError(f"archive is truncated or corrupt after {seen} cards: {e}", uri=uri) from e
                if member is None:
                    break
                if not member.isfile():
                    continue
                model_id = _model_id_of(member.name)
                if model_id is None:
                    yield Rejected(locator=member.name, reason="not a card: expected <author>/<model>/README.md",
                                   uri=uri)
                    continue
                try:
                    data = tar.extractfile(member).read()  # type: ignore[union-attr]
                except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
                    raise FormatError(f"archive is truncated or corrupt in {member.name}: {e}", uri=uri) from e
                seen += 1
                text = _decode(data, model_id, uri)
                yield text if isinstance(text, Rejected) else _item(text, CardContext(model_id), model_id, uri)
        finally:
            tar.close()
        if seen == 0:
            raise FormatError("archive holds no <author>/<model>/README.md card", uri=uri)

    def _read_dir(self, path: Path) -> Iterator[Item]:
        cards = sorted(path.glob("*/*/README.md"))
        if not cards:
            raise FormatError("directory holds no <author>/<model>/README.md card", uri=str(path))
        for card in cards:
            author, name = card.parent.parent.name, card.parent.name
            model_id = name if author == LEGACY_AUTHOR else f"{author}/{name}"
            uri = str(card)
            text = _decode(card.read_bytes(), model_id, uri)
            if isinstance(text, Rejected):
                yield text
                continue
            config, problem = _read_config(card.parent / "config.json")
            if problem:
                yield Rejected(locator=model_id, reason=problem, field="model", uri=str(card.parent / "config.json"))
                continue
            yield _item(text, CardContext(model_id, config=config), model_id, uri)


def _read_config(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    if not path.exists():
        return None, None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"config.json is not valid JSON: {e}"
    return (data, None) if isinstance(data, dict) else (None, "config.json is not a JSON object")


def _looks_like_card_dir(path: Path) -> bool:
    """Directories of ``author/model/`` folders that hold only README.md (+ config.json), a few checked."""
    allowed = {"readme.md", "config.json"}
    checked = 0
    try:
        for entry in sorted(path.iterdir())[:50]:
            if entry.name.startswith("."):
                continue
            if not entry.is_dir():
                return False
            for model in sorted(entry.iterdir())[:3]:
                if not model.is_dir():
                    return False
                names = {p.name.lower() for p in model.iterdir()}
                if "readme.md" not in names or not names <= allowed:
                    return False
                checked += 1
            if checked >= 5:
                break
    except OSError:
        return False
    return checked > 0


class HubSamples(Format):
    """Hub API model entries with their card text (``modelId``, ``tags``, ``modelcard_text``): one entry -> one run."""

    name: ClassVar[str] = "hub_samples"
    description: ClassVar[str] = "Hub API model entries with card text (JSON: modelId, tags, modelcard_text)"
    source: ClassVar[str] = "hub_samples"

    @classmethod
    def detect(cls, path: Path) -> bool:
        """A .json file whose first entry has ``modelId`` and ``modelcard_text``."""
        if not path.is_file() or path.suffix.lower() != ".json":
            return False
        try:
            with open(path, "rb") as f:
                head = f.read(65536)
        except OSError:
            return False
        return b'"modelId"' in head and b'"modelcard_text"' in head

    def read(self, path: Path) -> Iterator[Item]:
        uri = str(path)
        entries = _load_entries(path)
        for key, entry in entries:
            locator = f"entry {key}"
            if not isinstance(entry, dict):
                yield Rejected(locator=locator, reason="entry is not a JSON object", uri=uri)
                continue
            model_id = entry.get("modelId") or entry.get("id")
            text = entry.get("modelcard_text", entry.get("cardData"))
            if not isinstance(model_id, str) or not model_id.strip():
                yield Rejected(locator=locator, reason="entry has no modelId", field="modelId", uri=uri)
                continue
            if not isinstance(text, str) or not text.strip():
                yield Rejected(locator=model_id, reason="entry has no card text (modelcard_text)",
                               field="modelcard_text", uri=uri)
                continue
            tags = [t for t in entry.get("tags") or [] if isinstance(t, str)]
            yield _item(text, CardContext(model_id.strip(), tags=tags), model_id.strip(), uri)

    def estimate(self, path: Path) -> int | None:
        return None


def _load_entries(path: Path) -> list[tuple[str, Any]]:
    if not path.exists():
        raise FormatError("no such file", uri=str(path))
    try:
        data = json.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(f"not valid JSON (truncated?): {e}", uri=str(path)) from e
    if isinstance(data, dict):
        return [(str(k), v) for k, v in data.items()]
    if isinstance(data, list):
        return [(str(i), v) for i, v in enumerate(data)]
    raise FormatError("expected a JSON object or array of Hub model entries", uri=str(path))
