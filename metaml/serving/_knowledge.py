"""What predictions read from the knowledge base besides the model: dataset meta-features by name, and the past runs
that support a prediction.

**Snapshot.** Both are read into memory in one snapshot (three reads: the ok runs' narrow columns, every dataset's
first non-null meta-features on its runs, the ``datasets`` table), so a prediction never waits for the knowledge
base's lock. :class:`KnowledgeIndex` reloads it in the background when the knowledge base's version token changes
(``KnowledgeBase.version``: the file's modification, or the lakehouse's snapshot id; checked at most every
``refresh_s``); requests keep using the previous snapshot until the new one is complete.

**Dataset meta-features** of a named dataset: the ``datasets`` table's values (written by ``metaml kb enrich`` and
``POST /v1/datasets/describe`` with ``store``), completed by the values its runs carry. A dataset is *described* only
when at least one meta-feature is known: a name the knowledge base holds runs for but nothing describes is treated
like an unknown name.

**Support rule.** The past runs shown beside a prediction are runs with status ok and a score, by the *same model and
method* as the candidate, nearest by

``distance = d_data + 0.5 * d_hparams``

* ``d_data`` (dataset): 0 for the same dataset; else the mean, over the meta-features both datasets have, of
  ``|difference| / scale`` on: log10 training examples (scale 1), log10 classes (0.5), class entropy (0.25), log10
  mean tokens per text (0.5), TF-IDF landmark accuracy (0.1), text fields (1); 1 when they share none.
* ``d_hparams``: the mean, over the hyperparameters both have, of ``|Δ log10 learning rate|``,
  ``|Δ log2 batch size| / 2`` and ``|Δ epochs| / 3``; 0.5 when they share none.

Ties go to the higher score, then to the earlier run id. For a (model, method) pair with more than
:data:`MAX_PAIR_RUNS` runs, the :data:`MAX_PAIR_RUNS` runs on the nearest datasets are compared (at equal dataset
distance, the earlier run ids).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import orjson
import pandas as pd

from collector.errors import CollectorError
from collector.features import compute_meta_features
from collector.schema import DatasetMeta, source_matches
from collector.store import KnowledgeBase
from metaml._data import row_count, text_values
from metaml._lru import BoundedCache
from metaml._similarity import DATASET_SIMILARITY, distances, meta_vectors

log = logging.getLogger("metaml.serving")

#: Runs of one (model, method) pair compared per request at most (those on the nearest datasets).
MAX_PAIR_RUNS = 512
#: Seconds a snapshot load waits for the knowledge base's lock.
LOAD_LOCK_TIMEOUT_S = 10.0
_RUN_COLUMNS = ["run_id", "provenance_source", "task_primary_metric", "dataset_name", "model_id", "method_name",
                "outcome_score", "hparams_learning_rate", "hparams_batch_size", "hparams_epochs"]
_META_FIELDS = list(DatasetMeta.model_fields)


def _numbers(values: Any) -> np.ndarray:
    """Floats (NaN for missing or non-numbers) of a column."""
    values = values.to_numpy() if isinstance(values, pd.Series) else np.asarray(values)
    try:  # numbers and None: numpy converts them directly
        return values.astype(np.float64)
    except (TypeError, ValueError):
        return pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(dtype=float)


def _hp_terms(lr: np.ndarray, batch: np.ndarray, epochs: np.ndarray) -> np.ndarray:
    """The transformed hyperparameters compared by the support rule, one column each."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.column_stack([np.log10(lr), np.log2(batch) / 2.0, epochs / 3.0])


def _hp_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``d_hparams`` of each row of ``a`` (candidates) to each row of ``b`` (runs), both :func:`_hp_terms`: the mean
    |difference| over the hyperparameters both have (NaN: missing), 0.5 where they share none."""
    has_a, has_b = ~np.isnan(a), ~np.isnan(b)
    shared = has_a.astype(np.float64) @ has_b.T.astype(np.float64)  # hyperparameters both have, per pair
    total = np.zeros(shared.shape)
    diff = np.empty(shared.shape)
    for h in range(a.shape[1]):
        np.subtract.outer(a[:, h], b[:, h], out=diff)
        np.abs(diff, out=diff)
        if not (has_a[:, h].all() and has_b[:, h].all()):
            diff[np.isnan(diff)] = 0.0
        total += diff
    with np.errstate(invalid="ignore", divide="ignore"):
        total /= shared
    total[shared == 0] = 0.5
    return total


@dataclass
class KnowledgeSnapshot:
    """One consistent read of the knowledge base (see the module docstring)."""

    signature: str | None
    datasets: dict[str, DatasetMeta]
    ds_names: list[str]
    ds_index: dict[str, int]
    ds_matrix: np.ndarray
    runs: dict[str, np.ndarray]
    run_ds: np.ndarray
    run_hp: np.ndarray
    pairs: dict[tuple[str, str], np.ndarray]
    loaded_at: float
    _described: dict[int, dict[str, Any]] = field(default_factory=dict)
    _json_heads: dict[int, bytes] = field(default_factory=dict)

    @property
    def n_runs(self) -> int:
        return len(self.runs["run_id"])

    def dataset_meta(self, name: str) -> DatasetMeta | None:
        """The meta-features of dataset ``name`` (canonical), or None."""
        return self.datasets.get(name)

    def dataset_distances(self, meta: DatasetMeta, name: str | None) -> np.ndarray:
        """``d_data`` of the task to every dataset of the snapshot."""
        values = meta.model_dump() if isinstance(meta, DatasetMeta) else meta
        out = np.nan_to_num(distances(self.ds_matrix, meta_vectors(values)), nan=1.0)
        if name is not None and name in self.ds_index:
            out[self.ds_index[name]] = 0.0
        return out

    def support(self, meta: DatasetMeta, name: str | None, rows: Mapping[str, Any], k: int) -> SupportRuns:
        """The ``k`` nearest past runs of each candidate (runs-table columns or frame; same model and method),
        nearest first."""
        n_rows = row_count(rows)
        found = SupportRuns(np.full((n_rows, max(k, 0)), -1, dtype=np.int64), np.full((n_rows, max(k, 0)), np.nan))
        if k <= 0 or self.n_runs == 0 or n_rows == 0:
            return found
        d_data = self.dataset_distances(meta, name)[self.run_ds]
        cand_hp = _hp_terms(*(_numbers(rows[c]) for c in
                              ("hparams_learning_rate", "hparams_batch_size", "hparams_epochs")))
        groups: dict[tuple[Any, Any], list[int]] = {}
        for i, key in enumerate(zip(text_values(rows["model_id"]).tolist(), text_values(rows["method_name"]).tolist(),
                                    strict=True)):
            groups.setdefault(key, []).append(i)
        score = self.runs["outcome_score"]
        for key, members in groups.items():
            runs = self.pairs.get(key)
            if runs is None:
                continue
            positions = np.asarray(members)
            if len(runs) > MAX_PAIR_RUNS:  # those on the nearest datasets (ties: the earlier runs), in run order
                runs = np.sort(runs[np.argsort(d_data[runs], kind="stable")[:MAX_PAIR_RUNS]])
            dist = d_data[runs][None, :] + 0.5 * _hp_distances(cand_hp[positions], self.run_hp[runs])
            take = min(k, len(runs))
            # each candidate's runs no farther than its take-th nearest (more than `take` only where distances tie)
            near = dist <= np.partition(dist, take - 1, axis=1)[:, take - 1:take] if len(runs) > take else \
                np.ones(dist.shape, dtype=bool)
            row, col = np.nonzero(near)
            # by candidate, nearest first, then the higher score, then the earlier run (the last key is the primary)
            order = np.lexsort((col, -score[runs[col]], dist[row, col], row))
            row, col = row[order], col[order]
            rank = np.arange(len(row)) - np.searchsorted(row, row)  # place among the candidate's runs
            kept = rank < take
            row, col, rank = row[kept], col[kept], rank[kept]
            found.runs[positions[row], rank] = runs[col]
            found.distance[positions[row], rank] = np.round(dist[row, col], 6)
        return found

    def describe(self, i: int) -> dict[str, Any]:
        """The answer's description of run ``i`` (built once per run and snapshot)."""
        found = self._described.get(i)
        if found is not None:
            return found
        r = self.runs

        def num(col: str) -> float | None:
            v = r[col][i]
            return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)

        found = {"run_id": r["run_id"][i], "dataset": r["dataset_name"][i], "source": r["provenance_source"][i],
                 "metric": r["task_primary_metric"][i], "score": num("outcome_score"),
                 "learning_rate": num("hparams_learning_rate"), "batch_size": num("hparams_batch_size"),
                 "epochs": num("hparams_epochs")}
        self._described[i] = found
        return found

    def support_json(self, found: SupportRuns) -> list[orjson.Fragment]:
        """Each candidate's supporting runs as the answer writes them, a JSON array of objects (:meth:`describe` and
        ``distance``), for orjson to write as is: each run's description is encoded once per snapshot, which for
        thousands of candidates costs a fraction of building and encoding their objects."""
        valid = found.runs >= 0
        texts = orjson.dumps(found.distance[valid].tolist())[1:-1].split(b",") if valid.any() else []
        heads = self._json_heads
        pieces = iter([(heads.get(j) or self._json_head(j)) + text + b"}"
                       for j, text in zip(found.runs[valid].tolist(), texts, strict=True)])
        return [orjson.Fragment(b"[" + b",".join(itertools.islice(pieces, n)) + b"]")
                for n in valid.sum(axis=1).tolist()]

    def _json_head(self, i: int) -> bytes:
        """Run ``i``'s description as JSON up to its ``distance`` value."""
        head = self._json_heads[i] = orjson.dumps(self.describe(i))[:-1] + b',"distance":'
        return head


class SupportRuns(NamedTuple):
    """The past runs nearest each candidate (:meth:`KnowledgeSnapshot.support`): per candidate, up to ``k`` runs of
    the snapshot (positions, -1 past the last one found) and their distances (NaN there), nearest first."""

    runs: np.ndarray
    distance: np.ndarray


def load_snapshot(location: str | Path, *, lock_timeout: float = LOAD_LOCK_TIMEOUT_S,
                  exclude_sources: Sequence[str] = ()) -> KnowledgeSnapshot:
    """Read a snapshot of the knowledge base at ``location``.

    Args:
        location: the knowledge base (a DuckDB file or a lakehouse location).
        lock_timeout: seconds to wait for its lock.
        exclude_sources: leave out the runs of these sources (``upload*`` is every uploaded source; see
            :func:`collector.schema.source_matches`), and the dataset meta-features they carry.

    Raises:
        CollectorError: the knowledge base is missing, busy past ``lock_timeout`` or unreadable.
    """
    kb = KnowledgeBase(location, lock_timeout=lock_timeout)
    signature = kb.version()
    frame = kb.scan(_RUN_COLUMNS, filters={"outcome_status": "ok"}, ordered=True).to_pandas()
    keep = frame["outcome_score"].notna()
    if exclude_sources:
        keep &= ~frame["provenance_source"].map(lambda src: source_matches(str(src), exclude_sources)).astype(bool)
    frame = frame[keep].reset_index(drop=True)
    meta_cols = ", ".join(f"any_value(dataset_meta_{f}) AS {f}" for f in _META_FIELDS)
    on_runs = kb.sql(f"SELECT dataset_name AS name, provenance_source AS source, {meta_cols} FROM runs GROUP BY 1, 2",
                     max_rows=10_000_000, timeout_s=120.0).table.to_pylist()
    table = kb.table("datasets").to_pylist()
    merged: dict[str, dict[str, Any]] = {}
    for r in on_runs:
        if exclude_sources and source_matches(str(r["source"]), exclude_sources):
            continue
        known = merged.setdefault(r["name"], {})
        for f in _META_FIELDS:
            if known.get(f) is None:
                known[f] = r[f]
    for r in table:
        given = {f: r.get(f) for f in _META_FIELDS if r.get(f) is not None}
        merged[r["name"]] = {**merged.get(r["name"], {}), **given}
    datasets: dict[str, DatasetMeta] = {}
    for name, values in merged.items():
        given = {k: v for k, v in values.items() if v is not None}
        if not given:  # runs, but nothing describes the dataset: it is not described
            continue
        try:
            datasets[name] = DatasetMeta.model_validate(given)
        except ValueError as e:
            log.warning("meta-features of dataset %s left out of the snapshot: %s", name, e)
    names = sorted(set(datasets) | set(frame["dataset_name"].unique()))
    index = {n: i for i, n in enumerate(names)}
    empty = DatasetMeta()
    matrix = np.array([meta_vectors(datasets.get(n, empty).model_dump()) for n in names]).reshape(
        len(names), len(DATASET_SIMILARITY))
    runs = {c: frame[c].to_numpy(dtype=object) for c in _RUN_COLUMNS}
    for c in ("outcome_score", "hparams_learning_rate", "hparams_batch_size", "hparams_epochs"):
        runs[c] = pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=float)
    run_ds = np.array([index[n] for n in frame["dataset_name"]], dtype=np.int64)
    run_hp = _hp_terms(runs["hparams_learning_rate"], runs["hparams_batch_size"], runs["hparams_epochs"])
    pairs = {key: np.asarray(idx, dtype=np.int64) for key, idx in
             frame.groupby(["model_id", "method_name"], sort=False).indices.items()}
    return KnowledgeSnapshot(signature=signature, datasets=datasets, ds_names=names, ds_index=index,
                             ds_matrix=matrix, runs=runs, run_ds=run_ds, run_hp=run_hp, pairs=pairs,
                             loaded_at=time.time())


class KnowledgeIndex:
    """The process's snapshot of the knowledge base, reloaded in the background when the knowledge base changes.

    Args:
        location: the knowledge base.
        refresh_s: look for changes at most this often.
        exclude_sources: sources whose runs the snapshot leaves out (see :func:`load_snapshot`).
    """

    def __init__(self, location: str | Path, *, refresh_s: float = 10.0, exclude_sources: Sequence[str] = ()) -> None:
        self.location = str(location)
        self._kb = KnowledgeBase(location, lock_timeout=LOAD_LOCK_TIMEOUT_S)
        self.refresh_s = refresh_s
        self.exclude_sources = tuple(exclude_sources)
        self._snapshot: KnowledgeSnapshot | None = None
        self._checked = time.monotonic()
        self._loading = threading.Lock()

    def load(self) -> KnowledgeSnapshot:
        """Read a new snapshot now and serve it.

        Raises:
            CollectorError: the knowledge base cannot be read.
        """
        with self._loading:
            snapshot = load_snapshot(self.location, exclude_sources=self.exclude_sources)
            self._snapshot = snapshot
            self._checked = time.monotonic()
            return snapshot

    def _reload_in_background(self) -> None:
        def run() -> None:
            try:
                with self._loading:
                    self._snapshot = load_snapshot(self.location, exclude_sources=self.exclude_sources)
            except CollectorError as e:
                log.warning("knowledge-base snapshot not refreshed: %s", e)

        threading.Thread(target=run, name="metaml-knowledge-reload", daemon=True).start()

    def _version(self) -> str | None:
        try:
            return self._kb.version()
        except CollectorError as e:  # unreachable for now: keep serving the snapshot held
            log.warning("knowledge-base version not read: %s", e)
            return self._snapshot.signature if self._snapshot is not None else None

    def get(self) -> KnowledgeSnapshot | None:
        """The current snapshot (None until one could be read); starts a reload when the knowledge base changed."""
        now = time.monotonic()
        if now - self._checked >= self.refresh_s:
            self._checked = now
            current = self._snapshot
            if (current is None or current.signature != self._version()) and not self._loading.locked():
                self._reload_in_background()
        return self._snapshot

    def require(self) -> KnowledgeSnapshot:
        """The current snapshot, read now if there is none yet.

        Raises:
            CollectorError: there is none and the knowledge base cannot be read.
        """
        return self.get() or self.load()


class SampleFeatures:
    """Meta-features of dataset samples sent with requests, remembered for the last ``size`` distinct samples (an
    AutoML loop sends the same sample with every request of one task)."""

    def __init__(self, size: int = 64) -> None:
        self._cache: BoundedCache[str, DatasetMeta] = BoundedCache(size)

    def get(self, texts: Sequence[str], labels: Sequence[Any] | None, text_pairs: Sequence[str] | None, *,
            landmark_sample: int, seed: int, domain: str | None) -> DatasetMeta:
        """``compute_meta_features`` of the sample (cached).

        Raises:
            ValueError: as :func:`collector.features.compute_meta_features`.
        """
        blob = json.dumps([texts, labels, text_pairs, landmark_sample, seed, domain], sort_keys=True,
                          ensure_ascii=False, default=str)
        key = hashlib.sha256(blob.encode()).hexdigest()
        meta = self._cache.get(key)
        if meta is None:
            meta = compute_meta_features(texts, labels, text_pairs=text_pairs, landmark_sample=landmark_sample,
                                         seed=seed, domain=domain)
            self._cache.put(key, meta)
        return meta
