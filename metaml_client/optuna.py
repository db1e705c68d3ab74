"""Optuna helpers: a sampler that asks the service what to evaluate next (:class:`MetamlSampler`), warm-starting a
study with the meta-learner's recommendations, skipping unpromising trials, pruning trials from their partial learning
curves (:class:`MetamlPruner`), and reporting finished trials back to the knowledge base.

The parameters follow the recommendation's own names: ``model`` (a model id), ``method`` (a label such as ``full``
or ``lora(lora_r=8)``, see :func:`method_label`) and each varied hyperparameter (``learning_rate``...). An objective
suggests them under those names and turns them into a configuration with :func:`config_from_params`.

Studies are assumed to maximize the task's primary metric on the normalized scale (``score``, 0.91 not 91.0).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import httpx
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from metaml_client._client import (
    Client,
    CurveDecision,
    Decision,
    MetamlAPIError,
    Recommendation,
    Suggestion,
    UploadResult,
)
from metaml_client._proposer import Evaluated, Proposer
from metaml_client._space import ParamSpec, config_from_params, method_label, param_specs, params_key

__all__ = ["MetamlPruner", "MetamlSampler", "SearchDone", "SkipUnpromising", "config_from_params", "distributions",
           "method_label", "report_back", "suggest_config", "warm_start"]

log = logging.getLogger("metaml_client")

CONFIG_ATTR = "metaml_config"
SUGGESTION_ATTR = "metaml_suggestion"
CLAIM_ATTR = "metaml:claim"
DONE_ATTR = "metaml:done"
RUNTIME_ATTR = "runtime_s"
DATASET_ATTR = "metaml_dataset"
P_BEAT_ATTR = "metaml_p_beat"
ACTION_ATTR = "metaml_action"


def warm_start(study: optuna.Study, client: Client, task: Mapping[str, Any] | None, dataset: str | Mapping[str, Any],
               space: Mapping[str, Any], budget: int, **kwargs: Any) -> Recommendation:
    """Ask ``/v1/recommend`` for the ``budget`` best configurations of ``space`` and enqueue them in ``study``
    (``study.enqueue_trial``), best first; returns the recommendation (its ``priors`` hold per-parameter
    distributions too). ``kwargs`` go to :meth:`Client.recommend` (``source``, ``seed``...)."""
    kwargs.setdefault("enqueue", budget)
    rec = client.recommend(task, dataset, space, budget, **kwargs)
    for params in rec.optuna_trials[:budget]:
        study.enqueue_trial(params, user_attrs={"metaml_warm_start": True}, skip_if_exists=True)
    return rec


class SkipUnpromising:
    """Skip trials the meta-learner says will not beat the study's best value.

    Call ``check(trial, config)`` at the start of the objective: it asks ``/v1/decide`` for ``config`` against the
    best value so far (and the best trial's configuration, when known, for a within-task comparison) and raises
    ``optuna.TrialPruned`` when the answer is skip, so the trial shows as PRUNED with the user attributes
    ``metaml_p_beat`` and ``metaml_action``. The study's completed and failed trials go along as the history, so the
    server recalibrates its residuals to the task once 3 have scored. Nothing is skipped before ``min_completed``
    trials have completed.
    """

    def __init__(self, client: Client, task: Mapping[str, Any] | None, dataset: str | Mapping[str, Any], *,
                 tolerance: float = 0.0, max_false_skip: float | None = None, source: str = "upload",
                 min_completed: int = 1) -> None:
        self.client = client
        self.task = task
        self.dataset = dataset
        self.tolerance = tolerance
        self.max_false_skip = max_false_skip
        self.source = source
        self.min_completed = min_completed
        self.skipped = 0

    def check(self, trial: optuna.Trial, config: Mapping[str, Any]) -> Decision | None:
        """None when there is no incumbent yet; else the decision (raises ``optuna.TrialPruned`` on skip)."""
        trial.set_user_attr(CONFIG_ATTR, dict(config))
        trial.set_user_attr(DATASET_ATTR, self.dataset)
        study = trial.study
        finished = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,
                                                           optuna.trial.TrialState.FAIL))
        done = [t for t in finished if t.state == optuna.trial.TrialState.COMPLETE]
        if len(done) < max(1, self.min_completed):
            return None
        if study.direction != optuna.study.StudyDirection.MAXIMIZE:
            raise ValueError("SkipUnpromising needs a study that maximizes the score")
        best = study.best_trial
        # the study's history (failed trials score None) lets the server recalibrate its residuals to this task
        history = [(t.user_attrs[CONFIG_ATTR], t.value if t.state == optuna.trial.TrialState.COMPLETE else None)
                   for t in finished if CONFIG_ATTR in t.user_attrs]
        decision = self.client.decide(self.task, self.dataset, config, float(best.value), self.tolerance,
                                      unit="score", incumbent_config=best.user_attrs.get(CONFIG_ATTR),
                                      max_false_skip=self.max_false_skip, source=self.source, history=history)
        trial.set_user_attr(P_BEAT_ATTR, decision.p_beat)
        trial.set_user_attr(ACTION_ATTR, decision.action)
        if decision.skip:
            self.skipped += 1
            raise optuna.TrialPruned(f"metaml: P(beat {best.value:.4f}) = {decision.p_beat:.3f} "
                                     f"< {decision.threshold:g}")
        return decision


def report_back(client: Client, trial: optuna.Trial | optuna.trial.FrozenTrial, config: Mapping[str, Any],
                score: float | None, runtime_s: float | None = None, *, dataset: str | Mapping[str, Any] | None = None,
                task: Mapping[str, Any] | None = None, status: str = "ok",
                provenance: Mapping[str, Any] | None = None) -> UploadResult:
    """Post a finished trial to ``/v1/runs`` as a run record: ``config``'s parts, ``score`` (normalized) and
    ``runtime_s``, on ``dataset`` (default: the one :class:`SkipUnpromising` recorded on the trial), with
    provenance source ``optuna`` (which the server keeps for an admin key and replaces with ``upload:<key name>``
    otherwise) and the study and trial number as locator. Needs the ``write`` scope."""
    if dataset is None:
        dataset = trial.user_attrs.get(DATASET_ATTR)
    if dataset is None:
        raise ValueError("name the dataset the trial ran on (dataset=...)")
    study_name = trial.study.study_name if isinstance(trial, optuna.Trial) else None
    record = {
        "task": dict(task) if task is not None else {"primary_metric": "accuracy"},
        "dataset": {"name": dataset} if isinstance(dataset, str) else dict(dataset),
        "model": dict(config["model"]),
        "method": dict(config.get("method") or {"name": "full"}),
        "hparams": dict(config.get("hparams") or {}),
        "outcome": {"status": status, "score": score, "runtime_s": runtime_s},
        "provenance": {"source": "optuna", "locator": f"{study_name or 'study'} trial {trial.number}",
                       **dict(provenance or {})},
    }
    return client.upload_runs([record])


# -- the sampler ------------------------------------------------------------------------------------------------------
def _distribution(spec: ParamSpec) -> BaseDistribution:
    if spec.kind == "choice":
        return CategoricalDistribution(list(spec.choices))
    if spec.kind == "int":
        return IntDistribution(int(spec.low), int(spec.high), log=spec.log)
    return FloatDistribution(spec.low, spec.high, log=spec.log)


def distributions(space: Mapping[str, Any]) -> dict[str, BaseDistribution]:
    """The Optuna distribution of each parameter of ``space`` (the search space sent to ``/v1/suggest``):
    ``model`` and ``method`` (labels) categorical, each hyperparameter categorical (a list of values), or a float /
    int range (log-scaled when the range says so). :class:`MetamlSampler` samples these; an objective suggests them
    with :func:`suggest_config`."""
    return {name: _distribution(spec) for name, spec in param_specs(space).items()}


def suggest_config(trial: optuna.Trial, space: Mapping[str, Any]) -> dict[str, Any]:
    """Suggest every parameter of ``space`` in ``trial`` (with :func:`distributions`, as :class:`MetamlSampler`
    samples them) and return the configuration they stand for (``model``, ``method``, ``hparams`` with the space's
    ``fixed`` ones).

    Raises:
        SearchDone: the sampler found nothing left to propose (the trial ends as pruned; the study stops).
    """
    params: dict[str, Any] = {}
    for name, spec in param_specs(space).items():
        if spec.kind == "choice":
            params[name] = trial.suggest_categorical(name, list(spec.choices))
        elif spec.kind == "int":
            params[name] = trial.suggest_int(name, int(spec.low), int(spec.high), log=spec.log)
        else:
            params[name] = trial.suggest_float(name, spec.low, spec.high, log=spec.log)
    return config_from_params(params, space)


class SearchDone(optuna.TrialPruned):
    """Raised by the suggestion of a :class:`MetamlSampler` parameter when the service has nothing left to propose:
    every candidate of the space is evaluated, running, or excluded by the skip rule. A ``TrialPruned``, so the trial
    ends as PRUNED and ``study.optimize`` goes on to stop (the sampler has called ``study.stop()``)."""


class MetamlSampler(BaseSampler):
    """An Optuna sampler that asks ``/v1/suggest`` which configuration of a search space to evaluate next.

    The service is stateless: at each trial the sampler sends the study's finished trials as the history (a
    COMPLETE trial with its value as the normalized score and its ``runtime_s`` user attribute, else its duration, as
    the runtime; a FAIL trial as a failure), and takes the best suggestion that no other trial holds. The parameters
    are ``model`` (a model id of the space), ``method`` (a label such as ``lora(lora_r=8)``) and each hyperparameter
    the space varies, with :func:`distributions`; suggest them with :func:`suggest_config` (or the same
    distributions by hand). Parameters outside the space, and every parameter when the service cannot be reached (a
    connection error, a 5xx or 429 after the client's retries; a warning is logged), come from the ``inner`` sampler.

    **Pruned trials** (a pruner, or :class:`SkipUnpromising`) ran partly or not at all: their configuration is never
    proposed again, but it is not sent as a score, since a partial result is not the configuration's score.

    **Several processes** (an RDB or journal storage shared by workers, or ``n_jobs``): the sampler writes its choice
    to the trial's system attribute ``metaml:claim`` (the parameters and the time) as soon as it makes it, and every
    sampler steps around the choices of running trials. Two workers asking at the same moment get the same ranked
    answer: each passes over as many free suggestions as there are lower-numbered running trials still choosing
    (started within ``claim_window_s``). After writing its choice a sampler reads the running trials' claims again:
    of two claims of one configuration the earlier keeps it and the later moves on to the next free suggestion. A
    configuration can still be evaluated twice when the two claims miss each other and the history changed between
    the two requests; never more often than there are workers.

    **When the service is done** (nothing left to propose, or every remaining candidate is running), the sampler
    marks the trial (system attribute ``metaml:done``), calls ``study.stop()`` and the first of its parameters the
    objective suggests raises :class:`SearchDone` (a ``TrialPruned``): the trial ends as PRUNED and
    ``study.optimize`` returns once the running trials end. Each process stops so at its next trial. With
    ``study.ask()`` / ``tell()`` instead of ``optimize``, catch :class:`SearchDone` around the suggestions and stop.

    Each trial the sampler chose gets the user attribute ``metaml_suggestion``: the candidate's index, the predicted
    points, the belief, P(beat the best so far), the acquisition value, the mechanism the belief rests on and how
    many evaluations (of them failed) the server counted in the history.

    The study must maximize one objective: the task's primary metric on the normalized scale (0.91, not 91.0).

    Args:
        client: the client to ask with (its retries apply).
        task: the record's task part (None: accuracy).
        dataset: a dataset name or spec dict.
        space: the search space (``models``, ``methods``, ``hparams``, ``fixed``, as ``/v1/recommend`` takes it).
        inner: the sampler for everything else (default ``TPESampler(seed=seed)``).
        source: the dataset source the server resolves ``dataset`` in.
        max_false_skip: the skip rule's budget per search (server default 0.05).
        max_candidates, samples_per_point, seed: how the server enumerates ``space`` (fixed for the whole search).
        claim_window_s: how long a running trial without a choice counts as still choosing.
    """

    def __init__(self, client: Client, task: Mapping[str, Any] | None, dataset: str | Mapping[str, Any],
                 space: Mapping[str, Any], *, inner: BaseSampler | None = None, source: str = "upload",
                 max_false_skip: float | None = None, max_candidates: int | None = None,
                 samples_per_point: int | None = None, seed: int = 0, claim_window_s: float = 60.0) -> None:
        self.proposer = Proposer(client, task, dataset, space, source=source, max_false_skip=max_false_skip,
                                 max_candidates=max_candidates, samples_per_point=samples_per_point, seed=seed)
        self.space = dict(space)
        self.inner = inner if inner is not None else optuna.samplers.TPESampler(seed=seed)
        self.claim_window_s = claim_window_s
        self._distributions = distributions(space)
        self._done: set[int] = set()  # trial ids marked done in this process
        self._lock = threading.Lock()

    # -- the study's trials, as the service sees them
    def _params(self, params: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """``params`` restricted to the space's parameters when it sets each of them within its distribution."""
        if not params or not all(name in params for name in self._distributions):
            return None
        for name, dist in self._distributions.items():
            try:
                if not dist._contains(dist.to_internal_repr(params[name])):
                    return None
            except (ValueError, TypeError):
                return None
        return {name: params[name] for name in self._distributions}

    @staticmethod
    def _runtime(t: FrozenTrial) -> float | None:
        value = t.user_attrs.get(RUNTIME_ATTR)
        if isinstance(value, int | float):
            return float(value)
        return t.duration.total_seconds() if t.duration is not None else None

    def _read(self, trials: Sequence[FrozenTrial], me: FrozenTrial) -> tuple[list[Evaluated], set[str], int]:
        """The history, the keys of the configurations other trials hold, and how many lower-numbered running
        trials are still choosing."""
        evaluated, taken, choosing = [], set(), 0
        recent = datetime.now() - timedelta(seconds=self.claim_window_s)
        for t in trials:
            if t.number == me.number:
                continue
            params = self._params(t.params)
            if t.state in (TrialState.COMPLETE, TrialState.FAIL):
                if params is not None:
                    score = t.value if t.state == TrialState.COMPLETE else None
                    evaluated.append(Evaluated(params, score, self._runtime(t)))
            elif t.state == TrialState.PRUNED:
                if params is not None:
                    taken.add(params_key(params))
            elif t.state == TrialState.RUNNING:
                held = self._claimed(t) or params \
                    or self._params(t.system_attrs.get("fixed_params"))
                if held is not None:
                    taken.add(params_key(held))
                elif (t.number < me.number and not t.system_attrs.get(DONE_ATTR)
                      and (t.datetime_start is None or t.datetime_start >= recent)):
                    choosing += 1
            elif t.state == TrialState.WAITING:
                held = self._params(t.system_attrs.get("fixed_params"))
                if held is not None:
                    taken.add(params_key(held))
        return evaluated, taken, choosing

    # -- BaseSampler
    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return dict(self._distributions)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if not search_space:
            return {}
        if study._is_multi_objective() or study.direction != optuna.study.StudyDirection.MAXIMIZE:
            raise ValueError("MetamlSampler needs a study that maximizes one objective: the normalized score")
        fixed = trial.system_attrs.get("fixed_params") or {}
        if any(name in fixed for name in search_space):
            return {}  # an enqueued trial: its parameters are given
        storage, trial_id = study._storage, trial._trial_id
        evaluated, taken, choosing = self._read(study.get_trials(deepcopy=False), trial)
        try:
            pick = self.proposer.next(evaluated, taken, skip=choosing, spare=1)
        except (httpx.TransportError, MetamlAPIError) as e:
            if isinstance(e, MetamlAPIError) and e.status < 500 and e.status != 429:
                raise
            log.warning("metaml: /v1/suggest failed (%s); trial %d is sampled by %s", e, trial.number,
                        type(self.inner).__name__)
            return {}
        if pick.params is None:
            self._finish(study, trial)
            return {}
        assert pick.suggestion is not None  # it comes with the parameters
        params, suggestion = self._claim(study, trial, pick.params, pick.suggestion, pick.free)
        storage.set_trial_user_attr(trial_id, SUGGESTION_ATTR, {
            "index": suggestion.index, "points": suggestion.points, "belief_points": suggestion.belief_points,
            "p_beat": suggestion.p_beat, "acquisition": suggestion.acquisition,
            **{k: pick.answer.basis.get(k) for k in ("mechanism", "evaluated", "failed")}})
        return {name: params[name] for name in search_space if name in params}

    def _claimed(self, t: FrozenTrial) -> dict[str, Any] | None:
        """The parameters trial ``t`` claimed, if any."""
        claim = t.system_attrs.get(CLAIM_ATTR)
        return self._params(claim.get("params")) if isinstance(claim, Mapping) else None

    def _claim(self, study: optuna.Study, trial: FrozenTrial, params: dict[str, Any], suggestion: Suggestion,
               free: Sequence[tuple[dict[str, Any], Suggestion]],
               rounds: int = 3) -> tuple[dict[str, Any], Suggestion]:
        """Write ``trial``'s choice, then read the other trials again: a configuration another trial finished
        meanwhile, or one a running trial claimed earlier (by the claim's time, then the trial number), is left to
        it, and the next ``free`` suggestion no other trial holds is taken instead. Both sides of two simultaneous
        claims compare the same stored claims, so at most one of them yields."""
        for _ in range(rounds):
            mine = (time.time(), trial.number)
            study._storage.set_trial_system_attr(trial._trial_id, CLAIM_ATTR, {"params": params, "at": mine[0]})
            key, held, lost = params_key(params), set(), False
            for t in study.get_trials(deepcopy=False):
                if t.number == trial.number or t.state == TrialState.WAITING:
                    continue
                theirs = self._claimed(t) or self._params(t.params)
                if theirs is None:
                    continue
                held.add(params_key(theirs))
                if params_key(theirs) == key:
                    at = float(t.system_attrs.get(CLAIM_ATTR, {}).get("at", 0.0))
                    lost = lost or t.state != TrialState.RUNNING or (at, t.number) < mine
            if not lost:
                break
            others = [(p, s) for p, s in free if params_key(p) not in held]
            if not others:
                break
            params, suggestion = others[0]
        return params, suggestion

    def _finish(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Mark ``trial`` done and stop the study's optimize loop (when there is one)."""
        with self._lock:
            self._done.add(trial._trial_id)
        study._storage.set_trial_system_attr(trial._trial_id, DONE_ATTR, True)
        with contextlib.suppress(RuntimeError):  # outside study.optimize: SearchDone tells the caller
            study.stop()

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        if param_name in self._distributions:
            with self._lock:
                done = trial._trial_id in self._done
            if done:
                raise SearchDone("metaml: nothing left to propose (every candidate of the space is evaluated, "
                                 "running, or excluded by the skip rule)")
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.inner.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        with self._lock:
            self._done.discard(trial._trial_id)
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()

class MetamlPruner(optuna.pruners.BasePruner):
    """Prune a trial when its intermediate values say it cannot finish above the study's best value.

    At each report, the trial's intermediate values (step -> value, on the normalized scale of the task's primary
    metric) are sent to ``/v1/decide/curve`` with the planned number of steps, the best completed value as the
    incumbent and the completed trials' intermediate values and final values as the history (the ``max_history``
    most recent); the trial is pruned when the server answers stop. Each answer is kept in :attr:`decisions` under
    the trial's number. A failed request never prunes (it warns).

    Args:
        client: a :class:`~metaml_client.Client`.
        task: the task (``{"primary_metric": "accuracy"}``...), or None for accuracy.
        dataset: the dataset's name, or a dataset spec as ``/v1/predict`` takes it.
        total_steps: the step a trial that trains to the end reports last (its planned number of steps or epochs,
            in the unit of ``trial.report``'s ``step``).
        by: ``step`` when the reported steps are training steps, ``epoch`` when they are epochs.
        config: a function from the trial to its configuration (``model``, ``method``, ``hparams``), sent for the
            meta-model's prior; default: the ``metaml_config`` user attribute :class:`SkipUnpromising` sets, if any.
        max_false_stop, tolerance, min_progress, min_history: as ``/v1/decide/curve`` takes them (None: the
            server's default).
        min_completed: never prune before this many trials have completed.
        max_history: completed trials sent as the history at most (the most recent).
        source: whose evaluation protocol the scores follow.
    """

    def __init__(self, client: Client, task: Mapping[str, Any] | None, dataset: str | Mapping[str, Any], *,
                 total_steps: float, by: str = "step",
                 config: Callable[[optuna.trial.FrozenTrial], Mapping[str, Any] | None] | None = None,
                 max_false_stop: float | None = None, tolerance: float = 0.0, min_progress: float | None = None,
                 min_history: int | None = None, min_completed: int = 1, max_history: int = 100,
                 source: str = "upload") -> None:
        if by not in ("step", "epoch"):
            raise ValueError(f"by must be 'step' or 'epoch', not {by!r}")
        if not total_steps or total_steps <= 0:
            raise ValueError("total_steps must be the planned number of reported steps (> 0)")
        self.client = client
        self.task = task
        self.dataset = dataset
        self.total_steps = total_steps
        self.by = by
        self.config = config or (lambda t: t.user_attrs.get(CONFIG_ATTR))
        self.max_false_stop = max_false_stop
        self.tolerance = tolerance
        self.min_progress = min_progress
        self.min_history = min_history
        self.min_completed = min_completed
        self.max_history = max_history
        self.source = source
        self.decisions: dict[int, CurveDecision] = {}
        self.pruned = 0

    def _totals(self) -> dict[str, Any]:
        if self.by == "step":
            return {"total_steps": int(self.total_steps)}
        return {"total_epochs": float(self.total_steps)}

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        """Whether to prune ``trial`` now (see the class docstring)."""
        if study.direction != optuna.study.StudyDirection.MAXIMIZE:
            raise ValueError("MetamlPruner needs a study that maximizes the score")
        values = {int(s) if self.by == "step" else float(s): float(v)
                  for s, v in trial.intermediate_values.items() if v is not None and v == v}
        if not values:
            return False
        done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                if t.value is not None]
        if len(done) < max(1, self.min_completed):
            return False
        incumbent = max(float(t.value) for t in done)
        history = []
        for t in done[-self.max_history:]:
            if t.intermediate_values:
                history.append({"curve": dict(t.intermediate_values), "score": float(t.value), "by": self.by,
                                "config": self.config(t), **self._totals()})
        try:
            decision = self.client.decide_curve(
                self.task, self.dataset, values, incumbent, by=self.by, config=self.config(trial),
                tolerance=self.tolerance, history=history, max_false_stop=self.max_false_stop,
                min_progress=self.min_progress, min_history=self.min_history, source=self.source,
                **self._totals())
        except (MetamlAPIError, httpx.HTTPError) as e:
            warnings.warn(f"metaml: no pruning decision for trial {trial.number} ({e})", stacklevel=2)
            return False
        self.decisions[trial.number] = decision
        if decision.stop:
            self.pruned += 1
        return decision.stop
