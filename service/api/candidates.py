"""From requests to the runs-table rows the meta-model scores, and from its answers to response bodies.

* :func:`resolve_task`: the task part of every row (``metaml._candidates.task_row``), with the dataset's
  meta-features from the knowledge base, a sample, or the request.
* :func:`candidate_columns`: one row per candidate, as columns. The model and method parts go through
  ``metaml._candidates.candidate_rows`` once per distinct (task, model, method) — which validates them with the
  record's own parts and fills model features from the registry; remembered in :data:`PAIR_ROWS` — and every
  candidate's hyperparameters (validated with the record's ``Hyperparameters`` part when the request is read) fill
  the ``hparams_*`` columns. The result equals ``candidate_rows`` on the whole batch (a test checks it).
* :func:`enumerate_space`: the candidates of a search space (a grid of the listed values, seeded draws of ranges).
"""

from __future__ import annotations

import itertools
import json
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from collector.features import ModelRegistry
from collector.schema import DatasetMeta, Hyperparameters, Method, Model, canonical_dataset
from metaml._candidates import candidate_rows, task_row
from metaml._data import LEARN_COLUMNS
from service.api.errors import UnknownDataset
from service.api.experience import ExperienceIndex, SampleFeatures, Snapshot
from service.api.schemas import Candidate, DatasetSpec, Range, SearchSpace
from service.errors import BatchTooLarge

#: The hyperparameters the runs table (and so the model) holds: ``hparams_<name>`` columns.
HPARAM_COLUMNS: tuple[str, ...] = tuple(c[len("hparams_"):] for c in LEARN_COLUMNS if c.startswith("hparams_"))
#: Name of the dataset of a task described only by meta-features or a sample.
UNNAMED_DATASET = "new-task"
_INT_HPARAMS = {name for name, prop in Hyperparameters.model_json_schema()["properties"].items()
                if "integer" in {t.get("type") for t in prop.get("anyOf", [prop])}}


@cache
def model_registry() -> ModelRegistry:
    """The shipped model registry (loaded once per process)."""
    return ModelRegistry.load_default()


def _invalid(loc: tuple[Any, ...], error: ValidationError | ValueError) -> RequestValidationError:
    """A 422 whose details point into the request body."""
    if isinstance(error, ValidationError):
        return RequestValidationError([{"loc": ("body", *loc, *e["loc"]), "msg": e["msg"], "type": e["type"]}
                                       for e in error.errors()])
    return RequestValidationError([{"loc": ("body", *loc), "msg": str(error), "type": "value_error"}])


# -- the task ---------------------------------------------------------------------------------------------------------


@dataclass
class TaskContext:
    """The task part of the rows, and what the answer says about it."""

    row: dict[str, Any]
    name: str | None
    meta: DatasetMeta
    meta_from: list[str]
    snapshot: Snapshot | None

    def info(self) -> dict[str, Any]:
        return {"dataset": self.name, "meta_from": self.meta_from, "meta": self.meta.model_dump(mode="json")}


def resolve_task(task: Any, dataset: DatasetSpec, source: str, *, experience: ExperienceIndex,
                 samples: SampleFeatures, max_sample_rows: int) -> TaskContext:
    """The task's row and meta-features: the knowledge base's for a named dataset, overridden by a sample's, overridden
    by the request's ``meta``.

    Raises:
        UnknownDataset: only a name is given and the knowledge base holds no meta-features for it.
        BatchTooLarge: the sample holds more than ``max_sample_rows`` rows.
        RequestValidationError: the sample is inconsistent (labels of another length...).
        CollectorError: only a name is given and the knowledge base cannot be read.
    """
    name = canonical_dataset(dataset.name) if dataset.name else None
    snapshot = experience.get()
    if snapshot is None and name is not None and dataset.meta is None and dataset.sample is None:
        snapshot = experience.require()
    layers: list[tuple[str, dict[str, Any]]] = []
    if name is not None and snapshot is not None and (known := snapshot.dataset_meta(name)) is not None:
        layers.append(("knowledge_base", known.model_dump(exclude_none=True)))
    if dataset.sample is not None:
        s = dataset.sample
        if len(s.texts) > max_sample_rows:
            raise BatchTooLarge(f"the sample holds {len(s.texts):,} rows; at most {max_sample_rows:,} are read: send a "
                                "random subset", details={"max_sample_rows": max_sample_rows})
        try:
            meta = samples.get(s.texts, s.labels, s.text_pairs, landmark_sample=s.landmark_sample, seed=s.seed,
                               domain=s.domain)
        except ValueError as e:
            raise _invalid(("dataset", "sample"), e) from None
        layers.append(("sample", meta.model_dump(exclude_none=True)))
    if dataset.meta is not None:
        layers.append(("request", dataset.meta.model_dump(exclude_none=True)))
    if not layers:
        raise UnknownDataset(
            f"the knowledge base holds no meta-features for dataset {name!r}: send its `meta` or a `sample` of its "
            "texts and labels, or describe it first (POST /v1/datasets/describe with store=true, or `metaml kb "
            "enrich`)", details={"dataset": name})
    merged: dict[str, Any] = {}
    for _, values in layers:
        merged.update(values)
    meta = DatasetMeta.model_validate(merged)
    spec = {"name": name or UNNAMED_DATASET, "n_train_used": dataset.n_train_used,
            "examples_per_class": dataset.examples_per_class}
    row = task_row(task.model_dump(exclude_none=True), {k: v for k, v in spec.items() if v is not None},
                   source=source, dataset_meta=meta)
    return TaskContext(row=row, name=name, meta=meta, meta_from=[k for k, _ in layers], snapshot=snapshot)


# -- candidates -------------------------------------------------------------------------------------------------------

Columns = dict[str, np.ndarray]


class PairRows:
    """``candidate_rows`` of one (task, model, method), remembered for the last ``size`` of them: the model and method
    parts are validated, normalized and completed from the registry once, not once per candidate."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def rows(self, task: dict[str, Any], pairs: Sequence[tuple[Model, Method]], *, loc: str) -> list[dict[str, Any]]:
        """One runs-table row (without hyperparameters) per pair.

        Raises:
            RequestValidationError: a pair fails validation (at ``loc`` in the request).
        """
        prefix = json.dumps(task, sort_keys=True, default=str)
        keys = [prefix + m.model_dump_json(exclude_none=True) + me.model_dump_json(exclude_none=True)
                for m, me in pairs]
        with self._lock:
            found = {k: self._cache[k] for k in keys if k in self._cache}
            for k in found:
                self._cache.move_to_end(k)
        missing = [i for i, k in enumerate(keys) if k not in found]
        if missing:
            configs = [{"model": pairs[i][0].model_dump(exclude_none=True),
                        "method": pairs[i][1].model_dump(exclude_none=True)} for i in missing]
            try:
                frame = candidate_rows(task, configs, registry=model_registry())
            except ValidationError as e:  # the parts were validated already: only registry-filled values can fail
                raise _invalid((loc,), e) from None
            records = frame.to_dict("records")
            with self._lock:
                for i, record in zip(missing, records, strict=True):
                    found[keys[i]] = self._cache[keys[i]] = record
                while len(self._cache) > self.size:
                    self._cache.popitem(last=False)
        return [found[k] for k in keys]


PAIR_ROWS = PairRows()


def assemble(task: dict[str, Any], pairs: Sequence[tuple[Model, Method]], pair_index: np.ndarray,
             hparams: dict[str, Sequence[Any]], *, loc: str = "candidates") -> Columns:
    """Runs-table columns of candidates given as (model, method) pairs, the pair of each candidate, and hyperparameter
    columns (object arrays, :data:`~metaml._data.LEARN_COLUMNS` in order).

    Args:
        task: :func:`metaml._candidates.task_row`'s output.
        pairs: distinct (model, method) parts, validated.
        pair_index: per candidate, its position in ``pairs``.
        hparams: hyperparameter name -> one value per candidate (None for unset), validated.
        loc: where the candidates are in the request (for error locations).
    """
    rows = PAIR_ROWS.rows(task, pairs, loc=loc)
    n = len(pair_index)
    out: Columns = {}
    for col in LEARN_COLUMNS:
        if col.startswith("hparams_"):
            values = hparams.get(col[len("hparams_"):])
            column = np.empty(n, dtype=object)
            if values is not None:
                column[:] = list(values)
        else:
            distinct = np.empty(len(rows), dtype=object)
            distinct[:] = [r[col] for r in rows]
            column = distinct[pair_index]
        out[col] = column
    return out


def candidate_columns(task: dict[str, Any], candidates: Sequence[Candidate], *, loc: str = "candidates") -> Columns:
    """Runs-table columns of candidates (equal to ``candidate_rows(task, candidates)``, column by column)."""
    keys: dict[str, int] = {}
    pairs: list[tuple[Model, Method]] = []
    index = np.empty(len(candidates), dtype=np.int64)
    for i, c in enumerate(candidates):
        key = c.model.model_dump_json(exclude_none=True) + c.method.model_dump_json(exclude_none=True)
        j = keys.get(key)
        if j is None:
            j = keys[key] = len(pairs)
            pairs.append((c.model, c.method))
        index[i] = j
    hp = {name: [getattr(c.hparams, name) for c in candidates] for name in HPARAM_COLUMNS}
    return assemble(task, pairs, index, hp, loc=loc)


def as_frame(columns: Columns) -> pd.DataFrame:
    """The columns as a runs-table frame, dtypes inferred as ``candidate_rows`` infers them."""
    return pd.DataFrame({c: v.tolist() for c, v in columns.items()})


# -- search spaces ----------------------------------------------------------------------------------------------------


def _labels(items: Sequence[str]) -> list[str]:
    """``items`` made unique: repeated ones get `` [i]``."""
    seen: dict[str, int] = {}
    for x in items:
        seen[x] = seen.get(x, 0) + 1
    return [x if seen[x] == 1 else f"{x} [{i}]" for i, x in enumerate(items)]


def method_config(method: Method) -> dict[str, Any]:
    """The method as a client wrote it: its name and the parameters it sets (no derived kind, no empty config)."""
    out = method.model_dump(mode="json", exclude_none=True, exclude={"kind"})
    if not out.get("config"):
        out.pop("config", None)
    return out


def method_label(method: Method) -> str:
    """``lora(lora_r=8, lora_alpha=16)``: the method's name and the parameters it sets."""
    params = method.model_dump(mode="json", exclude_none=True, exclude={"name", "kind", "config"})
    if method.config:
        params["config"] = json.dumps(method.config, sort_keys=True)
    return method.name + ("(" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")" if params else "")


@dataclass
class SpaceCandidates:
    """The candidates of a search space, as rows, and how to read them back."""

    frame: pd.DataFrame
    params: dict[str, str]
    truncated: bool
    models: dict[str, Model]
    methods: dict[str, Method]
    fixed: dict[str, Any]


def _checked_values(space: SearchSpace) -> dict[str, list[Any]]:
    """Each listed value of a hyperparameter, validated and normalized by the record's ``Hyperparameters`` part (e.g.
    ``Cosine`` -> ``cosine``); each range end checked valid for it too (so every draw is)."""
    out: dict[str, list[Any]] = {}
    for name, choice in space.hparams.items():
        values = [choice.low, choice.high] if isinstance(choice, Range) else choice
        checked = []
        for i, v in enumerate(values):
            try:
                hp = Hyperparameters.model_validate(
                    {name: round(v) if isinstance(choice, Range) and name in _INT_HPARAMS else v})
            except ValidationError as e:
                where = ("space", "hparams", name) + (("low" if i == 0 else "high",) if isinstance(choice, Range)
                                                      else (i,))
                raise RequestValidationError([{"loc": ("body", *where), "msg": err["msg"], "type": err["type"]}
                                              for err in e.errors()]) from None
            checked.append(getattr(hp, name))
        if not isinstance(choice, Range):
            out[name] = checked
    return out


def _draw(choice: Range, name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if choice.log:
        values = np.exp(rng.uniform(math.log(choice.low), math.log(choice.high), n))
    else:
        values = rng.uniform(choice.low, choice.high, n)
    if name in _INT_HPARAMS:
        low, high = math.ceil(choice.low), math.floor(choice.high)
        if high < low:  # no integer inside the range: its nearest one
            low = high = round(choice.low)
        return np.clip(np.rint(values), low, high).astype(int)
    return values


def _decode(flat: np.ndarray, sizes: list[int]) -> np.ndarray:
    """Mixed-radix digits of grid positions, one column per dimension."""
    out = np.empty((len(flat), len(sizes)), dtype=np.int64)
    rest = flat.copy()
    for d in range(len(sizes) - 1, -1, -1):
        out[:, d] = rest % sizes[d]
        rest //= sizes[d]
    return out


def enumerate_space(task: dict[str, Any], space: SearchSpace, *, max_candidates: int, samples_per_point: int,
                    seed: int) -> SpaceCandidates:
    """The candidates of ``space``: every grid point of models x methods x listed values (a seeded sample of grid
    points when there are more than ``max_candidates``), each with ``samples_per_point`` seeded draws of the ranges
    (fewer when the cap needs it).

    Raises:
        RequestValidationError: a listed value or range end is invalid for its hyperparameter.
    """
    lists = _checked_values(space)
    rng = np.random.default_rng(seed)
    model_labels = _labels([m.id for m in space.models])
    method_labels = _labels([method_label(m) for m in space.methods])
    ranges = {k: v for k, v in space.hparams.items() if isinstance(v, Range)}
    sizes = [len(space.models), len(space.methods), *(len(v) for v in lists.values())]
    grid = math.prod(sizes)
    truncated = grid > max_candidates
    if truncated:
        if grid <= 50_000_000:
            flat = np.sort(rng.choice(grid, size=max_candidates, replace=False))
        else:  # too large to sample without replacement by position: draw, then drop repeats
            flat = np.unique(rng.integers(0, grid, size=max_candidates, dtype=np.int64))
    else:
        flat = np.arange(grid, dtype=np.int64)
    per_point = 1 if not ranges else max(1, min(samples_per_point, max_candidates // max(len(flat), 1)))
    digits = np.repeat(_decode(flat, sizes), per_point, axis=0)
    n = len(digits)
    pair_of = digits[:, 0] * len(space.methods) + digits[:, 1]
    pairs = list(itertools.product(space.models, space.methods))
    fixed = space.fixed.model_dump(exclude_none=True, exclude={"extra"})
    columns: dict[str, Any] = {name: [value] * n for name, value in fixed.items() if name in HPARAM_COLUMNS}
    for d, (name, values) in enumerate(lists.items(), start=2):
        columns[name] = [values[i] for i in digits[:, d]]
    for name, choice in ranges.items():
        columns[name] = _draw(choice, name, n, rng).tolist()
    frame = as_frame(assemble(task, pairs, pair_of, columns, loc="space"))
    frame["search_model"] = [model_labels[i] for i in digits[:, 0]]
    frame["search_method"] = [method_labels[i] for i in digits[:, 1]]
    params = {"model": "search_model", "method": "search_method",
              **{name: f"hparams_{name}" for name in space.hparams}}
    return SpaceCandidates(frame=frame, params=params, truncated=truncated,
                           models=dict(zip(model_labels, space.models, strict=True)),
                           methods=dict(zip(method_labels, space.methods, strict=True)),
                           fixed={k: v for k, v in fixed.items() if k not in space.hparams})


# -- answers ----------------------------------------------------------------------------------------------------------


def finite(values: np.ndarray) -> list[float | None]:
    """Floats for JSON: NaN and infinities become None."""
    return [x if math.isfinite(x) else None for x in np.asarray(values, dtype=float).tolist()]


def plain(value: Any) -> Any:
    """A numpy scalar as the Python value; NaN as None."""
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and not math.isfinite(value) else value


def prediction_items(out: dict[str, np.ndarray], support: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The ``predictions`` of a predict answer."""
    points = out["points"].astype(float)
    absent = [None] * len(points)
    cols = [finite(points), finite(points / 100.0), finite(out["lo"]), finite(out["hi"]),
            *(finite(out[c]) if c in out else absent for c in ("rank_score", "runtime_s", "p_fail"))]
    return [{"index": i, "points": p, "score": s, "points_lo": lo, "points_hi": hi, "rank_score": r, "runtime_s": rt,
             "p_fail": pf, "support": sup}
            for i, (p, s, lo, hi, r, rt, pf, sup) in enumerate(zip(*cols, support, strict=True))]


def ranked_items(ranked: pd.DataFrame, space: SpaceCandidates) -> list[dict[str, Any]]:
    """The ``ranked`` configurations of a recommend answer, read back from their parameters."""
    out = []
    for rank, row in enumerate(ranked.to_dict("records"), start=1):
        hparams = dict(space.fixed)
        for name in space.params:
            if name not in ("model", "method") and (v := plain(row[f"param.{name}"])) is not None:
                hparams[name] = v
        config = {"model": space.models[row["param.model"]].model_dump(mode="json", exclude_none=True),
                  "method": method_config(space.methods[row["param.method"]]), "hparams": hparams}
        points = float(row["points"])
        out.append({"rank": rank, "config": config, "points": points, "score": points / 100.0,
                    "points_lo": plain(row["lo"]), "points_hi": plain(row["hi"]), "runtime_s": plain(row["runtime_s"]),
                    "p_fail": plain(row["p_fail"]), "utility": plain(row["utility"])})
    return out
