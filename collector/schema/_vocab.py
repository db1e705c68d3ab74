"""Controlled vocabularies: metrics and their scales, method names, model and dataset aliases.

Everything that turns a name written by a person into the one name the knowledge base stores lives here, as data,
so importers never carry their own spelling rules. Adding a method, a metric or an alias is one line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache


class MetricScale(StrEnum):
    """The range a metric's values live on.

    ``unit`` is [0, 1] (accuracy, F1 as a fraction), ``signed_unit`` is [-1, 1] (Matthews correlation, Pearson,
    Spearman), ``unbounded`` has no range (loss, MAE). ``percent`` is an input scale only: the metric's own bounded
    scale times 100 ([0, 100] for accuracy, [-100, 100] for MCC), divided by 100 on ingest.
    """

    unit = "unit"
    percent = "percent"
    signed_unit = "signed_unit"
    unbounded = "unbounded"


SCALE_BOUNDS: dict[MetricScale, tuple[float, float]] = {
    MetricScale.unit: (0.0, 1.0),
    MetricScale.percent: (0.0, 100.0),
    MetricScale.signed_unit: (-1.0, 1.0),
    MetricScale.unbounded: (float("-inf"), float("inf")),
}


@dataclass(frozen=True)
class MetricInfo:
    """What the knowledge base knows about one metric name."""

    scale: MetricScale
    higher_is_better: bool


METRICS: dict[str, MetricInfo] = {
    "accuracy": MetricInfo(MetricScale.unit, True),
    "balanced_accuracy": MetricInfo(MetricScale.unit, True),
    "f1": MetricInfo(MetricScale.unit, True),
    "f1_macro": MetricInfo(MetricScale.unit, True),
    "f1_micro": MetricInfo(MetricScale.unit, True),
    "f1_weighted": MetricInfo(MetricScale.unit, True),
    "precision": MetricInfo(MetricScale.unit, True),
    "recall": MetricInfo(MetricScale.unit, True),
    "average_precision": MetricInfo(MetricScale.unit, True),
    "roc_auc": MetricInfo(MetricScale.unit, True),
    "exact_match": MetricInfo(MetricScale.unit, True),
    "rouge1": MetricInfo(MetricScale.unit, True),
    "rouge2": MetricInfo(MetricScale.unit, True),
    "rougel": MetricInfo(MetricScale.unit, True),
    "rougelsum": MetricInfo(MetricScale.unit, True),
    "meteor": MetricInfo(MetricScale.unit, True),
    "mer": MetricInfo(MetricScale.unbounded, False),
    "wil": MetricInfo(MetricScale.unbounded, False),
    "bleu": MetricInfo(MetricScale.unit, True),
    "wer": MetricInfo(MetricScale.unbounded, False),
    "cer": MetricInfo(MetricScale.unbounded, False),
    "matthews_correlation": MetricInfo(MetricScale.signed_unit, True),
    "pearson": MetricInfo(MetricScale.signed_unit, True),
    "spearman": MetricInfo(MetricScale.signed_unit, True),
    "similarity": MetricInfo(MetricScale.signed_unit, True),
    "dino_similarity": MetricInfo(MetricScale.signed_unit, True),
    "lrap": MetricInfo(MetricScale.unit, True),
    "hamming": MetricInfo(MetricScale.unbounded, False),
    "mae": MetricInfo(MetricScale.unbounded, False),
    "mse": MetricInfo(MetricScale.unbounded, False),
    "rmse": MetricInfo(MetricScale.unbounded, False),
    "loss": MetricInfo(MetricScale.unbounded, False),
    "perplexity": MetricInfo(MetricScale.unbounded, False),
}

METRIC_ALIASES: dict[str, str] = {
    "acc": "accuracy",
    "eval_accuracy": "accuracy",
    "mcc": "matthews_correlation",
    "matthews_corr": "matthews_correlation",
    "matthews_correlation_coefficient": "matthews_correlation",
    "pearsonr": "pearson",
    "pearson_r": "pearson",
    "spearmanr": "spearman",
    "spearman_r": "spearman",
    "mean_absolute_error": "mae",
    "macro_f1": "f1_macro",
    "micro_f1": "f1_micro",
    "weighted_f1": "f1_weighted",
    "em": "exact_match",
    "ap": "average_precision",
    "auc": "roc_auc",
    "rouge_l": "rougel",
    "ppl": "perplexity",
    "overall_f1": "f1",
    "overall_accuracy": "accuracy",
    "overall_precision": "precision",
    "overall_recall": "recall",
    "f1_score": "f1",
    "fscore": "f1",
    "sacrebleu": "bleu",
    "sparse_categorical_accuracy": "accuracy",
    "binary_accuracy": "accuracy",
}


@lru_cache(maxsize=4096)
def canonical_metric(name: str) -> str:
    """Lower-case, ``-``/space to ``_``, strip an ``eval_``/``test_`` prefix, resolve aliases."""
    key = re.sub(r"[\s\-]+", "_", name.strip().lower())
    if key in METRIC_ALIASES or key in METRICS:
        return METRIC_ALIASES.get(key, key)
    for prefix in ("eval_", "test_", "validation_", "dev_"):
        if key.startswith(prefix):
            rest = METRIC_ALIASES.get(key[len(prefix) :], key[len(prefix) :])
            if rest in METRICS:
                return rest
    return key


@lru_cache(maxsize=4096)
def metric_info(name: str) -> MetricInfo | None:
    """The known scale and direction of a (canonical) metric name, or ``None`` when unknown."""
    return METRICS.get(canonical_metric(name))


class MethodKind(StrEnum):
    """Coarse families of adaptation methods (the meta-learner's fallback feature for rare methods)."""

    full = "full"
    reparameterization = "reparameterization"  # LoRA and relatives
    additive = "additive"  # adapters, IA3
    selective = "selective"  # BitFit, partial freezing
    soft_prompt = "soft_prompt"  # prompt/prefix/p-tuning
    prompt_based = "prompt_based"  # discrete prompts + full fine-tuning (LM-BFF, ADAPET, PERFECT)
    frozen = "frozen"  # linear probe on a frozen encoder
    contrastive = "contrastive"  # SetFit
    distillation = "distillation"


METHODS: dict[str, MethodKind] = {
    "full": MethodKind.full,
    "lora": MethodKind.reparameterization,
    "qlora": MethodKind.reparameterization,
    "dora": MethodKind.reparameterization,
    "adalora": MethodKind.reparameterization,
    "loha": MethodKind.reparameterization,
    "lokr": MethodKind.reparameterization,
    "vera": MethodKind.reparameterization,
    "oft": MethodKind.reparameterization,
    "boft": MethodKind.reparameterization,
    "hra": MethodKind.reparameterization,
    "fourierft": MethodKind.reparameterization,
    "randlora": MethodKind.reparameterization,
    "c3a": MethodKind.reparameterization,
    "shira": MethodKind.reparameterization,
    "miss": MethodKind.reparameterization,
    "road": MethodKind.reparameterization,
    "waveft": MethodKind.reparameterization,
    "delora": MethodKind.reparameterization,
    "gralora": MethodKind.reparameterization,
    "osf": MethodKind.reparameterization,
    "bone": MethodKind.reparameterization,
    "vblora": MethodKind.reparameterization,
    "lily": MethodKind.reparameterization,
    "psoft": MethodKind.reparameterization,
    "pvera": MethodKind.reparameterization,
    "deft": MethodKind.reparameterization,
    "hira": MethodKind.reparameterization,
    "tinylora": MethodKind.reparameterization,
    "frod": MethodKind.reparameterization,
    "glora": MethodKind.reparameterization,
    "adamss": MethodKind.reparameterization,
    "bdlora": MethodKind.reparameterization,
    "unilora": MethodKind.reparameterization,
    "peanut": MethodKind.additive,
    "beft": MethodKind.selective,
    "cartridge": MethodKind.soft_prompt,
    "trainable_tokens": MethodKind.selective,
    "ia3": MethodKind.additive,
    "adapter": MethodKind.additive,
    "ln_tuning": MethodKind.selective,
    "bitfit": MethodKind.selective,
    "partial_freeze": MethodKind.selective,
    "prompt_tuning": MethodKind.soft_prompt,
    "prefix_tuning": MethodKind.soft_prompt,
    "p_tuning": MethodKind.soft_prompt,
    "multitask_prompt_tuning": MethodKind.soft_prompt,
    "adaption_prompt": MethodKind.soft_prompt,
    "prompt_finetuning": MethodKind.prompt_based,
    "adapet": MethodKind.prompt_based,
    "perfect": MethodKind.prompt_based,
    "linear_probe": MethodKind.frozen,
    "setfit": MethodKind.contrastive,
    "distillation": MethodKind.distillation,
}

METHOD_ALIASES: dict[str, str] = {
    "none": "full",
    "ft": "full",
    "fft": "full",
    "finetune": "full",
    "fine_tune": "full",
    "finetuning": "full",
    "fine_tuning": "full",
    "full_finetuning": "full",
    "full_fine_tuning": "full",
    "full_ft": "full",
    "standard": "full",
    "pfeiffer": "adapter",
    "houlsby": "adapter",
    "adapters": "adapter",
    "bottleneck_adapter": "adapter",
    "prefix": "prefix_tuning",
    "prompt": "prompt_tuning",
    "ptuning": "p_tuning",
    "ia³": "ia3",
    "t_few": "ia3",
    "tfew": "ia3",
    "lp": "linear_probe",
    "linear_probing": "linear_probe",
    "frozen": "linear_probe",
    "freeze": "partial_freeze",
    "partial": "partial_freeze",
    "partial_freezing": "partial_freeze",
    "layer_freezing": "partial_freeze",
    "lm_bff": "prompt_finetuning",
    "prompt_based_finetuning": "prompt_finetuning",
    "prompt_based_fine_tuning": "prompt_finetuning",
}


@lru_cache(maxsize=4096)
def canonical_method(name: str) -> str | None:
    """The canonical method name for ``name``, or ``None`` when the method is unknown."""
    key = re.sub(r"[\s\-/()]+", "_", name.strip().lower()).strip("_")
    key = METHOD_ALIASES.get(key, key)
    return key if key in METHODS else None


# Legacy Hub ids are what nearly every published run names; the organisation-prefixed spellings the Hub moved the
# original checkpoints to are folded onto them.
MODEL_ORG_ALIASES: dict[str, str] = {
    "google-bert/": "",
    "FacebookAI/": "",
    "distilbert/": "",
    "openai-community/": "",
    "google-t5/": "",
    "albert/": "",
}


@lru_cache(maxsize=65536)
def canonical_model_id(model_id: str) -> str:
    """Strip URLs and whitespace and fold renamed Hub organisations onto the legacy id (``FacebookAI/roberta-base``
    -> ``roberta-base``)."""
    mid = model_id.strip()
    for prefix in ("https://huggingface.co/", "http://huggingface.co/", "hf://", "huggingface.co/"):
        if mid.startswith(prefix):
            mid = mid[len(prefix) :]
    mid = mid.strip("/")
    for org, replacement in MODEL_ORG_ALIASES.items():
        if mid.lower().startswith(org.lower()):
            return replacement + mid[len(org) :]
    return mid


# Canonical dataset names follow the Hub's "<dataset>/<config>" convention.
DATASET_ALIASES: dict[str, str] = {
    "sst2": "glue/sst2",
    "sst_2": "glue/sst2",
    "glue_sst2": "glue/sst2",
    "cola": "glue/cola",
    "glue_cola": "glue/cola",
    "rte": "glue/rte",
    "glue_rte": "glue/rte",
    "qnli": "glue/qnli",
    "glue_qnli": "glue/qnli",
    "mnli": "glue/mnli",
    "multinli": "glue/mnli",
    "multi_nli": "glue/mnli",
    "glue_mnli": "glue/mnli",
    "mrpc": "glue/mrpc",
    "glue_mrpc": "glue/mrpc",
    "qqp": "glue/qqp",
    "glue_qqp": "glue/qqp",
    "stsb": "glue/stsb",
    "sts_b": "glue/stsb",
    "glue_stsb": "glue/stsb",
    "wnli": "glue/wnli",
    "cb": "super_glue/cb",
    "superglue_cb": "super_glue/cb",
    "wsc": "super_glue/wsc",
    "superglue_wsc": "super_glue/wsc",
    "boolq": "super_glue/boolq",
    "copa": "super_glue/copa",
    "wic": "super_glue/wic",
    "multirc": "super_glue/multirc",
    "tweet_eval_irony": "tweet_eval/irony",
    "tweet_eval_hate": "tweet_eval/hate",
    "tweet_eval_offensive": "tweet_eval/offensive",
    "tweet_eval_emoji": "tweet_eval/emoji",
    "tweet_eval_sentiment": "tweet_eval/sentiment",
    "tweet_eval_emotion": "tweet_eval/emotion",
    "dbpedia": "dbpedia_14",
    "dbpedia_14_subset": "dbpedia_14",
    "agnews": "ag_news",
    "rotten_tomato": "rotten_tomatoes",
    "mr": "rotten_tomatoes",
    "sms_spam_collection": "sms_spam",
    "banking_77": "banking77",
    "senteval_cr": "cr",
    "setfit_sentevalcr": "cr",
    "setfit_senteval_cr": "cr",
    "sst_5": "sst5",
    "setfit_sst5": "sst5",
    "20_newsgroup": "20_newsgroups",
    "yahoo_answers": "yahoo_answers_topics",
    "trec_coarse": "trec",
    "dair_ai_emotion": "emotion",
    "anli_r3": "anli/r3",
    "socialiqa": "social_i_qa",
    "cosmosqa": "cosmos_qa",
    # MTEB classification tasks that are the same data as a Hub dataset named elsewhere
    "mteb_banking77classification": "banking77",
    "mteb_emotionclassification": "emotion",
    "mteb_imdbclassification": "imdb",
    "mteb_dbpediaclassification": "dbpedia_14",
    "mteb_amazoncounterfactualclassification_en": "amazon_counterfactual_en",
    "mteb_amazonreviewsclassification_en": "amazon_reviews_multi/en",
    "mteb_amazonreviewsclassification_de": "amazon_reviews_multi/de",
    "mteb_amazonreviewsclassification_es": "amazon_reviews_multi/es",
    "mteb_amazonreviewsclassification_fr": "amazon_reviews_multi/fr",
    "mteb_amazonreviewsclassification_ja": "amazon_reviews_multi/ja",
    "mteb_amazonreviewsclassification_zh": "amazon_reviews_multi/zh",
    "cnn_dailymail": "cnn_dailymail",
    "squadv1": "squad",
    "squad_v1": "squad",
    "squad1.1": "squad",
}


@lru_cache(maxsize=65536)
def canonical_dataset(name: str) -> str:
    """Lower-case, unify separators, resolve aliases (``SST-2`` -> ``glue/sst2``, ``tweet_eval_irony`` ->
    ``tweet_eval/irony``)."""
    key = name.strip().lower().replace(" ", "_")
    key = re.sub(r"/+", "/", key).strip("/")
    flat = key.replace("-", "_").replace("/", "_")
    if flat in DATASET_ALIASES:
        return DATASET_ALIASES[flat]
    if key.replace("-", "_") in DATASET_ALIASES:
        return DATASET_ALIASES[key.replace("-", "_")]
    return key
