"""Evaluation protocols that never split the runs of one held-out unit between training and test.

Each protocol yields folds ``(held_out_label, train_index, test_index)`` over a learning frame:

* ``lodo`` — leave one dataset out: every run on the dataset (all sources, metrics, regimes) is held out.
* ``lomo`` — leave one model out: every run that starts from the model, or from a checkpoint derived from it
  (``model.base_model``), is held out.
* ``lofo`` — leave one model family out: every size of the family (e.g. all T5s) is held out at once.
* ``loso`` — leave one source out.
* ``gkfold`` — grouped k-fold by dataset.

With ``max_folds`` a protocol evaluates that many held-out units, sampled (seeded) across sources so that every
source is represented; each fold still trains on everything not held out.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold

PROTOCOLS = ("lodo", "lomo", "lofo", "loso", "gkfold")


def groups_for(frame: pd.DataFrame, protocol: str) -> pd.Series:
    """The held-out unit of each run under ``protocol``."""
    if protocol in ("lodo", "gkfold"):
        return frame["dataset_name"].astype(str)
    if protocol == "lomo":
        return frame["model_base_model"].fillna(frame["model_id"]).astype(str)
    if protocol == "lofo":
        return frame["model_family"].fillna(frame["model_id"]).astype(str)
    if protocol == "loso":
        return frame["provenance_source"].astype(str)
    raise ValueError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")


def _sample_units(frame: pd.DataFrame, groups: pd.Series, max_folds: int | None, seed: int,
                  min_runs: int, wanted: set[str] | None) -> list[str]:
    sizes = groups.value_counts()
    units = sorted(sizes[sizes >= min_runs].index)
    if wanted is not None:
        units = [u for u in units if u in wanted]
    if max_folds is None or len(units) <= max_folds:
        return units
    rng = np.random.default_rng(seed)
    by_source = frame.assign(_g=groups).groupby("_g")["provenance_source"].agg(lambda s: s.mode().iat[0])
    pools: dict[str, list[str]] = {}
    for unit in units:
        pools.setdefault(by_source[unit], []).append(unit)
    for pool in pools.values():
        rng.shuffle(pool)
    chosen: list[str] = []
    while len(chosen) < max_folds and any(pools.values()):
        for source in sorted(pools):
            if pools[source] and len(chosen) < max_folds:
                chosen.append(pools[source].pop())
    return sorted(chosen)


def folds(frame: pd.DataFrame, protocol: str, *, max_folds: int | None = None, k: int = 5, seed: int = 0,
          min_runs: int = 10, units: set[str] | None = None) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Yield ``(held_out, train_index, test_index)`` positional indexes into ``frame``.

    Args:
        frame: a learning frame (:func:`metaml._data.learning_frame`).
        protocol: one of :data:`PROTOCOLS`.
        max_folds: evaluate at most this many held-out units (sampled across sources).
        k: folds of ``gkfold``.
        seed: sampling seed.
        min_runs: held-out units with fewer runs are not evaluated on their own (they stay in training).
        units: evaluate only these held-out units (the others stay in training); None: every unit.
    """
    groups = groups_for(frame, protocol)
    if protocol == "gkfold":
        for i, (train, test) in enumerate(GroupKFold(n_splits=k).split(frame, groups=groups)):
            if max_folds is not None and i >= max_folds:
                break
            yield f"fold{i}", train, test
        return
    values = groups.to_numpy()
    for unit in _sample_units(frame, groups, max_folds, seed, min_runs, units):
        test = np.flatnonzero(values == unit)
        train = np.flatnonzero(values != unit)
        yield unit, train, test
