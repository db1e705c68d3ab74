"""The meta-learner's answers: predict candidates, recommend what to try first, suggest what to evaluate next given
the task's history, decide evaluate or skip."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

import anyio
import anyio.to_thread
import numpy as np
import pandas as pd
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from metaml._curves import decide_curve as decide_run
from metaml._curves import describe_curve_model, primary_curve
from metaml._data import chance_points, config_keys
from metaml._decision import decide as decide_one
from metaml._decision import recommend as recommend_space
from metaml._estimators import metric_range
from metaml.search import EngineSettings, Observation, SearchEngine, TaskKnowledge
from metaml.serving import KnowledgeIndex, SampleFeatures, enumerate_space, task_row
from service.api._json import FastJSONResponse, jsonable
from service.api.candidates import (
    finite,
    parts_rows,
    plain,
    prediction_items,
    ranked_items,
    request_rows,
    resolve_task,
    rows_of,
    validated,
)
from service.api.deps import ReadKey, SettingsDep
from service.api.errors import CurveModelUnavailable, UnknownDataset
from service.api.experience import Experience, Samples
from service.api.predictor import CORES, Holder, LoadedModel
from service.api.routes._common import ERROR_RESPONSES, api_router
from service.api.schemas import (
    CurveDecideRequest,
    CurveDecideResult,
    DecideRequest,
    DecideResult,
    PredictRequest,
    PredictResult,
    RecommendRequest,
    RecommendResult,
    SuggestRequest,
    SuggestResult,
)
from service.errors import BatchTooLarge
from service.settings import Settings

router = api_router(prefix="/v1", tags=["meta-learner"])

_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    503: {"model": ERROR_RESPONSES[503]["model"],
          "description": "No meta-model is loaded (`model_unavailable`), or the knowledge base is unavailable."},
}


#: Requests with at most this many candidates (and no dataset sample) are answered on the event loop.
INLINE_CANDIDATES = 16


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 3)


async def _run(request: Request, inline: bool, work: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """``work(*args)`` on the event loop when ``inline`` (small requests: a thread hop costs more than they do), else
    in a worker thread, at most one per core at a time (large batches and dataset samples take long enough to hold the
    loop up, and more threads than cores only make them contend for the cores and the GIL)."""
    if inline:
        return work(*args)
    extensions = request.app.state.extensions
    limiter = extensions.get("prediction_limiter")
    if limiter is None:
        limiter = extensions.setdefault("prediction_limiter", anyio.CapacityLimiter(CORES))
    return await anyio.to_thread.run_sync(partial(work, *args), limiter=limiter)


def _inline(body: Any, n_candidates: int, experience: KnowledgeIndex) -> bool:
    """Small enough to answer on the event loop: few candidates, no sample to describe, and a knowledge-base snapshot
    in memory (reading one waits for the knowledge base)."""
    return n_candidates <= INLINE_CANDIDATES and body.dataset.sample is None and experience.get() is not None


@router.post("/predict", operation_id="predict", response_model=PredictResult, responses=_RESPONSES)
async def predict(request: Request, body: PredictRequest, holder: Holder, experience: Experience, samples: Samples,
                  settings: SettingsDep, _key: ReadKey) -> JSONResponse:
    """Score a batch of candidate configurations for a task.

    Per candidate: the predicted primary metric (points and normalized) with its interval, the ranking view, the
    predicted training time and failure probability (those named in `outputs`, all by default), and the past runs
    nearest to it by the same model and method (the `support` rule is in docs/api.md). `model_ms` is the time of the
    one vectorized featurize + predict call. Candidates come as objects (`candidates`) or as one array per field
    (`columns`: cheaper for large batches); the answer is the same.
    """
    loaded = holder.require()
    if body.n_candidates > settings.max_predict_candidates:
        raise BatchTooLarge(f"the request holds {body.n_candidates:,} candidates; at most "
                            f"{settings.max_predict_candidates:,} are scored in one request: split it",
                            details={"max_predict_candidates": settings.max_predict_candidates})
    inline = _inline(body, body.n_candidates, experience)
    return FastJSONResponse(await _run(request, inline, _predict, body, loaded, experience, samples, settings))


def _predict(body: PredictRequest, loaded: LoadedModel, experience: KnowledgeIndex, samples: SampleFeatures,
             settings: Settings) -> dict[str, Any]:
    ctx = resolve_task(body.task, body.dataset, body.source, experience=experience, samples=samples,
                       max_sample_rows=settings.max_sample_rows)
    rows, pairs = request_rows(ctx.row, body.candidates, body.columns)
    started = time.perf_counter()
    out = loaded.model.predict_arrays(rows, outputs=set(body.outputs), pairs=pairs)
    model_ms = _ms(started)
    n = len(pairs)
    support = ctx.snapshot.support_json(ctx.snapshot.support(ctx.meta, ctx.name, rows, body.support)) \
        if ctx.snapshot is not None else [[] for _ in range(n)]
    return {"model": loaded.describe(), "model_ms": model_ms, "n_candidates": n, "task": ctx.info(),
            "predictions": prediction_items(out, support)}


@router.post("/recommend", operation_id="recommend", response_model=RecommendResult, responses=_RESPONSES)
async def recommend(request: Request, body: RecommendRequest, holder: Holder, experience: Experience, samples: Samples,
                    settings: SettingsDep, _key: ReadKey) -> JSONResponse:
    """The configurations to try first for a task, from a search space and a budget, and priors over the space.

    The space's listed values form a grid (models x methods x each listed hyperparameter); ranges are sampled with
    the request's seed for each grid point; a grid larger than `max_candidates` is sampled. Every candidate is
    scored, ranked by the ranking view discounted by its failure probability, and the top `budget` are returned,
    with priors over each parameter for Optuna, Ray Tune and a probabilistic grammar search.
    """
    loaded = holder.require()
    return FastJSONResponse(await _run(request, False, _recommend, body, loaded, experience, samples, settings))


def _recommend(body: RecommendRequest, loaded: LoadedModel, experience: KnowledgeIndex, samples: SampleFeatures,
               settings: Settings) -> dict[str, Any]:
    cap = min(body.max_candidates, settings.max_recommend_candidates)
    ctx = resolve_task(body.task, body.dataset, body.source, experience=experience, samples=samples,
                       max_sample_rows=settings.max_sample_rows)
    space = validated(enumerate_space, ctx.row, body.space, max_candidates=cap,
                      samples_per_point=body.samples_per_point, seed=body.seed)
    started = time.perf_counter()
    rec = recommend_space(loaded.model, space.frame, space.params, budget=body.budget,
                          temperature=body.temperature, pairs=space.pairs)
    model_ms = _ms(started)
    params = {name: ("hparams." + col[len("hparams_"):] if col.startswith("hparams_") else name)
              for name, col in space.params.items()}
    priors = {"optuna": rec.optuna(top_k=body.enqueue), "ray_tune": rec.ray_tune(top_k=body.enqueue),
              "grammar": rec.grammar()}
    return jsonable({"model": loaded.describe(), "model_ms": model_ms, "n_candidates": len(space.frame),
                     "truncated": space.truncated, "task": ctx.info(), "params": params,
                     "ranked": ranked_items(rec.ranked, space), "priors": priors})


@router.post("/decide", operation_id="decide", response_model=DecideResult, responses=_RESPONSES)
async def decide(request: Request, body: DecideRequest, holder: Holder, experience: Experience, samples: Samples,
                 settings: SettingsDep, _key: ReadKey) -> JSONResponse:
    """Evaluate or skip one candidate, given the best score so far (the incumbent) and a tolerance.

    Skips when the probability that the candidate comes within `tolerance` of the incumbent, read from residuals
    calibrated on unseen datasets, is below `max_false_skip`; that threshold is the stated false-skip rate. With the
    search's `history` (at least 3 scored configurations) the residuals are recalibrated to the task's own bias and
    spread; else, with the incumbent's configuration, the comparison uses within-task differences, which cancel the
    task's bias.
    """
    loaded = holder.require()
    inline = _inline(body, 2, experience)
    return FastJSONResponse(await _run(request, inline, _decide, body, loaded, experience, samples, settings))


def _decide(body: DecideRequest, loaded: LoadedModel, experience: KnowledgeIndex, samples: SampleFeatures,
            settings: Settings) -> dict[str, Any]:
    ctx = resolve_task(body.task, body.dataset, body.source, experience=experience, samples=samples,
                       max_sample_rows=settings.max_sample_rows)
    candidate = rows_of(ctx.row, [body.candidate], loc="candidate")
    incumbent_config = rows_of(ctx.row, [body.incumbent_config], loc="incumbent_config") if body.incumbent_config \
        else None
    factor = 100.0 if body.unit == "score" else 1.0
    history = rows_of(ctx.row, [h.config for h in body.history], loc="history") if body.history else None
    d = decide_one(loaded.model, candidate, body.incumbent * factor, tolerance=body.tolerance * factor,
                   incumbent_config=incumbent_config, history=history,
                   history_points=[None if h.score is None else h.score * factor for h in body.history],
                   max_false_skip=body.max_false_skip)
    return jsonable({"model": loaded.describe(), "action": d.action, "p_beat": d.p_beat,
                     "predicted_points": d.predicted, "predicted_score": d.predicted / 100.0,
                     "incumbent_points": d.incumbent, "tolerance_points": d.tolerance, "threshold": d.threshold,
                     "stated_false_skip_rate": d.stated_false_skip_rate, "basis": d.basis})


@router.post("/suggest", operation_id="suggest", response_model=SuggestResult, responses=_RESPONSES)
async def suggest(request: Request, body: SuggestRequest, holder: Holder, experience: Experience, samples: Samples,
                  settings: SettingsDep, _key: ReadKey) -> JSONResponse:
    """Which configurations to evaluate next on a task, learning from what it has shown so far.

    The engine (`metaml.search.SearchEngine`, see docs/api.md) starts from the meta-model's predictions, weighs the
    past tasks of the knowledge base by how well they agree with this task's history, and proposes the candidates
    with the best expected improvement over the best score so far, discounted by the failure probability, per unit
    of predicted training time. A
    candidate already in the history is never proposed, nor one the skip rule excludes (`max_false_skip` is a budget
    per search); `done` says when nothing is left. Stateless: any replica answers.
    """
    loaded = holder.require()
    n = len(body.candidates) if body.candidates is not None else min(body.max_candidates,
                                                                       settings.max_suggest_candidates)
    if body.candidates is not None and n > settings.max_suggest_candidates:
        raise BatchTooLarge(f"the request holds {n:,} candidates; at most {settings.max_suggest_candidates:,} are "
                            "weighed in one request: send fewer (or a space with a smaller max_candidates)",
                            details={"max_suggest_candidates": settings.max_suggest_candidates})
    return FastJSONResponse(await _run(request, False, _suggest, body, loaded, experience, samples, settings))


def _suggest(body: SuggestRequest, loaded: LoadedModel, experience: KnowledgeIndex, samples: SampleFeatures,
             settings: Settings) -> dict[str, Any]:
    ctx = resolve_task(body.task, body.dataset, body.source, experience=experience, samples=samples,
                       max_sample_rows=settings.max_sample_rows)
    space = None
    if body.candidates is not None:
        rows, pairs = parts_rows(ctx.row, body.candidates)
    else:
        space = validated(enumerate_space, ctx.row, body.space,
                          max_candidates=min(body.max_candidates, settings.max_suggest_candidates),
                          samples_per_point=body.samples_per_point, seed=body.seed)
        rows, pairs = space.frame, space.pairs
    started = time.perf_counter()
    observations = _observations(body, ctx.row, rows)
    pred = loaded.model.predict_arrays(rows, pairs=pairs)
    knowledge = TaskKnowledge.from_model(loaded.model, rows, pred)
    result = SearchEngine(knowledge, EngineSettings(max_false_skip=body.max_false_skip)).suggest(observations, body.k)
    model_ms = _ms(started)
    items = []
    for sug in result.suggestions:
        i = sug.index
        config = space.config(i) if space is not None else body.candidates[i].model_dump(mode="json",
                                                                                        exclude_none=True)
        items.append({"index": i, "config": config, "points": plain(pred["points"][i]),
                      "points_lo": plain(pred["lo"][i]), "points_hi": plain(pred["hi"][i]),
                      "belief_points": sug.mean, "belief_sd": sug.sd, "p_beat": sug.p_beat,
                      "expected_improvement": sug.expected_improvement, "acquisition": sug.acquisition,
                      "runtime_s": finite(np.array([sug.runtime_s]))[0], "p_fail": sug.p_fail})
    return jsonable({"model": loaded.describe(), "model_ms": model_ms, "n_candidates": len(rows),
                     "truncated": bool(space.truncated) if space is not None else False, "task": ctx.info(),
                     "suggestions": items, "excluded": [int(i) for i in result.excluded],
                     "skip_budget_spent": result.spent, "done": result.done, "basis": result.basis})


def _observations(body: SuggestRequest, task: dict[str, Any], rows: Any) -> list[Observation]:
    """The history as observations of candidate indices (a trial that is no candidate, or a score outside the
    metric's scale, answers 422 at its place)."""
    if not body.history:
        return []
    factor = 100.0 if body.unit == "score" else 1.0
    low, high = metric_range([task.get("task_metric_scale") or "unit"])
    ctx_rows = rows_of(task, [h.config for h in body.history], loc="history")
    where = {k: i for i, k in enumerate(config_keys(rows))}
    errors, out = [], []
    for j, (key, trial) in enumerate(zip(config_keys(ctx_rows), body.history, strict=True)):
        i = where.get(key)
        if i is None:
            errors.append({"loc": ("body", "history", j, "config"), "type": "value_error",
                           "msg": "this configuration is not one of the candidates (evaluate only what is proposed, "
                                  "or add it to `candidates`)"})
            continue
        points = None if trial.score is None else trial.score * factor
        if points is not None and not low[0] <= points <= high[0]:
            errors.append({"loc": ("body", "history", j, "score"), "type": "value_error",
                           "msg": f"{trial.score} is outside the metric's scale ({low[0] / factor:g} to "
                                  f"{high[0] / factor:g} in {body.unit})"})
            continue
        out.append(Observation(i, points, trial.runtime_s))
    if errors:
        raise RequestValidationError(errors)
    return out

# -- stopping a run from its partial learning curve ---------------------------------------------------------------

_CURVE_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    503: {"model": ERROR_RESPONSES[503]["model"],
          "description": "No meta-model is loaded (`model_unavailable`), the served artifact holds no curve model "
                         "(`curve_model_unavailable`), or the knowledge base is unavailable."},
}
#: Requests with at most this many finished runs (and no dataset sample) are answered on the event loop.
INLINE_HISTORY = 16
NO_CURVE_MODEL_MESSAGE = ("the served model has no curve estimator: its knowledge base held no runs with learning "
                          "curves when it was trained; ingest some (OPDA, the PEFT method comparison, Trainer runs, "
                          "Optuna studies with pruned trials...) and train a new version with `metaml train`")


@router.post("/decide/curve", operation_id="decide_curve", response_model=CurveDecideResult,
             responses=_CURVE_RESPONSES)
async def decide_curve(request: Request, body: CurveDecideRequest, holder: Holder, experience: Experience,
                       samples: Samples, settings: SettingsDep, _key: ReadKey) -> JSONResponse:
    """Continue or stop a training run, from its partial learning curve and the best final score so far.

    The curve estimator trained with the served meta-model (metaml._curves) predicts the run's final score from its
    curve so far (progress = steps or epochs done / planned), the search's finished runs (`history`) and, when it
    reads them, the meta-model's prior for the run's configuration; with 2 or more finished runs its error
    distribution is recalibrated to this task. The run is stopped when P(final > incumbent + tolerance) is below
    `max_false_stop`, the stated error rate, once it has trained `min_progress` of its plan and `min_history` runs
    have finished.
    """
    loaded = holder.require()
    if loaded.curve is None:
        raise CurveModelUnavailable(NO_CURVE_MODEL_MESSAGE)
    inline = len(body.history) <= INLINE_HISTORY and _inline(body, 1, experience)
    return FastJSONResponse(await _run(request, inline, _decide_curve, body, loaded, experience, samples, settings))


def _curve_arrays(curve: Any, factor: float, loc: tuple[Any, ...]) -> tuple[Any, Any]:
    """A request curve as (progress, points) arrays (:func:`metaml._curves.primary_curve`).

    Raises:
        RequestValidationError: no point lies past the start of training.
    """
    points = [{"step": p.step, "epoch": p.epoch, "metric": "primary", "value": p.value * factor}
              for p in curve.points]
    progress, values = primary_curve(points, "primary", max_steps=curve.total_steps, epochs=curve.total_epochs)
    if len(progress) == 0:
        raise RequestValidationError([{"loc": ("body", *loc, "points"), "type": "value_error",
                                       "msg": "no evaluation after the start of training (step or epoch > 0)"}])
    return progress, values


def _decide_curve(body: CurveDecideRequest, loaded: LoadedModel, experience: KnowledgeIndex,
                  samples: SampleFeatures, settings: Settings) -> dict[str, Any]:
    estimator = loaded.curve
    try:
        ctx = resolve_task(body.task, body.dataset, body.source, experience=experience, samples=samples,
                           max_sample_rows=settings.max_sample_rows)
        row = ctx.row
    except UnknownDataset:
        if estimator.use_prior:
            raise
        # the curve model reads no meta-features: a dataset the knowledge base does not know is answered without
        row = task_row(body.task.model_dump(exclude_none=True), {"name": body.dataset.name}, source=body.source)
    factor = 100.0 if body.unit == "score" else 1.0
    progress, values = _curve_arrays(body.curve, factor, ("curve",))
    history = []
    for i, h in enumerate(body.history):
        p, v = _curve_arrays(h.curve, factor, ("history", i, "curve"))
        history.append((p, v, h.score * factor))
    prior, history_priors = None, None
    if estimator.use_prior:
        configs = [body.config, *(h.config for h in body.history)]
        known = [c for c in configs if c is not None]
        answers = iter(loaded.model.predict(rows_of(row, known, loc="config")).to_dict("records") if known else [])
        priors = [next(answers) if c is not None else None for c in configs]
        prior, history_priors = priors[0], priors[1:]
    task_frame = pd.DataFrame([row]).reindex(columns=["task_primary_metric", "task_metric_scale",
                                                          "dataset_meta_n_classes"])
    chance = float(chance_points(task_frame).iloc[0])
    d = decide_run(estimator, progress, values, body.incumbent * factor, history=history, prior=prior,
                   history_priors=history_priors, chance=chance, tolerance=body.tolerance * factor,
                   max_false_stop=body.max_false_stop, min_progress=body.min_progress, min_history=body.min_history,
                   bounds=tuple(float(x[0]) for x in metric_range([row.get("task_metric_scale") or "unit"])))
    info = describe_curve_model(estimator)
    return jsonable({"model": loaded.describe(),
                     "curve_model": {k: info[k] for k in ("n_train_rows", "n_train_datasets", "calibration",
                                                          "uses_prior", "interval_level")},
                     "action": d.action, "p_above": d.p_above, "predicted_points": d.predicted,
                     "predicted_score": d.predicted / 100.0, "points_lo": d.lo, "points_hi": d.hi,
                     "incumbent_points": d.incumbent, "tolerance_points": d.tolerance, "progress": d.progress,
                     "n_history": d.n_history, "threshold": d.threshold, "stated_error_rate": d.stated_error_rate,
                     "basis": d.basis})
