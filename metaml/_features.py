"""Featurization of runs for the meta-estimators: one column recipe, executed to fit and to predict.

:class:`RunFeaturizer` turns runs-table rows (a DataFrame with the columns of :data:`metaml._data.LEARN_COLUMNS`)
into one float matrix that LightGBM reads directly (categories as integer codes, declared categorical to LightGBM;
missing values NaN, which LightGBM routes, so runs from sources that lack a feature are never dropped):

* dataset meta-features (sizes log-scaled), the data regime (few-shot K, training examples used);
* model features (parameters log-scaled, layers, width, heads, vocabulary, positions; family, architecture,
  pre-training objective and domain as categories), whether the checkpoint was already fine-tuned;
* method and its hyperparameters (LoRA rank/alpha/dropout, frozen layers, adapter factor, virtual tokens, trainable
  parameters and their share of the model);
* training hyperparameters (learning rate, batch size, steps log-scaled; epochs, warmup, weight decay, dropout,
  sequence length; scheduler, optimizer, precision as categories);
* **experience** (:mod:`metaml._experience`): the standing of the exact checkpoint, of (checkpoint, method), of the
  whole configuration, of the base model (with and without the method), of the method and of (family, method) on the
  training tasks, over every source, over the row's own source and over the tasks in its dataset's language, the
  checkpoint's standing as a probed frozen encoder, each with the number of tasks behind it and its spread across
  them, and the lookup those standings give. Training rows never see their own dataset's tasks in them (an unseen
  dataset's view); a share of training models (``model_dropout``) also lose their model-specific standings, so the
  learner learns to predict for checkpoints without experience too;
* **transfer** from the upstream task of a checkpoint that was already fine-tuned: whether it is the target dataset
  itself, and how far the upstream dataset is from the target by meta-features (:mod:`metaml._similarity`: overall,
  and in classes, text length and size), where the training runs describe the upstream dataset.

The recipe (:meth:`RunFeaturizer.transform_array`) is numpy from the raw columns to the matrix; :meth:`transform`
returns the same matrix as a named DataFrame. Serving and training run the same code, so they cannot drift. A served
request's candidates share their task and, many at a time, their model and method: given each row's (model, method)
pair, the features that read no hyperparameter are computed once per pair (and remembered by the pair's key,
:class:`PairCodes`), and the matrix is the same. Its rows may come as one array per column (the candidates' columns)
instead of a DataFrame: for one candidate, building the 68-column frame cost more than scoring it.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from metaml._data import (
    CONFIG_COLUMNS,
    Rows,
    config_column_hashes,
    frame_of,
    positions,
    row_count,
    source_family,
    text_values,
)
from metaml._experience import KEYS, SCOPES, Experience, config_key_texts
from metaml._lru import BoundedCache
from metaml._similarity import distances, meta_vectors

LOG_COLUMNS = {
    "dataset_meta_n_samples": "ds_log_n_samples",
    "dataset_n_train_used": "ds_log_n_train_used",
    "dataset_examples_per_class": "ds_log_examples_per_class",
    "dataset_meta_chars_mean": "ds_log_chars_mean",
    "dataset_meta_tokens_mean": "ds_log_tokens_mean",
    "dataset_meta_tokens_p90": "ds_log_tokens_p90",
    "dataset_meta_vocab_size": "ds_log_vocab_size",
    "dataset_meta_imbalance_ratio": "ds_log_imbalance",
    "model_n_params": "m_log_params",
    "model_vocab_size": "m_log_vocab",
    "method_lora_r": "me_log_lora_r",
    "method_trainable_params": "me_log_trainable",
    "hparams_learning_rate": "hp_log_lr",
    "hparams_batch_size": "hp_log_batch",
    "hparams_max_steps": "hp_log_max_steps",
    "hparams_max_seq_length": "hp_log_seq_len",
}
NUMERIC_COLUMNS = {
    "dataset_meta_n_classes": "ds_n_classes",
    "dataset_meta_class_entropy": "ds_class_entropy",
    "dataset_meta_type_token_ratio": "ds_ttr",
    "dataset_meta_non_ascii_share": "ds_non_ascii",
    "dataset_meta_n_text_fields": "ds_text_fields",
    "dataset_meta_landmark_tfidf_lr": "ds_landmark",
    "dataset_meta_landmark_majority": "ds_majority",
    "model_n_layers": "m_layers",
    "model_hidden_size": "m_hidden",
    "model_n_heads": "m_heads",
    "model_max_positions": "m_positions",
    "method_lora_alpha": "me_lora_alpha",
    "method_lora_dropout": "me_lora_dropout",
    "method_n_frozen_layers": "me_frozen_layers",
    "method_adapter_reduction_factor": "me_adapter_factor",
    "method_n_virtual_tokens": "me_virtual_tokens",
    "hparams_epochs": "hp_epochs",
    "hparams_weight_decay": "hp_weight_decay",
    "hparams_dropout": "hp_dropout",
    "hparams_label_smoothing": "hp_label_smoothing",
}
CATEGORICAL_COLUMNS = {
    "task_type": "task_type",
    "task_primary_metric": "task_metric",
    "dataset_meta_language": "ds_language",
    "dataset_meta_domain": "ds_domain",
    "model_family": "m_family",
    "model_arch_type": "m_arch",
    "model_pretraining_objective": "m_objective",
    "model_pretraining_domain": "m_domain",
    "method_name": "me_name",
    "method_kind": "me_kind",
    "hparams_lr_scheduler": "hp_scheduler",
    "hparams_optimizer": "hp_optimizer",
    "hparams_precision": "hp_precision",
    "provenance_source": "source",
}
DERIVED = ("me_trainable_share", "hp_warmup", "m_fine_tuned", "regime_few_shot", "m_log_params_per_class")
REGIME = "regime"
#: Columns that describe the task, not the configuration (the points model reads only these and the standing).
TASK_COLUMNS = (*(n for c, n in LOG_COLUMNS.items() if c.startswith("dataset_")),
                *(n for c, n in NUMERIC_COLUMNS.items() if c.startswith("dataset_")),
                "task_type", "task_metric", "ds_language", "ds_domain", "source", "regime_few_shot", REGIME)
#: Upstream-transfer features (see the module docstring).
TRANSFER = ("up_same", "up_dist", "up_d_classes", "up_d_tokens", "up_d_samples")
#: Experience keys that describe one checkpoint, blanked together for ``model_dropout``.
MODEL_SPECIFIC = ("ckpt", "ckpt_method", "config", "base", "base_method", "upstream")
_REGIME_CODES = {"f": 0.0, "k": 1.0, "n": 2.0}
#: Distinct (task, model, method) parts whose features that read no hyperparameter one featurizer remembers (a served
#: model's: an AutoML system asks about the same task and models again and again).
PAIR_CACHE_SIZE = 4096


class PairCodes(NamedTuple):
    """Each row's pair (``codes``: ``0..len(keys)-1``) and what identifies each pair's values (``keys[code]``): rows
    of equal keys hold equal values in every column but the hyperparameters, in any call (the serving path's
    remembered pair rows, :class:`metaml.serving.PairRows`), so the features remembered for a pair are found by its
    key without reading its values."""

    codes: np.ndarray
    keys: Sequence[Hashable]

    def __len__(self) -> int:  # one code per row, as the array of codes alone
        return len(self.codes)


def _floats(rows: Mapping[str, Any], col: str) -> np.ndarray:
    """A column as float64 (NaN for missing or non-numbers)."""
    s = rows[col]
    values = s.to_numpy() if isinstance(s, pd.Series) else np.asarray(s)
    if values.dtype.kind in "fiub":
        return values.astype(np.float64, copy=False)
    try:  # numbers and None (the usual object column)
        return values.astype(np.float64)
    except (TypeError, ValueError):
        return pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").astype(float).to_numpy()


def _labels(rows: Mapping[str, Any], col: str) -> np.ndarray:
    """A column as strings (pandas' spelling of numbers), None for missing; sources as their family."""
    out = text_values(rows[col])
    return source_family(out) if col == "provenance_source" else out


def _codes(values: np.ndarray, categories: pd.Index) -> np.ndarray:
    """Category codes as floats (NaN for missing or unseen)."""
    codes = positions(categories, values).astype(np.float64)
    codes[codes < 0] = np.nan
    return codes


class RunFeaturizer(TransformerMixin, BaseEstimator):
    """Runs-table rows -> the features of the meta-estimators (see the module docstring).

    Args:
        min_category_count: categories seen fewer times at fit are treated as missing.
        smoothing: pseudo-tasks at standing 0 in every experience standing.
        experience: compute the experience features (needs ``y`` at fit).
        experience_keys: which keys of :data:`metaml._experience.KEYS`.
        experience_scopes: which scopes of :data:`metaml._experience.SCOPES` become features.
        transfer: compute the upstream-transfer features.
        model_dropout: share of training models whose model-specific standings are blanked in the training rows.
        random_state: seed of the dropout.
    """

    def __init__(self, min_category_count: int = 5, smoothing: float = 1.0, experience: bool = True,
                 experience_keys: Sequence[str] = tuple(KEYS), experience_scopes: Sequence[str] = SCOPES,
                 transfer: bool = True, model_dropout: float = 0.2, random_state: int = 0) -> None:
        self.min_category_count = min_category_count
        self.smoothing = smoothing
        self.experience = experience
        self.experience_keys = experience_keys
        self.experience_scopes = experience_scopes
        self.transfer = transfer
        self.model_dropout = model_dropout
        self.random_state = random_state

    # -- fitting -------------------------------------------------------------------------------------------------

    def fit(self, X: pd.DataFrame, y: Any = None) -> RunFeaturizer:
        self.fit_transform_array(X, y)
        return self

    def fit_transform(self, X: pd.DataFrame, y: Any = None, **fit_params: Any) -> pd.DataFrame:
        return self._frame(self.fit_transform_array(X, y, **fit_params), X.index)

    def fit_transform_array(self, X: pd.DataFrame, y: Any = None, *,
                            keys: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """Fit, and return the training rows' matrix (their own dataset left out of their standings).

        Args:
            X: a learning frame (runs-table rows with ``task_key``).
            y: scores in points (NaN for runs without one); needed with ``experience``.
            keys: :meth:`metaml._experience.Experience.keys_of` the rows, when already computed.
        """
        X = _check_frame(X)
        self.__dict__.pop("_pair_cache", None)  # what a previous fit remembered
        self.categories_ = {}
        for col, name in CATEGORICAL_COLUMNS.items():
            counts = pd.Series(_labels(X, col)).value_counts()
            self.categories_[name] = pd.Index(sorted(counts[counts >= self.min_category_count].index))
        self.experience_ = None
        if self.experience:
            if y is None:
                raise ValueError("RunFeaturizer needs y (scores in points) to learn the experience features")
            scopes = tuple(dict.fromkeys(("a", "s", *self.experience_scopes)))  # the lookup reads a and s
            self.experience_ = Experience(self.experience_keys, smoothing=self.smoothing, scopes=scopes).fit(
                X, y, keys=keys)
        self.dataset_meta_ = None
        if self.transfer:
            firsts = X.groupby("dataset_name", sort=True).first()
            vectors = meta_vectors(firsts)
            known = ~np.isnan(vectors).all(axis=1)
            self.dataset_meta_ = pd.DataFrame(vectors[known], index=firsts.index[known].astype(str))
        cols = self._columns(X, training=True, keys=keys)
        self.feature_names_out_ = np.asarray(list(cols), dtype=object)
        self.categorical_ = [i for i, n in enumerate(cols) if n in CATEGORICAL_COLUMNS.values() or n == REGIME]
        return self._stack(cols, len(X))

    # -- the recipe ----------------------------------------------------------------------------------------------

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """The feature matrix as a DataFrame named by :meth:`get_feature_names_out` (categories as codes)."""
        return self._frame(self.transform_array(X), X.index)

    def transform_array(self, X: Rows, *, pairs: np.ndarray | PairCodes | None = None) -> np.ndarray:
        """The feature matrix (rows x :meth:`get_feature_names_out`) of new rows.

        Args:
            X: a DataFrame, or one array per column (read without building a frame when ``pairs`` are given; the
                pairs not remembered yet are read as a frame of their first rows).
            pairs: a code per row, equal for rows that hold the same values in every column but the hyperparameters
                (``hparams_*``; a request's candidates of one model and method for one task): the features that read
                no hyperparameter are computed once per code, and remembered by the values of those columns for
                the next call (up to :data:`PAIR_CACHE_SIZE` of them), or by the pair's key (:class:`PairCodes`).
                One row is one pair. The matrix is the same.
        """
        check_is_fitted(self, "feature_names_out_")
        n = row_count(_check_rows(X))
        if pairs is not None and len(pairs) != n:
            raise ValueError(f"pairs holds {len(pairs)} codes for {n} rows")
        if pairs is None and n == 1:  # one row is one pair (a decision on one candidate)
            pairs = np.zeros(1, dtype=np.int64)
        if pairs is not None and n:
            codes = pairs.codes if isinstance(pairs, PairCodes) else pairs
            distinct, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
            keys = [("pair", pairs.keys[c]) for c in distinct.tolist()] if isinstance(pairs, PairCodes) else None
            return self._stack(self._paired_columns(X, first, inverse, keys), n)
        return self._stack(self._columns(_taken(X, None), training=False), n)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "feature_names_out_")
        return self.feature_names_out_

    def _columns(self, X: pd.DataFrame, *, training: bool,
                 keys: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        out = self._plain_columns(X)
        if self.experience_ is not None:
            feats = self.experience_.features(X, leave_own_dataset=training, keys=keys)
            if training and self.model_dropout > 0:
                self._drop_models(X, feats)
            out.update(self._experience_columns(X, feats))
        if getattr(self, "dataset_meta_", None) is not None:
            out.update(self._transfer(X))
        if hasattr(self, "feature_names_out_"):
            return {name: out[name] for name in self.feature_names_out_}
        return out

    def _paired_columns(self, X: Rows, first: np.ndarray, inverse: np.ndarray,
                        keys: list[Any] | None) -> dict[str, np.ndarray]:
        """:meth:`_columns` of new rows where the rows ``first`` hold the distinct values of every column but the
        hyperparameters and ``inverse`` is each row's among them: what does not read a hyperparameter is computed
        once per distinct row, or remembered (:meth:`_shared`; by ``keys`` when given, one per distinct row)."""
        shared = {group: {name: values[inverse] for name, values in part.items()}
                  for group, part in self._shared(X, first, keys).items()}
        out = {**shared["plain"], **self._plain_columns(X, reads_hparams=True)}
        if self.experience_ is not None:  # the configuration is the one key that reads the hyperparameters
            feats = shared["experience"]
            if "config" in self.experience_.keys:
                keys = {"config": config_key_texts(X, hashes=shared["hashes"])}
                feats.update(self.experience_.features(X, names=["config"], keys=keys))
            out.update(self._experience_columns(X, feats))
        return {name: out[name] for name in self.feature_names_out_}

    def _shared(self, X: Rows, first: np.ndarray, keys: list[Any] | None) -> dict[str, dict[str, np.ndarray]]:
        """Per row ``first`` of ``X``: the features that read no hyperparameter (``plain``, transfer included), the
        standings of the experience keys that read none (``experience``) and the hash of each configuration column
        that is no hyperparameter (``hashes``), remembered (:class:`~metaml._lru.BoundedCache`) by ``keys`` or else
        by the row's values."""
        cache = self.__dict__.get("_pair_cache")
        if cache is None:
            cache = self.__dict__.setdefault("_pair_cache", BoundedCache(PAIR_CACHE_SIZE))
        if keys is None:
            keys = _content_keys(_taken(X, first))
        entries = [cache.get(k) for k in keys]
        missing = [i for i, e in enumerate(entries) if e is None]
        if missing:
            rows = _taken(X, first[missing])
            plain = self._plain_columns(rows, reads_hparams=False)
            if getattr(self, "dataset_meta_", None) is not None:
                plain.update(self._transfer(rows))
            experience = {} if self.experience_ is None else self.experience_.features(
                rows, names=[k for k in self.experience_.keys if k != "config"])
            cols = [c for c in CONFIG_COLUMNS if c in rows and not c.startswith("hparams_")]
            fresh = {"plain": plain, "experience": experience,
                     "hashes": dict(zip(cols, config_column_hashes(rows, cols), strict=True))}
            # each group as its names and one matrix (rows x names): an entry is a row of each
            groups = {group: (tuple(part), np.column_stack(list(part.values())) if part else np.empty((len(rows), 0)))
                      for group, part in fresh.items()}
            for j, i in enumerate(missing):
                entries[i] = {group: (names, matrix[j].copy()) for group, (names, matrix) in groups.items()}
                cache.put(keys[i], entries[i])
        out = {}
        for group, (names, _) in entries[0].items():
            matrix = np.stack([e[group][1] for e in entries])
            out[group] = {name: matrix[:, j] for j, name in enumerate(names)}
        return out

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_pair_cache", None)  # remembered features are the serving process's own
        return state

    def _plain_columns(self, X: Rows, reads_hparams: bool | None = None) -> dict[str, np.ndarray]:
        """The features read from the row's own columns (all but experience and transfer); ``reads_hparams``: only
        those that read a hyperparameter (True) or only those that do not (False; a frame)."""

        def wanted(*cols: str) -> bool:
            return reads_hparams is None or reads_hparams == any(c.startswith("hparams_") for c in cols)

        out: dict[str, np.ndarray] = {}
        with np.errstate(divide="ignore", invalid="ignore"):
            for col, name in LOG_COLUMNS.items():
                if wanted(col):
                    out[name] = np.log10(np.maximum(_floats(X, col), 1e-12))
            for col, name in NUMERIC_COLUMNS.items():
                if wanted(col):
                    out[name] = _floats(X, col)
            if wanted("method_trainable_params", "model_n_params"):
                out["me_trainable_share"] = _floats(X, "method_trainable_params") / _floats(X, "model_n_params")
            if wanted("hparams_warmup_ratio", "hparams_warmup_steps", "hparams_max_steps"):
                ratio = _floats(X, "hparams_warmup_ratio")
                steps_share = _floats(X, "hparams_warmup_steps") / _floats(X, "hparams_max_steps")
                out["hp_warmup"] = np.where(np.isnan(ratio), steps_share, ratio)
            if wanted("model_upstream_task", "dataset_examples_per_class", "model_n_params"):
                out["m_fine_tuned"] = X["model_upstream_task"].notna().to_numpy(dtype=np.float64)
                few = _floats(X, "dataset_examples_per_class")
                out["regime_few_shot"] = (~np.isnan(few)).astype(np.float64)
                out["m_log_params_per_class"] = out["m_log_params"] - np.log10(
                    np.maximum(_floats(X, "dataset_meta_n_classes"), 1.0))
        for col, name in CATEGORICAL_COLUMNS.items():
            if wanted(col):
                out[name] = _codes(_labels(X, col), self.categories_[name])
        if wanted("dataset_examples_per_class", "dataset_n_train_used"):
            few, n_used = _floats(X, "dataset_examples_per_class"), _floats(X, "dataset_n_train_used")
            out[REGIME] = np.where(~np.isnan(few), _REGIME_CODES["k"],
                                   np.where(~np.isnan(n_used), _REGIME_CODES["n"], _REGIME_CODES["f"]))
        return out

    def _drop_models(self, X: pd.DataFrame, feats: dict[str, np.ndarray]) -> None:
        """Blank the model-specific standings of a ``model_dropout`` share of the training rows' models (in place)."""
        models = _labels(X, "model_base_model")
        models = np.where(pd.isna(models), _labels(X, "model_id"), models).astype(str)
        unique = np.unique(models)
        rng = np.random.default_rng(self.random_state)
        dropped = np.isin(models, unique[rng.random(len(unique)) < self.model_dropout])
        for key in MODEL_SPECIFIC:
            for scope in ("a", "s"):
                col = f"{scope}_{key}"
                if col in feats:
                    feats[col][dropped] = np.nan
                    feats[col + "_n"][dropped] = 0.0
                    feats[col + "_sd"][dropped] = np.nan

    def _experience_columns(self, X: Rows, feats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The standings of the wanted scopes, and the lookup they give."""
        wanted = set(self.experience_scopes)
        out = {col: values for col, values in feats.items() if col.split("_", 1)[0] in wanted}
        out["lookup"] = self.experience_.lookup(X, features=feats)
        return out

    def _transfer(self, X: pd.DataFrame) -> dict[str, np.ndarray]:
        """How far each row's upstream dataset is from its target (NaN without an upstream or its meta-features)."""
        upstream = _labels(X, "model_upstream_task")
        has = ~pd.isna(upstream)
        target = meta_vectors(X)
        table = self.dataset_meta_
        pos = positions(table.index, np.where(has, upstream, "").astype(object))
        up = np.full(target.shape, np.nan)
        up[pos >= 0] = table.to_numpy()[pos[pos >= 0]]
        same = np.where(has, (upstream == _labels(X, "dataset_name")).astype(float), np.nan)
        diff = np.abs(up - target)
        return {"up_same": same, "up_dist": distances(up, target), "up_d_classes": diff[:, 1],
                "up_d_tokens": diff[:, 3], "up_d_samples": diff[:, 0]}

    @staticmethod
    def _stack(cols: Mapping[str, np.ndarray], n: int) -> np.ndarray:
        matrix = np.empty((n, len(cols)), dtype=np.float64)
        for j, values in enumerate(cols.values()):
            matrix[:, j] = values
        return matrix

    def _frame(self, matrix: np.ndarray, index: pd.Index) -> pd.DataFrame:
        return pd.DataFrame(matrix, columns=list(self.feature_names_out_), index=index)

    def column_index(self, names: Sequence[str]) -> list[int]:
        """Positions of ``names`` in the feature matrix (those present)."""
        pos = {n: i for i, n in enumerate(self.feature_names_out_)}
        return [pos[n] for n in names if n in pos]


def _content_keys(frame: pd.DataFrame) -> list[Any]:
    """Each row's values of every column but the hyperparameters, as a key (missing values alike, types apart); a
    fresh object that equals nothing for a row holding a value that cannot be a key."""
    cols = [i for i, c in enumerate(frame.columns) if not c.startswith("hparams_")]
    names = tuple(frame.columns[cols])
    out: list[Any] = []
    for row in frame.to_numpy(dtype=object)[:, cols].tolist():
        key = (names, *(_key_value(v) for v in row))
        try:
            hash(key)
        except TypeError:
            key = object()  # never found, and forgotten when it ages out
        out.append(key)
    return out


def _key_value(v: Any) -> Any:
    """A value as part of a key: missing values alike, 1, 1.0 and True apart, 0.0 and -0.0 apart (configuration keys
    tell them apart)."""
    if v is None or v is pd.NA:
        return None
    if isinstance(v, float):
        return None if v != v else (type(v), repr(v))
    return type(v), v


def _check_frame(X: Any) -> pd.DataFrame:
    if not isinstance(X, pd.DataFrame):
        raise TypeError(f"expected a DataFrame of runs-table rows, got {type(X).__name__}")
    return X


def _check_rows(X: Any) -> Rows:
    if not isinstance(X, pd.DataFrame | Mapping):
        raise TypeError(f"expected runs-table rows (a DataFrame or one array per column), got {type(X).__name__}")
    return X


def _taken(X: Rows, rows: np.ndarray | None) -> pd.DataFrame:
    """``rows`` of ``X`` (all when None) as a frame."""
    if isinstance(X, pd.DataFrame):
        return X if rows is None else X.iloc[rows]
    return frame_of(X, rows)
