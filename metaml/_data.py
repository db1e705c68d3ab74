"""From the knowledge base to a learning frame: which runs the meta-learner learns from, their targets and tasks.

* **Learnable runs** have a higher-is-better primary metric on a bounded scale (``unit`` or ``signed_unit``): their
  scores are comparable as points (100 x the normalized score). Runs on lower-is-better or unbounded metrics (MAE,
  WER, loss: under 1% of the knowledge base) are left out of the outcome model and counted in the report.
* **A task** is what an AutoML system compares configurations within: one dataset, evaluated by one source's
  protocol, on one metric, in one data regime (few-shot K or training-set size). Per-task metrics (rank correlation,
  regret) are computed within tasks; protocols hold out whole datasets, models or sources.
* **Failure** is a failed status, or a divergence: a score at chance level (at most 1/n_classes + 2 points for
  accuracy-type metrics, at most 0.02 for correlations) when the chance level is known.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from pandas.core.util.hashing import combine_hash_arrays

from collector.schema import source_matches
from collector.store import KnowledgeBase

#: Columns of the runs table the meta-learner reads.
LEARN_COLUMNS: tuple[str, ...] = (
    "run_id", "provenance_source", "task_type", "task_primary_metric", "task_metric_scale", "task_higher_is_better",
    "dataset_name", "dataset_n_train_used", "dataset_examples_per_class",
    "dataset_meta_n_samples", "dataset_meta_n_classes", "dataset_meta_class_entropy", "dataset_meta_imbalance_ratio",
    "dataset_meta_chars_mean", "dataset_meta_tokens_mean", "dataset_meta_tokens_p90", "dataset_meta_vocab_size",
    "dataset_meta_type_token_ratio", "dataset_meta_non_ascii_share", "dataset_meta_language", "dataset_meta_domain",
    "dataset_meta_n_text_fields", "dataset_meta_landmark_tfidf_lr", "dataset_meta_landmark_majority",
    "model_id", "model_family", "model_arch_type", "model_n_params", "model_n_layers", "model_hidden_size",
    "model_n_heads", "model_vocab_size", "model_max_positions", "model_pretraining_objective",
    "model_pretraining_domain", "model_base_model", "model_upstream_task",
    "method_name", "method_kind", "method_lora_r", "method_lora_alpha", "method_lora_dropout",
    "method_n_frozen_layers", "method_adapter_reduction_factor", "method_n_virtual_tokens", "method_trainable_params",
    "method_config",
    "hparams_learning_rate", "hparams_batch_size", "hparams_epochs", "hparams_max_steps", "hparams_warmup_ratio",
    "hparams_warmup_steps", "hparams_weight_decay", "hparams_lr_scheduler", "hparams_optimizer",
    "hparams_max_seq_length", "hparams_dropout", "hparams_label_smoothing", "hparams_seed", "hparams_precision",
    "outcome_status", "outcome_error_kind", "outcome_score", "outcome_split", "outcome_runtime_s",
    "outcome_gpu_hours", "hardware_accelerator",
)

BOUNDED_SCALES = ("unit", "signed_unit")
ACCURACY_LIKE = ("accuracy", "balanced_accuracy", "f1", "f1_macro", "f1_micro", "f1_weighted")


def load_runs(kb: KnowledgeBase, *, sources: Sequence[str] | None = None,
              exclude_sources: Sequence[str] | None = None) -> pd.DataFrame:
    """The runs the meta-learner reads, as a DataFrame (one row per run, ordered by run id: what is learned does not
    depend on the order the knowledge base stored them in).

    Args:
        kb: the knowledge base.
        sources: only the runs of these sources.
        exclude_sources: leave out the runs of these sources; a pattern ending in ``*`` leaves out every source it
            begins (``upload*``: every run uploaded over HTTP, ``upload:<holder>``), see
            :func:`collector.schema.source_matches`.
    """
    filters = {"provenance_source": list(sources)} if sources else None
    runs = kb.scan(list(LEARN_COLUMNS), filters=filters, ordered=True).to_pandas()
    if exclude_sources:
        dropped = runs["provenance_source"].map(lambda s: source_matches(str(s), exclude_sources)).astype(bool)
        runs = runs.loc[~dropped].reset_index(drop=True)
    return runs


#: The source every run uploaded over HTTP counts as, whoever uploaded it (``upload:<holder>`` -> ``upload``).
UPLOAD_SOURCE = "upload"


#: Runs-table rows as the featurizer reads them: a DataFrame, or one array per column (all of one length; the
#: serving path's candidate columns, :class:`metaml.serving.CandidateColumns`).
Rows = pd.DataFrame | Mapping[str, Any]


def row_count(rows: Rows) -> int:
    """How many rows ``rows`` holds."""
    if isinstance(rows, pd.DataFrame):
        return len(rows)
    return len(next(iter(rows.values()))) if rows else 0


def frame_of(columns: Mapping[str, Any], rows: np.ndarray | None = None) -> pd.DataFrame:
    """One array per column as a frame (dtypes inferred from the values); ``rows``: only those rows."""
    take = slice(None) if rows is None else rows
    return pd.DataFrame({c: np.asarray(v, dtype=object)[take].tolist() for c, v in columns.items()})


#: From this many values, :func:`text_values` spells an object column once per distinct value.
_FEW_TEXTS = 32


def text_values(values: Sequence[Any] | pd.Series | np.ndarray) -> np.ndarray:
    """A column as text: each value spelled as pandas' ``astype("string")`` spells it (``str`` of the value; numbers
    as the shortest text that reads back to the same float64, e.g. ``3.0``, ``1e-05``), None where missing (None,
    NaN, ``pd.NA``), as an object array. Numeric arrays are converted at once; an object column value by value,
    without pandas' per-call overhead (the serving path calls this for every column of every request)."""
    arr = values.to_numpy() if isinstance(values, pd.Series) else np.asarray(values)
    kind = arr.dtype.kind
    if kind in "iub":
        return arr.astype(str).astype(object)
    if kind == "f":  # each float at its own precision, as pandas does (float32 0.1 as "0.1")
        if arr.dtype == np.float64 and arr.ndim == 1:  # Python's repr: numpy's spelling, at less cost
            out = np.empty(len(arr), dtype=object)
            out[:] = list(map(repr, arr.tolist()))
        else:
            out = arr.astype(str).astype(object)
        out[np.isnan(arr)] = None
        return out
    if len(arr) > _FEW_TEXTS:  # mostly repeated texts (a request's candidates): spelled once per distinct value
        codes, uniques = pd.factorize(arr)  # missing values get code -1
        distinct = uniques.tolist()
        if all(type(v) is str for v in distinct):  # texts only: factorize would merge 1, 1.0 and True
            return by_code(codes, distinct, None)
    return np.array([None if _is_missing(v) else str(v) for v in arr.tolist()], dtype=object)


def _is_missing(value: Any) -> bool:
    """None, ``pd.NA`` or NaN."""
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


def by_code(codes: np.ndarray, distinct: Sequence[Any], missing: Any, dtype: Any = object) -> np.ndarray:
    """Each row's value, from the value of its distinct value: ``codes`` as pandas' ``factorize`` numbers the rows
    (-1, a missing value: ``missing``), ``distinct`` a value per code."""
    table = np.empty(len(distinct) + 1, dtype=dtype)
    table[:-1] = distinct
    table[-1] = missing
    return table[codes]


#: Up to this many values, :func:`positions` looks them up in a dict (pandas' ``get_indexer`` costs about 0.15 ms
#: per call whatever the length; the dict is faster up to a few thousand values).
_FEW_POSITIONS = 2048
#: The dict of each index :func:`positions` has read, by ``id`` (forgotten with the index), and the position of its
#: missing value (None, NaN; -1 when it holds none), where every missing value is found.
_POSITION_TABLES: dict[int, tuple[dict[Any, int], int]] = {}


def positions(index: pd.Index, values: Sequence[Any] | np.ndarray) -> np.ndarray:
    """``index.get_indexer(values)`` as int64 (-1 where absent), for an index of distinct values. A few values (a
    served request's) are looked up in a dict made once per index, each distinct value once: the serving path reads a
    dozen category and experience indexes per request, for candidates that repeat most of their values."""
    if len(values) > _FEW_POSITIONS:
        return index.get_indexer(values).astype(np.int64)
    found = _POSITION_TABLES.get(id(index))
    if found is None:
        keys = index.tolist()
        missing_at = next((i for i, v in enumerate(keys) if _is_missing(v)), -1)
        found = _POSITION_TABLES[id(index)] = ({v: i for i, v in enumerate(keys) if not _is_missing(v)}, missing_at)
        weakref.finalize(index, _POSITION_TABLES.pop, id(index), None)
    table, missing_at = found
    if len(values) <= _FEW_TEXTS:
        values = values.tolist() if isinstance(values, np.ndarray) else values
        return np.fromiter((missing_at if _is_missing(v) else table.get(v, -1) for v in values), dtype=np.int64,
                           count=len(values))
    codes, uniques = pd.factorize(np.asarray(values, dtype=object))  # missing values (None, NaN) get code -1
    return by_code(codes, [table.get(v, -1) for v in uniques.tolist()], missing_at, np.int64)


def fill_missing(text: np.ndarray, fill: Any) -> np.ndarray:
    """``text`` (:func:`text_values`) with ``fill`` where it is None (in place) or, where ``fill`` is an array, the
    value of ``fill`` at that position."""
    missing = pd.isna(text)
    if missing.any():
        text[missing] = fill[missing] if isinstance(fill, np.ndarray) else fill
    return text


def source_family(sources: Sequence[str] | pd.Series | np.ndarray) -> np.ndarray:
    """Each run's source as the meta-learner sees it: every ``upload:<holder>`` is ``upload`` (one protocol: the
    uploader's own), every other source itself."""
    prefix = UPLOAD_SOURCE + ":"
    codes, distinct = pd.factorize(text_values(sources))  # a few sources, once each; missing: -1
    return by_code(codes, [UPLOAD_SOURCE if v.startswith(prefix) else v for v in distinct.tolist()], None)


def regime(df: pd.DataFrame) -> pd.Series:
    """The data regime of each run: ``k<K>`` (few-shot per class), ``n<N>`` (training subsample) or ``full``."""
    k = df["dataset_examples_per_class"]
    n = df["dataset_n_train_used"]
    out = pd.Series("full", index=df.index, dtype=object)
    out[n.notna()] = "n" + n[n.notna()].astype("int64").astype(str)
    out[k.notna()] = "k" + k[k.notna()].astype("int64").astype(str)
    return out


def task_keys(df: pd.DataFrame) -> pd.Series:
    """``source|dataset|metric|regime``: the configurations an AutoML system would compare with each other."""
    return (df["provenance_source"].astype(str) + "|" + df["dataset_name"].astype(str) + "|"
            + df["task_primary_metric"].astype(str) + "|" + regime(df))


#: What defines a configuration an AutoML system chooses (everything but seeds and data splits).
CONFIG_COLUMNS: tuple[str, ...] = (
    "model_id", "model_upstream_task", "method_name", "method_config", "method_lora_r", "method_lora_alpha",
    "method_lora_dropout", "method_n_frozen_layers", "method_adapter_reduction_factor", "method_n_virtual_tokens",
    "hparams_learning_rate", "hparams_batch_size", "hparams_epochs", "hparams_max_steps", "hparams_warmup_ratio",
    "hparams_warmup_steps", "hparams_weight_decay", "hparams_lr_scheduler", "hparams_optimizer",
    "hparams_max_seq_length", "hparams_dropout", "hparams_label_smoothing", "hparams_precision",
)


#: Up to this many rows, :func:`config_keys` hashes every column's texts in one call.
_FEW_KEYS = 16


def config_keys(df: Rows, *, hashes: Mapping[str, np.ndarray] | None = None) -> pd.Series:
    """One key per distinct configuration: runs that differ only by seed or data split share it.

    Args:
        hashes: :func:`config_column_hashes` of some of the columns, already computed (a request's candidates share
            their model and method columns).
    """
    cols = [c for c in CONFIG_COLUMNS if c in df]
    hashes = hashes or {}
    # pandas' hash of a frame of the columns' canonical texts (hash_pandas_object), from one hash array per column
    computed = iter(config_column_hashes(df, [c for c in cols if c not in hashes]))
    per_column = (hashes[c] if c in hashes else next(computed) for c in cols)
    index = df.index if isinstance(df, pd.DataFrame) else None
    keys = np.empty(row_count(df), dtype=object)
    keys[:] = list(map(str, combine_hash_arrays(per_column, len(cols)).tolist()))
    return pd.Series(keys, index=index)


def config_column_hashes(df: Rows, cols: Sequence[str]) -> list[np.ndarray]:
    """The hash of each of ``cols``' canonical texts (:func:`config_keys` combines them)."""
    n = row_count(df)
    if n <= _FEW_KEYS and cols:  # hashed at once: the hash is elementwise, one call costs more than a few rows
        columns = [df[c] for c in cols]
        texts = np.concatenate([_canonical_text(np.asarray(s), boolean=pd.api.types.is_bool_dtype(s.dtype))
                                for s in columns])
        return list(pd.util.hash_array(texts, categorize=False).reshape(len(cols), n))
    return [_text_hash(df[c]) for c in cols]


def _text_hash(values: pd.Series | np.ndarray) -> np.ndarray:
    """pandas' ``hash_array`` of the column's canonical text (:func:`_canonical_text`), spelled and hashed once per
    distinct value (a request's candidates share most of theirs, and the runs of a source their hyperparameters)."""
    arr = np.asarray(values)
    boolean = pd.api.types.is_bool_dtype(values.dtype)
    if not boolean:
        codes, uniques = pd.factorize(arr)  # missing values (None, NaN) get code -1
        distinct = np.asarray(uniques, dtype=arr.dtype if arr.dtype.kind in "iuf" else object)
        if not any(isinstance(v, float) and v == 0.0 for v in distinct.tolist()):  # factorize merges 0.0, -0.0
            hashes = pd.util.hash_array(_canonical_text(distinct), categorize=False)
            return by_code(codes, hashes, _MISSING_HASH, np.uint64)
    return pd.util.hash_array(_canonical_text(arr, boolean=boolean), categorize=len(arr) > 5000)


#: The hash of a missing value's canonical text.
_MISSING_HASH = pd.util.hash_array(np.array(["\x00"], dtype=object), categorize=False)[0]


def _canonical_text(arr: np.ndarray, *, boolean: bool = False) -> np.ndarray:
    """Values as text in which equal numbers read alike whatever their dtype (8, 8.0 and "8" as "8.0"), ``"\x00"``
    where missing; ``boolean``: a boolean column (nullable ones hold objects), spelled True / False."""
    if arr.dtype.kind == "b" or boolean:
        return fill_missing(text_values(arr), "\x00")
    if arr.dtype.kind in "iuf":
        numbers = arr.astype(np.float64)
    elif all(v is None or (type(v) in (int, float)) for v in arr.tolist()):
        numbers = arr.astype(np.float64)  # numbers and None: None reads as NaN
    else:
        numbers = pd.to_numeric(pd.Series(arr, dtype=object), errors="coerce").to_numpy(dtype=np.float64)
    text = text_values(numbers)
    missing = np.isnan(numbers)
    if missing.any():  # not a number: the value's own text
        text[missing] = fill_missing(text_values(arr[missing]), "\x00")
    return text


def chance_points(df: pd.DataFrame) -> pd.Series:
    """Chance-level score in points where it is known (1/n_classes for accuracy-type metrics, 0 for correlations)."""
    out = pd.Series(np.nan, index=df.index)
    acc = df["task_primary_metric"].isin(ACCURACY_LIKE) & df["dataset_meta_n_classes"].gt(1)
    out[acc] = 100.0 / df.loc[acc, "dataset_meta_n_classes"].astype(float)
    out[df["task_metric_scale"].eq("signed_unit")] = 0.0
    return out


def learning_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """Add the learning targets and keys to the runs the meta-learner can learn from.

    Adds ``points`` (100 x score; NaN for failed runs), ``task_key``, ``config_key`` (runs differing only by seed
    share it), ``failed`` (status failed or diverged). Drops runs whose metric is lower-is-better or unbounded.
    A frame that already is a learning frame is returned as it is.
    """
    if {"points", "task_key", "config_key", "failed"} <= set(runs.columns):
        return runs  # already a learning frame (evaluation folds are): do not recompute per predictor
    keep = runs["task_higher_is_better"].fillna(True).astype(bool) & runs["task_metric_scale"].isin(BOUNDED_SCALES)
    df = runs.loc[keep].copy()
    df["points"] = 100.0 * df["outcome_score"].astype(float)
    df["task_key"] = task_keys(df)
    df["config_key"] = config_keys(df)
    chance = chance_points(df)
    margin = np.where(df["task_metric_scale"].eq("signed_unit"), 2.0, 2.0)
    diverged = df["points"].notna() & chance.notna() & (df["points"] <= chance + margin)
    df["failed"] = (df["outcome_status"].eq("failed") | diverged).astype(int)
    return df.reset_index(drop=True)


def within_task_z(points: pd.Series, tasks: pd.Series) -> pd.Series:
    """Scores standardized within their task (mean 0, std 1; 0 where a task has one run or no spread)."""
    grouped = points.groupby(tasks)
    mean = grouped.transform("mean")
    std = grouped.transform("std").replace(0.0, np.nan)
    return ((points - mean) / std).fillna(0.0).clip(-5, 5)
