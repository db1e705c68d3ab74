"""Experience: how checkpoints, methods and whole configurations stood on the tasks the knowledge base holds.

The **standing** of a key (a checkpoint, a (checkpoint, method) pair, a configuration...) on one task is the mean
within-task standardized score (:func:`metaml._data.within_task_z`) of the task's runs that have that key. Its
standing over tasks is the mean over tasks (one vote per task, whatever the task's size), shrunk toward 0 (the
average task standing) by ``smoothing`` pseudo-tasks; it comes with the number of tasks behind it and its spread
across them (the standard deviation of the per-task standings), so a learner can tell a key that always wins from one
that wins on average.

Keys (:data:`KEYS`):

* ``ckpt`` — the exact starting checkpoint: model id with the upstream task it was fine-tuned on, if any;
* ``ckpt_method`` — checkpoint and method;
* ``config`` — the whole configuration (:func:`metaml._data.config_keys`: checkpoint, method and every
  hyperparameter but the seed);
* ``base`` / ``base_method`` — the base model a checkpoint derives from (itself for a base model), with the method;
* ``method``, ``family_method``, ``upstream`` — coarser keys that generalize to checkpoints never seen.

Each is computed in three **scopes**: over every task (``a_``); over the tasks of the row's own source (``s_``),
since a standing is relative to the configurations its task compared (a source's tasks compare like with like); and
over the tasks whose dataset is in the row's dataset's language (``l_``): an encoder's standing on the tasks of its
own language says more about the next one than its standing everywhere. For checkpoints, a fourth (``p_``) is
their standing as frozen encoders in the probing source (MTEB's logistic-regression probes), whatever the row's
source: a transferability estimate of the checkpoint on text classification.

**Leaving the row's dataset out.** For training rows (:meth:`Experience.features` with ``leave_own_dataset``) every
task of the row's own dataset is left out of its standings, so a learner sees them as they will be for an unseen
dataset; new rows use every task. The same tables give the lookup baseline (:meth:`Experience.lookup`) and, per past
task, the standing of each candidate (:meth:`Experience.task_profiles`) that the search engine weighs by evidence.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from metaml._data import (
    Rows,
    config_keys,
    fill_missing,
    positions,
    row_count,
    source_family,
    text_values,
    within_task_z,
)


def _text(rows: Rows, col: str, fill: Any = None) -> np.ndarray:
    """A column as text (:func:`metaml._data.text_values`), ``fill`` where missing."""
    out = text_values(rows[col])
    return out if fill is None else fill_missing(out, fill)


def checkpoint_keys(rows: Rows) -> np.ndarray:
    """``model_id@upstream_task`` (``model_id@`` for a checkpoint not fine-tuned upstream)."""
    return _text(rows, "model_id", "?") + "@" + _text(rows, "model_upstream_task", "")


def _base(rows: Rows) -> np.ndarray:
    return fill_missing(_text(rows, "model_base_model", _text(rows, "model_id")), "?")


def _join(*parts: np.ndarray) -> np.ndarray:
    out = parts[0]
    for p in parts[1:]:
        out = out + "|" + p
    return out


def _method(rows: Rows) -> np.ndarray:
    return _text(rows, "method_name", "?")


def config_key_texts(rows: Rows, hashes: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """The ``config`` key of each row (:func:`metaml._data.config_keys`; ``hashes`` as it reads them)."""
    if "config_key" in rows:
        return np.asarray(rows["config_key"], dtype=str).astype(object)
    return config_keys(rows, hashes=hashes).to_numpy()


#: key name -> how it is read from runs-table rows (object arrays; None where the key does not apply).
KEYS: dict[str, Callable[[pd.DataFrame], np.ndarray]] = {
    "ckpt": checkpoint_keys,
    "ckpt_method": lambda r: _join(checkpoint_keys(r), _method(r)),
    "config": config_key_texts,
    "base": _base,
    "base_method": lambda r: _join(_base(r), _method(r)),
    "method": _method,
    "family_method": lambda r: _join(_text(r, "model_family", "?"), _method(r)),
    "upstream": lambda r: _text(r, "model_upstream_task"),
}
SCOPES = ("a", "s", "l", "p")
#: The source whose tasks probe frozen encoders (the ``p_`` scope), and the keys it applies to.
PROBE_SOURCE = "mteb"
PROBE_KEYS = ("ckpt", "base")
#: Order in which the lookup baseline (and a past task's profile) falls back from specific to coarse keys.
LOOKUP_ORDER: tuple[tuple[str, str], ...] = (
    ("s", "config"), ("s", "ckpt_method"), ("a", "ckpt_method"), ("s", "ckpt"), ("a", "ckpt"),
    ("s", "base_method"), ("a", "base_method"), ("a", "family_method"), ("a", "method"),
)
#: Keys a past task's profile of candidates is read at, most specific first.
PROFILE_KEYS = ("config", "ckpt_method", "ckpt")


def feature_names(keys: Sequence[str] = tuple(KEYS), scopes: Sequence[str] = SCOPES) -> list[str]:
    """The columns :meth:`Experience.features` writes, in order."""
    return [f"{scope}_{k}{suffix}" for k in keys for scope in scopes if scope != "p" or k in PROBE_KEYS
            for suffix in ("", "_n", "_sd")]


class _Sums:
    """Sums of per-task standings (z, z², tasks) by an integer key, for lookups of many rows at once."""

    def __init__(self, combined: np.ndarray, zt: np.ndarray) -> None:
        self.keys, inverse = np.unique(combined, return_inverse=True)
        n = len(self.keys)
        self.sums = np.column_stack([np.bincount(inverse, weights=zt, minlength=n),
                                     np.bincount(inverse, weights=zt**2, minlength=n),
                                     np.bincount(inverse, minlength=n).astype(float)])

    def get(self, combined: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """(sum z, sum z², tasks) of each key (zeros where absent or not ``valid``)."""
        out = np.zeros((len(combined), 3))
        if not len(self.keys):
            return out
        pos = np.clip(np.searchsorted(self.keys, combined), 0, len(self.keys) - 1)
        hit = valid & (self.keys[pos] == combined)
        out[hit] = self.sums[pos[hit]]
        return out


class Experience:
    """Standings of every key on the training tasks (see the module docstring).

    Args:
        keys: which keys of :data:`KEYS`.
        smoothing: pseudo-tasks at standing 0 mixed into every standing.
        scopes: which scopes of :data:`SCOPES` the features hold (the lookup needs ``a`` and ``s``).
    """

    def __init__(self, keys: Sequence[str] = tuple(KEYS), smoothing: float = 1.0,
                 scopes: Sequence[str] = SCOPES) -> None:
        self.keys = tuple(keys)
        self.smoothing = smoothing
        self.scopes = tuple(scopes)

    # -- fitting -------------------------------------------------------------------------------------------------

    def fit(self, frame: pd.DataFrame, points: pd.Series | np.ndarray | None = None, *,
            keys: dict[str, np.ndarray] | None = None) -> Experience:
        """Learn the standings from a learning frame (``task_key``, ``dataset_name``, ``provenance_source``, and
        ``points`` or the given ``points``; runs without a score are left out).

        Args:
            keys: :meth:`keys_of` the frame's rows, when already computed (an evaluation computes them once).
        """
        pts = pd.Series(np.asarray(points if points is not None else frame["points"], dtype=float), index=frame.index)
        z = within_task_z(pts, frame["task_key"]).where(pts.notna()).to_numpy()
        keep = ~np.isnan(z)
        keys = keys if keys is not None else self.keys_of(frame)
        task_codes, tasks = pd.factorize(_strings(frame["task_key"])[keep])
        task_first = np.unique(task_codes, return_index=True)[1]
        sources = source_family(_strings(frame["provenance_source"]))
        self.sources_ = pd.Index(pd.unique(sources))
        self.datasets_ = pd.Index(pd.unique(_strings(frame["dataset_name"])))
        task_source = self.sources_.get_indexer(sources[keep])[task_first]
        task_dataset = self.datasets_.get_indexer(_strings(frame["dataset_name"])[keep])[task_first]
        languages = _languages(frame)
        self.languages_ = pd.Index(pd.unique(languages[~pd.isna(languages)]))
        task_language = self.languages_.get_indexer(languages[keep])[task_first]
        self.tasks_ = np.asarray(tasks, dtype=object)
        self.task_dataset_ = task_dataset
        self.vocab_: dict[str, pd.Index] = {}
        self.per_task_: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.sums_: dict[str, dict[str, _Sums]] = {}
        n_t, n_s, n_d, n_l = len(tasks), len(self.sources_), len(self.datasets_), max(len(self.languages_), 1)
        zk = z[keep]
        for name in self.keys:
            codes, vocab = pd.factorize(keys[name][keep])
            self.vocab_[name] = pd.Index(vocab)
            ok = codes >= 0
            uniq, inverse = np.unique(codes[ok].astype(np.int64) * n_t + task_codes[ok], return_inverse=True)
            zt = np.bincount(inverse, weights=zk[ok]) / np.bincount(inverse)
            key, task = uniq // n_t, uniq % n_t
            self.per_task_[name] = (key, task, zt)
            s, d, lang = task_source[task], task_dataset[task], task_language[task]
            has = lang >= 0
            lk = key[has] * n_l + lang[has]
            self.sums_[name] = {"a": _Sums(key, zt), "s": _Sums(key * n_s + s, zt), "l": _Sums(lk, zt[has]),
                                "a_own": _Sums(key * n_d + d, zt), "s_own": _Sums((key * n_s + s) * n_d + d, zt),
                                "l_own": _Sums(lk * n_d + d[has], zt[has])}
        self.n_tasks_ = n_t
        return self

    # -- features ------------------------------------------------------------------------------------------------

    def keys_of(self, rows: Rows, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Each key (``names`` of them: default all) of each row (object arrays; None where it does not apply)."""
        return {name: KEYS[name](rows) for name in (self.keys if names is None else names)}

    def features(self, rows: Rows, *, leave_own_dataset: bool = False,
                 keys: dict[str, np.ndarray] | None = None,
                 names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Per row and key, in each scope: the smoothed standing, the tasks behind it, their spread (column name ->
        values, in :func:`feature_names` order).

        Args:
            rows: runs-table rows (``provenance_source`` and, with ``leave_own_dataset``, ``dataset_name``).
            leave_own_dataset: leave every task of the row's dataset out (training rows).
            keys: :meth:`keys_of` the rows, when already computed.
            names: only these of the keys (default: all).
        """
        names = self.keys if names is None else tuple(n for n in self.keys if n in names)
        keys = keys if keys is not None else self.keys_of(rows, names)
        src = positions(self.sources_, source_family(_strings(rows["provenance_source"])))
        dst = positions(self.datasets_, _strings(rows["dataset_name"])) if leave_own_dataset else None
        lang = positions(self.languages_, _languages(rows))
        n_s, n_d, n_l = len(self.sources_), len(self.datasets_), max(len(self.languages_), 1)
        probe = int(positions(self.sources_, [PROBE_SOURCE])[0])
        out: dict[str, np.ndarray] = {}
        for name in names:
            code = positions(self.vocab_[name], keys[name])
            known = code >= 0
            sums = self.sums_[name]
            scoped = {"a": ("a", code, known), "s": ("s", code * n_s + src, known & (src >= 0)),
                      "l": ("l", code * n_l + lang, known & (lang >= 0)),
                      "p": ("s", code * n_s + probe, known & (probe >= 0))}
            for scope in self.scopes:
                if scope == "p" and name not in PROBE_KEYS:
                    continue
                table, combined, valid = scoped[scope]
                total = sums[table].get(combined, valid)
                if dst is not None:
                    total = total - sums[table + "_own"].get(combined * n_d + dst, valid & (dst >= 0))
                out.update(_standing(f"{scope}_{name}", total[:, 0], total[:, 1], total[:, 2], self.smoothing))
        return out

    def lookup(self, rows: Rows, *, leave_own_dataset: bool = False,
               features: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """The lookup baseline: the row's standing at the most specific key with experience (:data:`LOOKUP_ORDER`:
        same-source configuration, (checkpoint, method) in the same source then anywhere, checkpoint, base model
        and method, model family and method, method), 0 without any."""
        feats = features if features is not None else self.features(rows, leave_own_dataset=leave_own_dataset)
        out = np.full(row_count(rows), np.nan)
        for scope, name in LOOKUP_ORDER:
            col = f"{scope}_{name}"
            if col in feats:
                out = np.where(np.isnan(out), feats[col], out)
        return np.nan_to_num(out, nan=0.0)

    def task_profiles(self, rows: pd.DataFrame, *, exclude_datasets: Sequence[str] = (), min_coverage: float = 0.1,
                      max_tasks: int = 256) -> tuple[np.ndarray, list[str]]:
        """Per past task: its standing of each row, read at the most specific key it has (:data:`PROFILE_KEYS`),
        standardized over the rows it covers (NaN where it has none of the row's keys).

        Args:
            rows: the candidates (runs-table rows).
            exclude_datasets: tasks of these datasets are not used (the target's own).
            min_coverage: tasks covering a smaller share of the rows are left out.
            max_tasks: at most this many tasks, the best-covering first.

        Returns:
            A (tasks, rows) matrix and the task keys of its rows.
        """
        excluded = self.datasets_.get_indexer([str(d) for d in exclude_datasets])
        banned = np.isin(self.task_dataset_, excluded[excluded >= 0])
        profile = np.full((self.n_tasks_, len(rows)), np.nan)
        for name in reversed([n for n in PROFILE_KEYS if n in self.per_task_]):  # coarse first, specific overwrites
            code = self.vocab_[name].get_indexer(KEYS[name](rows))
            key, task, zt = self.per_task_[name]
            wanted = np.isin(key, code[code >= 0]) & ~banned[task]
            if not wanted.any():
                continue
            order = np.argsort(code, kind="stable")
            sorted_codes = code[order]
            lo = np.searchsorted(sorted_codes, key[wanted], side="left")
            hi = np.searchsorted(sorted_codes, key[wanted], side="right")
            for t, a, b, v in zip(task[wanted], lo, hi, zt[wanted], strict=True):
                profile[t, order[a:b]] = v  # every row with that key
        covered = ~np.isnan(profile)
        share = covered.mean(axis=1)
        usable = np.flatnonzero((share >= min_coverage) & (covered.sum(axis=1) >= 2))
        usable = usable[np.argsort(-share[usable], kind="stable")][:max_tasks]
        out = profile[usable]
        if len(usable):
            mean = np.nanmean(out, axis=1, keepdims=True)
            sd = np.nanstd(out, axis=1, keepdims=True)
            out = (out - mean) / np.where(sd > 0, sd, 1.0)
        return out, [str(self.tasks_[t]) for t in usable]


def _strings(values: pd.Series) -> np.ndarray:
    """A column as text, ``"None"`` where missing (as ``astype(str)`` spells it)."""
    return fill_missing(text_values(values), "None")


def _languages(rows: Rows) -> np.ndarray:
    """Each row's dataset language (None where unknown)."""
    if "dataset_meta_language" not in rows:
        return np.full(row_count(rows), None, dtype=object)
    return text_values(rows["dataset_meta_language"])


def _standing(prefix: str, s1: np.ndarray, s2: np.ndarray, n: np.ndarray,
              smoothing: float) -> dict[str, np.ndarray]:
    n = np.maximum(n, 0.0)
    has = n > 0.5
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(has, s1 / (n + smoothing), np.nan)
        raw = np.where(has, s1 / np.maximum(n, 1.0), np.nan)
        var = np.where(n > 1.5, (s2 - n * raw**2) / np.maximum(n - 1.0, 1.0), np.nan)
    return {prefix: mean, prefix + "_n": n, prefix + "_sd": np.sqrt(np.clip(var, 0.0, None))}
