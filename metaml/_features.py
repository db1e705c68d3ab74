"""Featurization of runs for the meta-estimators, as a scikit-learn transformer.

:class:`RunFeaturizer` turns rows of the runs table (a DataFrame with the columns of
:data:`metaml._data.LEARN_COLUMNS`) into a numeric/categorical frame LightGBM reads directly:

* dataset meta-features (sizes log-scaled), the data regime (few-shot K, training examples used);
* model features (parameters log-scaled, layers, width, heads, vocabulary, positions; family, architecture,
  pre-training objective and domain as categories), whether the checkpoint was already fine-tuned;
* method and its hyperparameters (LoRA rank/alpha/dropout, frozen layers, adapter factor, virtual tokens, trainable
  parameters and their share of the model);
* training hyperparameters (learning rate, batch size, steps log-scaled; epochs, warmup, weight decay, dropout,
  sequence length; scheduler, optimizer, precision as categories);
* **experience encodings**: how a model, a (model, method) pair, a base model, a method, a (family, method) pair and
  an upstream task did on the *training* tasks, as the mean of their within-task standardized scores (one vote per
  task). For the training rows each encoding leaves out every task of the row's own dataset, so the learner sees the
  encodings as they will be for an unseen dataset and never its own target; for new rows it uses every training
  task. This is the knowledge the meta-learner carries to an unseen task.

Missing values stay NaN (LightGBM routes them), so runs from sources that lack a feature are never dropped.
Categories unseen at fit time become NaN.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from metaml._data import regime, task_keys, within_task_z

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
#: Experience encodings: name -> the columns whose combination is encoded.
ENCODINGS: dict[str, tuple[str, ...]] = {
    "xp_model": ("model_id",),
    "xp_model_method": ("model_id", "method_name"),
    "xp_base_model": ("base_or_self",),
    "xp_method": ("method_name",),
    "xp_family_method": ("model_family", "method_name"),
    "xp_upstream": ("model_upstream_task",),
}
#: Encodings that describe one checkpoint, blanked together by ``model_dropout``.
MODEL_SPECIFIC = ("xp_model", "xp_model_method", "xp_base_model")


def _keys(df: pd.DataFrame, cols: tuple[str, ...]) -> pd.Series:
    """One string key per row for the combination ``cols`` (NaN where any part is missing)."""
    if cols == ("base_or_self",):
        return df["model_base_model"].fillna(df["model_id"]).astype(str)
    key = df[cols[0]].astype(str)
    for c in cols[1:]:
        key = key + "\x1f" + df[c].astype(str)
    return key.where(df[list(cols)].notna().all(axis=1))


class RunFeaturizer(TransformerMixin, BaseEstimator):
    """Runs-table rows -> the features of the meta-estimators.

    Args:
        min_category_count: categories seen fewer times at fit are treated as missing.
        smoothing: pseudo-count pulling experience encodings toward 0 (the average task standing).
        encodings: compute the experience encodings (needs ``y`` at fit).
        model_dropout: share of training models whose model-specific encodings are blanked in the training rows, so
            the learner also learns to predict for models it has no experience with (leave-one-model-out).
        random_state: seed of the dropout.
    """

    def __init__(self, min_category_count: int = 5, smoothing: float = 5.0, encodings: bool = True,
                 model_dropout: float = 0.2, random_state: int = 0) -> None:
        self.min_category_count = min_category_count
        self.smoothing = smoothing
        self.encodings = encodings
        self.model_dropout = model_dropout
        self.random_state = random_state

    def fit(self, X: pd.DataFrame, y: Any = None) -> RunFeaturizer:
        self.fit_transform(X, y)
        return self

    def fit_transform(self, X: pd.DataFrame, y: Any = None, **fit_params: Any) -> pd.DataFrame:
        X = _check_frame(X)
        self.categories_ = {}
        for col, name in CATEGORICAL_COLUMNS.items():
            counts = X[col].value_counts()
            self.categories_[name] = sorted(counts[counts >= self.min_category_count].index.astype(str))
        self.encoding_tables_ = {}
        out = self._base(X)
        if self.encodings:
            if y is None:
                raise ValueError("RunFeaturizer needs y (scores in points) to learn experience encodings")
            tasks = task_keys(X)
            z = within_task_z(pd.Series(np.asarray(y, dtype=float), index=X.index), tasks)
            for name, cols in ENCODINGS.items():
                table, loo = self._encode_fit(_keys(X, cols), z, tasks, X["dataset_name"])
                self.encoding_tables_[name] = table
                out[name] = loo[:, 0]
                out[name + "_n"] = loo[:, 1]
            if self.model_dropout > 0:
                models = X["model_base_model"].fillna(X["model_id"]).astype(str)
                unique = np.sort(models.unique())
                rng = np.random.default_rng(self.random_state)
                dropped = set(unique[rng.random(len(unique)) < self.model_dropout])
                mask = models.isin(dropped).to_numpy()
                for name in MODEL_SPECIFIC:
                    out.loc[mask, name] = np.nan
                    out.loc[mask, name + "_n"] = 0.0
        self.feature_names_out_ = np.asarray(out.columns, dtype=object)
        return out

    def _encode_fit(self, keys: pd.Series, z: pd.Series, tasks: pd.Series,
                    datasets: pd.Series) -> tuple[pd.DataFrame, np.ndarray]:
        """Per key: the sum and count of per-task mean z (one vote per task); per row, the same with every task of
        the row's own dataset left out, which is what an unseen dataset will look like."""
        frame = pd.DataFrame({"key": keys, "task": tasks, "ds": datasets, "z": z}).dropna(subset=["key"])
        per_task = frame.groupby(["key", "task", "ds"], sort=False)["z"].mean().rename("zt").reset_index()
        table = per_task.groupby("key")["zt"].agg(["sum", "count"]).rename(columns={"count": "n_tasks"})
        own = per_task.groupby(["key", "ds"])["zt"].agg(["sum", "count"]).rename(
            columns={"sum": "own_sum", "count": "own_n"})
        merged = pd.DataFrame({"key": keys, "ds": datasets}).merge(
            own, left_on=["key", "ds"], right_index=True, how="left").merge(
            table, left_on="key", right_index=True, how="left")
        loo_n = merged["n_tasks"] - merged["own_n"].fillna(0)
        loo = ((merged["sum"] - merged["own_sum"].fillna(0.0)) / (loo_n + self.smoothing)).where(loo_n > 0)
        return table, np.column_stack([loo.to_numpy(), loo_n.fillna(0).to_numpy()])

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        check_is_fitted(self, "feature_names_out_")
        X = _check_frame(X)
        out = self._base(X)
        for name, cols in ENCODINGS.items():
            if name not in self.encoding_tables_:
                continue
            table = self.encoding_tables_[name]
            keys = _keys(X, cols)
            mean = table["sum"] / (table["n_tasks"] + self.smoothing)
            out[name] = keys.map(mean).to_numpy()
            out[name + "_n"] = keys.map(table["n_tasks"]).fillna(0).to_numpy()
        return out[list(self.feature_names_out_)]

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "feature_names_out_")
        return self.feature_names_out_

    def _base(self, X: pd.DataFrame) -> pd.DataFrame:
        out = pd.DataFrame(index=X.index)
        for col, name in LOG_COLUMNS.items():
            out[name] = np.log10(pd.to_numeric(X[col], errors="coerce").astype(float).clip(lower=1e-12))
        for col, name in NUMERIC_COLUMNS.items():
            out[name] = pd.to_numeric(X[col], errors="coerce").astype(float)
        params = pd.to_numeric(X["model_n_params"], errors="coerce").astype(float)
        trainable = pd.to_numeric(X["method_trainable_params"], errors="coerce").astype(float)
        out["me_trainable_share"] = trainable / params
        steps = pd.to_numeric(X["hparams_max_steps"], errors="coerce").astype(float)
        warm_steps = pd.to_numeric(X["hparams_warmup_steps"], errors="coerce").astype(float)
        out["hp_warmup"] = pd.to_numeric(X["hparams_warmup_ratio"], errors="coerce").astype(float).fillna(
            warm_steps / steps)
        out["m_fine_tuned"] = X["model_upstream_task"].notna().astype(float)
        out["regime_few_shot"] = X["dataset_examples_per_class"].notna().astype(float)
        out["m_log_params_per_class"] = out["m_log_params"] - np.log10(
            pd.to_numeric(X["dataset_meta_n_classes"], errors="coerce").astype(float).clip(lower=1))
        for col, name in CATEGORICAL_COLUMNS.items():
            out[name] = pd.Categorical(X[col].astype("string").astype(object).where(X[col].notna()),
                                       categories=self.categories_[name])
        out["regime"] = pd.Categorical(regime(X).str[0], categories=["f", "k", "n"])
        return out


def _check_frame(X: Any) -> pd.DataFrame:
    if not isinstance(X, pd.DataFrame):
        raise TypeError(f"expected a DataFrame of runs-table rows, got {type(X).__name__}")
    return X
