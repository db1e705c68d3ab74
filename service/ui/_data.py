"""What the read-only pages show, read through the knowledge base's public reads (``stats``, ``scan``, ``get``: the
functions the ``/v1`` read endpoints use) and shaped for templates.

Nothing here writes; nothing here asks the meta-learner (the pages ask ``/v1/recommend`` from the browser).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from collector.schema import DatasetMeta, RunRecord, from_row
from collector.store import KnowledgeBase

#: Columns the dataset list reads from every run.
_INDEX_COLUMNS = ["dataset_name", "model_id", "method_name", "provenance_source", "task_primary_metric",
                  "task_higher_is_better", "outcome_score", "dataset_meta_n_classes"]

#: Method parameters that tell two configurations of one method apart (runs-table column -> Method field).
_METHOD_PARAMS = {"method_lora_r": "lora_r", "method_lora_alpha": "lora_alpha", "method_n_frozen_layers":
                  "n_frozen_layers", "method_adapter_reduction_factor": "adapter_reduction_factor",
                  "method_n_virtual_tokens": "n_virtual_tokens"}

#: Columns of one dataset's runs the dataset page reads.
_DATASET_COLUMNS = ["run_id", "model_id", "model_family", "model_n_params", "method_name", *_METHOD_PARAMS,
                    "hparams_learning_rate", "hparams_batch_size", "hparams_epochs", "hparams_seed",
                    "dataset_n_train_used", "dataset_examples_per_class", "task_type", "task_primary_metric",
                    "task_higher_is_better", "outcome_status", "outcome_score", "outcome_runtime_s",
                    "provenance_source", *(f"dataset_meta_{f}" for f in DatasetMeta.model_fields)]

#: Rows of a leaderboard shown at most.
LEADERBOARD_ROWS = 50
#: Models and methods of the default search space the dataset page asks recommendations for.
SPACE_MODELS, SPACE_METHODS = 5, 3
#: Configurations the dataset page asks for.
RECOMMEND_BUDGET = 5
#: The learning-rate range of a default search space when the dataset's runs show fewer than two rates.
DEFAULT_LR = (1e-5, 5e-4)


def _none(value: Any) -> Any:
    """``value`` as a plain Python value: NaN as None, numpy scalars unwrapped, whole floats as ints."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    value = value.item() if hasattr(value, "item") else value
    return int(value) if isinstance(value, float) and value.is_integer() and abs(value) < 2**53 else value


def overview(kb: KnowledgeBase) -> dict[str, Any]:
    """The counts ``GET /v1/stats`` answers (runs by source, task type, method, model family and status; feature
    coverage), without the file path."""
    stats = kb.stats()
    stats.pop("path", None)
    return stats


@dataclass
class DatasetSummary:
    """One line of the dataset list."""

    name: str
    runs: int
    models: int
    methods: int
    sources: list[str]
    metric: str
    best: float | None
    described: bool


def dataset_index(kb: KnowledgeBase, query: str = "") -> list[DatasetSummary]:
    """Every dataset with runs whose name contains ``query`` (case-insensitive), most runs first."""
    frame = kb.scan(_INDEX_COLUMNS).to_pandas()
    if query:
        frame = frame[frame["dataset_name"].str.contains(query, case=False, regex=False)]
    if frame.empty:
        return []
    groups = frame.groupby("dataset_name")
    table = groups.agg(runs=("model_id", "size"), models=("model_id", "nunique"),
                       methods=("method_name", "nunique"), described=("dataset_meta_n_classes", "count"))
    sources = groups["provenance_source"].unique()
    # each dataset's main metric (most runs), and its best score in that metric
    metric = (frame.groupby(["dataset_name", "task_primary_metric"]).size().reset_index(name="n")
              .sort_values(["n", "task_primary_metric"], ascending=[False, True])
              .drop_duplicates("dataset_name").set_index("dataset_name")["task_primary_metric"])
    scored = frame[frame["task_primary_metric"] == frame["dataset_name"].map(metric)].dropna(subset=["outcome_score"])
    lower = scored["task_higher_is_better"].eq(False).groupby(scored["dataset_name"]).all()
    best = scored.groupby("dataset_name")["outcome_score"].agg(["max", "min"])
    out = []
    for name, row in table.iterrows():
        value = None
        if name in best.index:
            value = best.at[name, "min"] if bool(lower.get(name, False)) else best.at[name, "max"]
        out.append(DatasetSummary(
            name=str(name), runs=int(row["runs"]), models=int(row["models"]), methods=int(row["methods"]),
            sources=sorted(str(s) for s in sources[name] if _none(s) is not None), metric=str(metric[name]),
            best=_none(value), described=bool(row["described"] > 0)))
    out.sort(key=lambda d: (-d.runs, d.name))
    return out


@dataclass
class DatasetView:
    """One dataset: its meta-features, a filtered leaderboard, the points of its score-cost plot and the request
    its recommendations are asked with."""

    name: str
    n_runs: int
    n_failed: int
    metric: str
    higher_is_better: bool
    meta: dict[str, Any]
    options: dict[str, list[str]]
    chosen: dict[str, str]
    n_matching: int
    leaderboard: list[dict[str, Any]]
    plot: pd.DataFrame
    recommend_request: dict[str, Any] | None = field(default=None)


def _method_label(row: pd.Series) -> str:
    params = [f"{param}={_none(row[col])}" for col, param in _METHOD_PARAMS.items() if _none(row[col]) is not None]
    return f"{row['method_name']}({', '.join(params)})" if params else str(row["method_name"])


def dataset_view(kb: KnowledgeBase, name: str, *, family: str = "", method: str = "", source: str = "",
                 limit: int = LEADERBOARD_ROWS) -> DatasetView | None:
    """The dataset page of ``name`` (a canonical dataset name), or None when no run has it.

    Args:
        family, method, source: keep only the leaderboard's runs of this model family / method / source ('' = all).
        limit: rows of the leaderboard.
    """
    runs = kb.scan(_DATASET_COLUMNS, filters={"dataset_name": name}).to_pandas()
    if runs.empty:
        return None
    metric = str(runs["task_primary_metric"].mode().iloc[0])
    of_metric = runs[runs["task_primary_metric"] == metric]
    higher = not bool((of_metric["task_higher_is_better"] == False).all())  # noqa: E712
    meta = {f: _none(runs[f"dataset_meta_{f}"].dropna().iloc[0]) if runs[f"dataset_meta_{f}"].notna().any() else None
            for f in DatasetMeta.model_fields}
    options = {"family": sorted(runs["model_family"].dropna().unique().tolist()),
               "method": sorted(runs["method_name"].dropna().unique().tolist()),
               "source": sorted(runs["provenance_source"].dropna().unique().tolist())}
    chosen = {"family": family, "method": method, "source": source}
    scored = of_metric[(of_metric["outcome_status"] == "ok") & of_metric["outcome_score"].notna()]
    board = scored
    for key, col in (("family", "model_family"), ("method", "method_name"), ("source", "provenance_source")):
        if chosen[key]:
            board = board[board[col] == chosen[key]]
    board = board.sort_values(["outcome_score", "run_id"], ascending=[not higher, True])
    rows = []
    for rank, (_, r) in enumerate(board.head(limit).iterrows(), start=1):
        rows.append({"rank": rank, "run_id": r["run_id"], "model": r["model_id"], "family": _none(r["model_family"]),
                     "method": _method_label(r), "learning_rate": _none(r["hparams_learning_rate"]),
                     "batch_size": _none(r["hparams_batch_size"]), "epochs": _none(r["hparams_epochs"]),
                     "seed": _none(r["hparams_seed"]), "n_train": _none(r["dataset_n_train_used"]),
                     "score": _none(r["outcome_score"]), "runtime_s": _none(r["outcome_runtime_s"]),
                     "source": r["provenance_source"]})
    plot = board[["method_name", "outcome_score", "outcome_runtime_s"]].dropna()
    view = DatasetView(name=name, n_runs=len(runs), n_failed=int((runs["outcome_status"] == "failed").sum()),
                       metric=metric, higher_is_better=higher, meta=meta, options=options, chosen=chosen,
                       n_matching=len(board), leaderboard=rows, plot=plot)
    if meta.get("n_classes") is not None or meta.get("n_samples") is not None:
        view.recommend_request = _recommend_request(name, scored, runs, higher_is_better=higher)
    return view


def _recommend_request(name: str, scored: pd.DataFrame, runs: pd.DataFrame, *,
                       higher_is_better: bool = True) -> dict[str, Any] | None:
    """A ``POST /v1/recommend`` body for the dataset: the models of its best runs, the methods most tried on it (each
    with the parameters of its best run), its learning-rate range, batch sizes and epochs, and its main source; None
    without scored runs."""
    if scored.empty:
        return None
    best_first = scored.sort_values("outcome_score", ascending=not higher_is_better)
    models = list(dict.fromkeys(best_first["model_id"]))[:SPACE_MODELS]
    methods = []
    for method_name in scored["method_name"].value_counts().index[:SPACE_METHODS]:
        best = best_first[best_first["method_name"] == method_name].iloc[0]
        spec: dict[str, Any] = {"name": method_name}
        spec.update({param: _none(best[col]) for col, param in _METHOD_PARAMS.items() if _none(best[col]) is not None})
        methods.append(spec)
    hparams: dict[str, Any] = {}
    rates = scored["hparams_learning_rate"].dropna()
    low, high = (float(rates.min()), float(rates.max())) if rates.nunique() >= 2 else DEFAULT_LR
    hparams["learning_rate"] = {"low": low, "high": high, "log": True}
    for col, key in (("hparams_batch_size", "batch_size"), ("hparams_epochs", "epochs")):
        values = [_none(v) for v in scored[col].dropna().value_counts().index[:3]]
        if values:
            hparams[key] = sorted(values)
    task = {"type": str(runs["task_type"].mode().iloc[0]), "primary_metric": str(runs["task_primary_metric"].mode()
                                                                                 .iloc[0])}
    return {"task": task, "dataset": {"name": name}, "source": str(runs["provenance_source"].mode().iloc[0]),
            "space": {"models": [{"id": m} for m in models], "methods": methods, "hparams": hparams},
            "budget": RECOMMEND_BUDGET}


def run_view(kb: KnowledgeBase, run_id: str) -> RunRecord | None:
    """One run in its nested record shape (what ``GET /v1/runs/{run_id}`` answers), or None."""
    row = kb.get(run_id)
    return RunRecord.model_validate(from_row(row)) if row is not None else None


@dataclass
class AdvisorChoices:
    """What the advisor's form offers: datasets with meta-features, the most-run models and methods, sources."""

    datasets: list[str]
    models: list[tuple[str, str | None, int]]
    methods: list[str]
    sources: list[str]


#: Models and methods the advisor lists at most.
ADVISOR_MODELS, ADVISOR_METHODS = 24, 12


def advisor_choices(kb: KnowledgeBase) -> AdvisorChoices:
    """The advisor's choices, read from the knowledge base (most runs first)."""
    frame = kb.scan(["dataset_name", "dataset_meta_n_classes", "model_id", "model_family", "method_name",
                     "provenance_source"]).to_pandas()
    described = set(frame.loc[frame["dataset_meta_n_classes"].notna(), "dataset_name"].unique().tolist())
    described |= {str(n) for n in kb.table("datasets").column("name").to_pylist()}
    by_model = frame.groupby("model_id").agg(runs=("model_id", "size"), family=("model_family", "first"))
    by_model = by_model.sort_values("runs", ascending=False).head(ADVISOR_MODELS)
    models = [(str(m), _none(r["family"]), int(r["runs"])) for m, r in by_model.iterrows()]
    methods = frame["method_name"].value_counts().index[:ADVISOR_METHODS].tolist()
    sources = sorted(frame["provenance_source"].dropna().unique().tolist())
    return AdvisorChoices(datasets=sorted(described), models=models, methods=methods, sources=sources)
