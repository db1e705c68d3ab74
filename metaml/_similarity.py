"""How alike two datasets are, from their meta-features: one distance for the support rule, the upstream-task
features of the meta-learner and the nearest-datasets searchers.

``d_data`` is the mean, over the meta-features both datasets have, of ``|difference| / scale`` on: log10 training
examples (scale 1), log10 classes (0.5), class entropy (0.25), log10 mean tokens per text (0.5), TF-IDF landmark
accuracy (0.1), text fields (1); NaN when they share none.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

#: Dataset meta-feature -> (transform, scale) of the dataset distance.
DATASET_SIMILARITY: dict[str, tuple[Callable[[np.ndarray], np.ndarray], float]] = {
    "n_samples": (lambda v: np.log10(np.maximum(v, 1.0)), 1.0),
    "n_classes": (lambda v: np.log10(np.maximum(v, 1.0)), 0.5),
    "class_entropy": (lambda v: v, 0.25),
    "tokens_mean": (lambda v: np.log10(np.maximum(v, 0.1)), 0.5),
    "landmark_tfidf_lr": (lambda v: v, 0.1),
    "n_text_fields": (lambda v: v, 1.0),
}
SCALES = np.array([s for _, s in DATASET_SIMILARITY.values()])


def meta_vectors(values: Mapping[str, Any] | pd.DataFrame) -> np.ndarray:
    """The transformed meta-features compared by the distance: one row per dataset (a DataFrame with columns named
    like :data:`DATASET_SIMILARITY` or ``dataset_meta_<name>``), or one vector for a mapping."""
    if isinstance(values, pd.DataFrame):
        cols = []
        for name, (transform, _) in DATASET_SIMILARITY.items():
            col = name if name in values else f"dataset_meta_{name}"
            raw = pd.to_numeric(values[col], errors="coerce").to_numpy(dtype=float) if col in values \
                else np.full(len(values), np.nan)
            with np.errstate(invalid="ignore", divide="ignore"):
                cols.append(transform(raw))
        return np.column_stack(cols) if cols else np.zeros((len(values), 0))
    raw = np.array([np.nan if values.get(f) is None else float(values[f]) for f in DATASET_SIMILARITY])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.array([t(np.array([x]))[0] for (t, _), x in zip(DATASET_SIMILARITY.values(), raw, strict=True)])


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``d_data`` between rows of ``a`` and rows of ``b`` (broadcast: (n, k) against (n, k) or (k,))."""
    diff = np.abs(np.asarray(a, dtype=float) - np.asarray(b, dtype=float)) / SCALES
    shared = ~np.isnan(diff)
    n = shared.sum(axis=-1)
    total = np.where(shared, diff, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)
