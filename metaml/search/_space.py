"""A task's search space, built from the configurations its runs actually have.

Each **dimension** is one runs-table column that varies among the task's configurations (model, upstream checkpoint,
method, method hyperparameters, training hyperparameters, in :data:`metaml._data.CONFIG_COLUMNS` order, which is
also the order of a grammar's productions: model, then method, then hyperparameters). Its **levels** are the
distinct observed values; a numeric column with more than ``max_levels`` distinct values is discretized into
quantile bins (on a log scale when every value is positive), whose level is the bin. A missing value (a LoRA rank on
a full fine-tuning run) is a level of its own.

Every configuration is a row of level codes (``codes``: configurations x dimensions). A point sampled anywhere in the
product space is mapped to an existing configuration by :meth:`SearchSpace.nearest`: the smallest distance, where a
categorical dimension adds 1 when the levels differ and an ordered (numeric) one adds the difference of the level
ranks divided by the number of ranks minus 1; ties are broken uniformly at random.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from metaml._data import CONFIG_COLUMNS

MISSING = "<none>"


@dataclass
class Dimension:
    """One choice of the search space.

    Attributes:
        name: the runs-table column (``model_id``, ``hparams_learning_rate``...).
        levels: level labels (strings, as Optuna categorical choices and in priors).
        rank: per level, its position among the ordered numeric levels (NaN for a categorical dimension or the
            missing level).
        binned: whether a numeric column was discretized into bins.
    """

    name: str
    levels: list[str]
    rank: np.ndarray
    binned: bool = False

    @property
    def n_levels(self) -> int:
        return len(self.levels)

    @property
    def ordered(self) -> bool:
        return bool(np.isfinite(self.rank).any())


def _label(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _encode_column(name: str, col: pd.Series, max_levels: int) -> tuple[Dimension, np.ndarray]:
    numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
    if not numeric:
        labels = col.map(_label)
        levels = sorted(labels.unique())
        codes = labels.map({lv: i for i, lv in enumerate(levels)}).to_numpy(dtype=int)
        return Dimension(name, levels, np.full(len(levels), np.nan)), codes
    values = col.astype(float)
    present = values.dropna()
    distinct = np.sort(present.unique())
    binned = len(distinct) > max_levels
    if binned:
        log = bool((present > 0).all())
        scale = np.log(present) if log else present
        edges = np.unique(np.quantile(scale, np.linspace(0, 1, max_levels + 1)))
        pos = np.clip(np.searchsorted(edges, np.log(values) if log else values, side="right") - 1, 0, len(edges) - 2)
        back = np.exp if log else (lambda x: x)
        labels_num = [f"[{back(edges[i]):.3g}, {back(edges[i + 1]):.3g}]" for i in range(len(edges) - 1)]
        used = sorted(set(pos[values.notna().to_numpy()].tolist()))
        levels = [labels_num[i] for i in used]
        remap = {b: i for i, b in enumerate(used)}
        codes = np.array([remap[p] if ok else -1 for p, ok in zip(pos, values.notna(), strict=True)], dtype=int)
    else:
        levels = [_label(v) for v in distinct]
        index = {v: i for i, v in enumerate(distinct)}
        codes = np.array([index[v] if not math.isnan(v) else -1 for v in values], dtype=int)
    rank = np.arange(len(levels), dtype=float)
    if (codes < 0).any():
        levels.append(MISSING)
        rank = np.append(rank, np.nan)
        codes[codes < 0] = len(levels) - 1
    return Dimension(name, levels, rank, binned), codes


class SearchSpace:
    """The product of a task's choices, and the task's configurations as points in it.

    Args:
        dims: the dimensions.
        codes: level code of each configuration on each dimension (configurations x dimensions).
    """

    def __init__(self, dims: Sequence[Dimension], codes: np.ndarray) -> None:
        self.dims = list(dims)
        self.codes = np.asarray(codes, dtype=int).reshape(len(codes), len(self.dims))

    @classmethod
    def from_configs(cls, configs: pd.DataFrame, columns: Sequence[str] = CONFIG_COLUMNS,
                     max_levels: int = 8) -> SearchSpace:
        """The space spanned by ``configs`` (one runs-table row per configuration): one dimension per column that
        takes more than one value among them."""
        dims, codes = [], []
        for name in columns:
            if name not in configs:
                continue
            col = configs[name]
            if col.astype("string").fillna(MISSING).nunique() < 2:
                continue
            dim, code = _encode_column(name, col.reset_index(drop=True), max_levels)
            if dim.n_levels < 2:
                continue
            dims.append(dim)
            codes.append(code)
        matrix = np.column_stack(codes) if codes else np.zeros((len(configs), 0), dtype=int)
        return cls(dims, matrix)

    @property
    def n_configs(self) -> int:
        return int(self.codes.shape[0])

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.dims]

    def params(self, i: int) -> dict[str, str]:
        """Configuration ``i`` as ``{dimension: level label}``."""
        return {d.name: d.levels[self.codes[i, j]] for j, d in enumerate(self.dims)}

    def encode(self, params: Mapping[str, str]) -> np.ndarray:
        """Level codes of a point given as ``{dimension: level label}``."""
        return np.array([d.levels.index(str(params[d.name])) for d in self.dims], dtype=int)

    def distance(self, point: np.ndarray) -> np.ndarray:
        """Distance of every configuration to a point (level codes): categorical mismatch 1, ordered dimensions
        the rank difference over the rank range."""
        out = np.zeros(self.n_configs)
        for j, d in enumerate(self.dims):
            col = self.codes[:, j]
            if d.ordered:
                span = max(np.nanmax(d.rank), 1.0)
                r_cfg, r_pt = d.rank[col], d.rank[point[j]]
                diff = np.abs(r_cfg - r_pt) / span
                diff = np.where(np.isnan(diff), (col != point[j]).astype(float), diff)
                out += diff
            else:
                out += (col != point[j]).astype(float)
        return out

    def nearest(self, point: np.ndarray, available: np.ndarray, rng: np.random.Generator) -> int:
        """The available configuration nearest to ``point`` (ties broken uniformly at random)."""
        idx = np.flatnonzero(available)
        if idx.size == 0:
            raise ValueError("no configuration left to propose")
        dist = self.distance(point)[idx]
        best = idx[np.isclose(dist, dist.min())]
        return int(rng.choice(best))

    def level_members(self, j: int) -> list[np.ndarray]:
        """For dimension ``j``: the configurations on each level."""
        return [np.flatnonzero(self.codes[:, j] == k) for k in range(self.dims[j].n_levels)]
