"""Baselines with the same interface as :class:`~metaml._estimators.MetaModel`: ``fit(runs)``, ``predict(runs)``,
``rank_score(runs)`` on runs-table rows. Adding an estimator to the evaluation is one class like these.

* :class:`RandomBaseline` — a seeded random score in the training range.
* :class:`GlobalMean` — the mean training score.
* :class:`ModelMethodMean` — "best on average": the mean score of the (model, method) pair on the training tasks,
  falling back to the model's, then the method's mean, then the global mean.
* :class:`KNearestDatasets` — the Auto-sklearn 1.0 idea: the k training datasets nearest on meta-features vote with
  their (model, method) scores, distance-weighted; falls back to :class:`ModelMethodMean`.
* :class:`ExperienceLookup` — the lookup a learned model must not lose to: the standing of the candidate's exact
  configuration, else of its (checkpoint, method), its checkpoint, ... on the training tasks (same source first), as
  :meth:`metaml._experience.Experience.lookup` computes it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from metaml._data import learning_frame
from metaml._experience import Experience

META_COLUMNS = ("dataset_meta_n_samples", "dataset_meta_n_classes", "dataset_meta_class_entropy",
                "dataset_meta_tokens_mean", "dataset_meta_type_token_ratio", "dataset_meta_non_ascii_share",
                "dataset_meta_landmark_tfidf_lr", "dataset_meta_landmark_majority", "dataset_meta_n_text_fields")
LOG_META = {"dataset_meta_n_samples", "dataset_meta_tokens_mean"}


class _Baseline(BaseEstimator):
    def fit(self, runs: pd.DataFrame, y: Any = None, *, keys: dict[str, np.ndarray] | None = None) -> _Baseline:
        """Learn from the runs' scores (``keys``: precomputed experience keys, used by those that read them)."""
        df = learning_frame(runs)
        if df["points"].isna().all():
            raise ValueError("no learnable runs")
        self.global_mean_ = float(df["points"].mean())
        self.global_std_ = float(df["points"].std()) or 1.0
        self._fit_all(df, keys)
        self._fit(df[df["points"].notna()])
        return self

    def _fit_all(self, df: pd.DataFrame, keys: dict[str, np.ndarray] | None) -> None:
        pass

    def _fit(self, df: pd.DataFrame) -> None:
        pass

    def predict(self, runs: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "global_mean_")
        return self._predict(runs)

    def rank_score(self, runs: pd.DataFrame) -> np.ndarray:
        return self.predict(runs)

    def _predict(self, runs: pd.DataFrame) -> np.ndarray:
        return np.full(len(runs), self.global_mean_)


class RandomBaseline(_Baseline):
    """Uniform random scores in the training range (seeded)."""

    def __init__(self, random_state: int = 0) -> None:
        self.random_state = random_state

    def _fit(self, df: pd.DataFrame) -> None:
        self.low_, self.high_ = float(df["points"].min()), float(df["points"].max())

    def _predict(self, runs: pd.DataFrame) -> np.ndarray:
        rng = np.random.default_rng(self.random_state)
        return rng.uniform(self.low_, self.high_, size=len(runs))


class GlobalMean(_Baseline):
    """The mean training score for every candidate."""


def _pair(df: pd.DataFrame) -> pd.Series:
    return df["model_id"].astype(str) + "\x1f" + df["method_name"].astype(str)


class ModelMethodMean(_Baseline):
    """Mean score of the (model, method) pair on the training runs, with model, method and global fallbacks."""

    def _fit(self, df: pd.DataFrame) -> None:
        self.pair_ = df.groupby(_pair(df))["points"].mean()
        self.model_ = df.groupby("model_id")["points"].mean()
        self.method_ = df.groupby("method_name")["points"].mean()

    def _predict(self, runs: pd.DataFrame) -> np.ndarray:
        out = _pair(runs).map(self.pair_)
        out = out.fillna(runs["model_id"].map(self.model_))
        out = out.fillna(runs["method_name"].map(self.method_))
        return out.fillna(self.global_mean_).to_numpy(dtype=float)


class KNearestDatasets(ModelMethodMean):
    """The k nearest training datasets on meta-features vote with their (model, method) scores."""

    def __init__(self, k: int = 5) -> None:
        self.k = k

    def _fit(self, df: pd.DataFrame) -> None:
        super()._fit(df)
        meta = self._meta(df.groupby("dataset_name").first())
        self.meta_mean_, self.meta_std_ = meta.mean(), meta.std().replace(0, 1).fillna(1)
        self.meta_ = ((meta - self.meta_mean_) / self.meta_std_)
        self.table_ = df.groupby(["dataset_name", _pair(df).rename("pair")])["points"].mean()

    @staticmethod
    def _meta(frame: pd.DataFrame) -> pd.DataFrame:
        out = frame[list(META_COLUMNS)].apply(pd.to_numeric, errors="coerce").astype(float)
        for col in LOG_META:
            out[col] = np.log10(out[col].clip(lower=1))
        return out

    def _predict(self, runs: pd.DataFrame) -> np.ndarray:
        fallback = super()._predict(runs)
        out = fallback.copy()
        pairs = _pair(runs)
        for name, idx in runs.groupby("dataset_name").groups.items():
            target = ((self._meta(runs.loc[idx[:1]].set_index("dataset_name")) - self.meta_mean_) / self.meta_std_)
            target = target.iloc[0]
            known = target.notna()
            if known.sum() < 2:
                continue
            cand = self.meta_.loc[self.meta_.index != name, known[known].index]
            cand = cand.dropna(thresh=max(2, int(known.sum() * 0.6)))
            if cand.empty:
                continue
            dist = np.sqrt(((cand - target[known]) ** 2).mean(axis=1, skipna=True))
            near = dist.nsmallest(self.k)
            weights = 1.0 / (near + 1e-3)
            sub = self.table_.loc[self.table_.index.get_level_values(0).isin(near.index)]
            sub = sub.reset_index()
            sub["w"] = sub["dataset_name"].map(weights)
            votes = sub.groupby("pair").apply(lambda g: np.average(g["points"], weights=g["w"]),
                                              include_groups=False)
            pos = runs.index.get_indexer(idx)
            got = pairs.loc[idx].map(votes).to_numpy(dtype=float)
            out[pos] = np.where(np.isnan(got), fallback[pos], got)
        return out


class ExperienceLookup(_Baseline):
    """The standing of the candidate's most specific key with experience (:data:`metaml._experience.LOOKUP_ORDER`).

    Its ranking view is the standing itself; its points are the training mean plus the standing in training standard
    deviations (a lookup knows ranks, not levels).
    """

    def _fit_all(self, df: pd.DataFrame, keys: dict[str, np.ndarray] | None) -> None:
        self.experience_ = Experience().fit(df, keys=keys)

    def rank_score(self, runs: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "experience_")
        return self.experience_.lookup(runs)

    def _predict(self, runs: pd.DataFrame) -> np.ndarray:
        return self.global_mean_ + self.global_std_ * self.rank_score(runs)


BASELINES: dict[str, type[_Baseline]] = {
    "lookup": ExperienceLookup,
    "random": RandomBaseline,
    "global_mean": GlobalMean,
    "model_method_mean": ModelMethodMean,
    "knn_datasets": KNearestDatasets,
}
