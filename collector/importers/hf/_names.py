"""How model cards and Trainer results files spell names and values: metric names in the record's vocabulary
(:func:`metric_name`), numbers with notes (:func:`as_number`), values as written (:func:`parse_value`), Hub ids."""

from __future__ import annotations

import ast
import math
import re
from functools import lru_cache
from typing import Any

from collector.schema._vocab import canonical_metric

#: What a Hub model id looks like (``author/name`` or a legacy ``name``).
HUB_ID = re.compile(r"[A-Za-z0-9][\w.\-]*(?:/[\w.\-]+)?")
_NUMBER_WITH_NOTE = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*%?\s*(?:\(.*\))?\s*$")

#: Result / column names that are bookkeeping, not metrics.
NON_METRICS = re.compile(
    r"^(?:eval_|train_|validation_)?(?:epoch|step|runtime|samples_per_second|steps_per_second|total_flos|"
    r"train_runtime|train_samples_per_second)$"
)
#: Card spellings of metrics -> canonical names (before :func:`~collector.schema.canonical_metric`).
CARD_METRIC_NAMES: dict[str, str] = {
    "training_loss": "train_loss", "train_loss": "train_loss", "validation_loss": "loss", "valid_loss": "loss",
    "val_loss": "loss", "eval_loss": "loss", "loss": "loss", "sacrebleu": "bleu", "bleu_score": "bleu",
    "f1_score": "f1", "fscore": "f1", "f_score": "f1", "rouge2_fmeasure": "rouge2", "rouge1_fmeasure": "rouge1",
    "rougel_fmeasure": "rougel", "rouge_1": "rouge1", "rouge_2": "rouge2", "sparse_categorical_accuracy": "accuracy",
    "binary_accuracy": "accuracy", "categorical_accuracy": "accuracy", "overall_accuracy": "accuracy",
    "overall_f1": "f1", "overall_precision": "precision", "overall_recall": "recall",
    "matthews_correlation": "matthews_correlation", "f1_micro": "f1_micro", "f1_macro": "f1_macro",
    "f1_weighted": "f1_weighted", "micro_avg_f1_score": "f1_micro", "micro_avg_precision": "precision",
    "micro_avg_recall": "recall", "test_wer": "wer", "test_cer": "cer",
}


@lru_cache(maxsize=4096)
def metric_name(raw: str) -> str | None:
    """The record's name of a metric as a card, a results JSON (``eval_`` stripped or not) or ``TrainingArguments``
    spells it, or None for bookkeeping (epoch, step, runtime, throughput)."""
    key = re.sub(r"[^a-z0-9]+", "_", raw.strip().lower()).strip("_")
    if not key or NON_METRICS.match(key):
        return None
    if key in CARD_METRIC_NAMES:
        return CARD_METRIC_NAMES[key]
    for prefix, repl in (("train_", "train_"), ("training_", "train_"), ("validation_", ""), ("eval_", ""),
                         ("valid_", ""), ("test_", "")):
        if key.startswith(prefix):
            rest = metric_name(key[len(prefix):])
            if rest is None:
                return None
            return repl + rest if not rest.startswith("train_") else rest
    if key.startswith("overall_"):
        return metric_name(key[len("overall_"):])
    return canonical_metric(key)


def as_number(value: Any) -> float | None:
    """A finite number from a card value: a number, or text such as ``0.91``, ``91.2 %``, ``0.91 (0.02)``;
    None otherwise (booleans, ``nan``, ``No log``...)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            match = _NUMBER_WITH_NOTE.match(value)
            if match is None:
                return None
            number = float(match.group(1))
        return number if math.isfinite(number) else None
    return None


def parse_value(raw: str) -> Any:
    """A hyperparameter or metric value as written: int, float, None, bool, a Python literal (Keras optimizer
    dicts), or the stripped string."""
    value = re.sub(r"\s+#.*$", "", raw).strip()
    if value in ("None", "null", ""):
        return None
    if value in ("True", "true"):
        return True
    if value in ("False", "false"):
        return False
    if re.fullmatch(r"[+-]?\d+", value):
        return int(value)
    try:
        return float(value)
    except ValueError:
        pass
    if value[:1] in "{[(":
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return value
    return value


__all__ = ["CARD_METRIC_NAMES", "HUB_ID", "NON_METRICS", "as_number", "metric_name", "parse_value"]
