"""From requests to the rows the meta-model scores (through :mod:`metaml.serving`), and from its answers to bodies.

* :func:`resolve_task`: the task part of every row, with the dataset's meta-features from the knowledge base, a
  sample, or the request (a name nothing describes is a 422 ``unknown_dataset``, whether or not the knowledge base
  holds runs for it: send its ``meta`` or a ``sample``).
* :func:`rows_of` / :func:`request_rows`: the candidates' runs-table rows (objects, as a frame; objects or one array
  per field, as the columns the model reads, with each row's (model, method) pair), with invalid parts answered as
  422 at their place.
* :func:`prediction_items` / :func:`ranked_items`: the answers' items.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from fastapi.exceptions import RequestValidationError

from collector.schema import DatasetMeta, canonical_dataset
from metaml.errors import InvalidCandidates
from metaml.serving import (
    CandidateColumns,
    KnowledgeIndex,
    KnowledgeSnapshot,
    PairCodes,
    SampleFeatures,
    SpaceCandidates,
    as_frame,
    candidate_columns,
    columnar_candidates,
    object_candidates,
    task_row,
)
from service.api.errors import UnknownDataset
from service.api.schemas import Candidate, DatasetSpec
from service.errors import BatchTooLarge

#: Name of the dataset of a task described only by meta-features or a sample.
UNNAMED_DATASET = "new-task"
T = TypeVar("T")


def validated(work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``work(...)``, with :class:`~metaml.errors.InvalidCandidates` answered as a 422 pointing into the body."""
    try:
        return work(*args, **kwargs)
    except InvalidCandidates as e:
        raise RequestValidationError([{"loc": ("body", *err["loc"]), "msg": err["msg"], "type": err["type"]}
                                      for err in e.errors]) from None


# -- the task ---------------------------------------------------------------------------------------------------------


@dataclass
class TaskContext:
    """The task part of the rows, and what the answer says about it."""

    row: dict[str, Any]
    name: str | None
    meta: DatasetMeta
    meta_from: list[str]
    snapshot: KnowledgeSnapshot | None

    def info(self) -> dict[str, Any]:
        return {"dataset": self.name, "meta_from": self.meta_from, "meta": self.meta.model_dump(mode="json")}


def resolve_task(task: Any, dataset: DatasetSpec, source: str, *, experience: KnowledgeIndex,
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
            raise RequestValidationError([{"loc": ("body", "dataset", "sample"), "msg": str(e),
                                           "type": "value_error"}]) from None
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


def rows_of(task: dict[str, Any], candidates: Sequence[Candidate], *, loc: str = "candidates") -> pd.DataFrame:
    """The candidates' runs-table rows for the task's row (invalid parts answer 422 at ``loc``)."""
    return parts_rows(task, candidates, loc=loc)[0]


def request_rows(task: dict[str, Any], candidates: Sequence[Any] | None,
                 columns: Mapping[str, Sequence[Any]] | None) -> CandidateColumns:
    """The runs-table columns of a request's candidates, sent as objects (as decoded from JSON: each distinct part
    validated once, :func:`~metaml.serving.object_candidates`) or as one array per field (invalid parts answer 422
    at their place), and each row's (model, method) pair (:class:`~metaml.serving.CandidateColumns`: the model
    reads them without a frame)."""
    return validated(object_candidates, task, candidates) if candidates is not None \
        else validated(columnar_candidates, task, columns)


def parts_rows(task: dict[str, Any], candidates: Sequence[Candidate], *,
               loc: str = "candidates") -> tuple[pd.DataFrame, PairCodes]:
    """:func:`request_rows` of candidates already validated into their parts."""
    built = validated(candidate_columns, task, candidates, loc=loc)
    return as_frame(built), built.pairs


# -- answers ----------------------------------------------------------------------------------------------------------


def finite(values: np.ndarray) -> list[float | None]:
    """Floats for JSON: NaN and infinities become None."""
    return [x if math.isfinite(x) else None for x in np.asarray(values, dtype=float).tolist()]


def plain(value: Any) -> Any:
    """A numpy scalar as the Python value; NaN as None."""
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and not math.isfinite(value) else value


def prediction_items(out: dict[str, np.ndarray], support: Sequence[Any]) -> list[dict[str, Any]]:
    """The ``predictions`` of a predict answer (``support``: each candidate's, as a list or as JSON text,
    :meth:`~metaml.serving.KnowledgeSnapshot.support_json`)."""
    points = out["points"].astype(float)
    absent = [None] * len(points)
    cols = [finite(points), finite(points / 100.0), finite(out["lo"]), finite(out["hi"]),
            *(finite(out[c]) if c in out else absent for c in ("rank_score", "runtime_s", "p_fail"))]
    return [{"index": i, "points": p, "score": s, "points_lo": lo, "points_hi": hi, "rank_score": r, "runtime_s": rt,
             "p_fail": pf, "support": sup}
            for i, (p, s, lo, hi, r, rt, pf, sup) in enumerate(zip(*cols, support, strict=True))]


def ranked_items(ranked: pd.DataFrame, space: SpaceCandidates) -> list[dict[str, Any]]:
    """The ``ranked`` configurations of a recommend answer, read back from their rows."""
    out = []
    for rank, row in enumerate(ranked.to_dict("records"), start=1):
        points = float(row["points"])
        out.append({"rank": rank, "config": space.config(int(row["candidate"])), "points": points,
                    "score": points / 100.0, "points_lo": plain(row["lo"]), "points_hi": plain(row["hi"]),
                    "runtime_s": plain(row["runtime_s"]), "p_fail": plain(row["p_fail"]),
                    "utility": plain(row["utility"])})
    return out
