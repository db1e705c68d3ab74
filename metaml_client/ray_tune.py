"""Ray Tune helpers: a searcher that asks the service what to evaluate next (:class:`MetamlSearcher`), warm-starting
a tuning run with the meta-learner's recommendations, skipping unpromising trials, and reporting finished trials back
to the knowledge base.

The parameters are those of the Optuna helpers (``metaml_client.optuna``): ``model`` (a model id), ``method`` (a
label such as ``full`` or ``lora(lora_r=8)``) and each varied hyperparameter (``learning_rate``...);
:func:`~metaml_client._space.config_from_params` turns a trial's ``config`` into the configuration it stands for.

* :class:`MetamlSearcher`, a Tune ``Searcher`` (``TuneConfig(search_alg=...)``), asks ``/v1/suggest`` for each
  trial's configuration with the finished trials as the history, and tells Tune it is finished when the service has
  nothing left to propose.
* :func:`warm_start` asks ``/v1/recommend`` for the ``budget`` best configurations of a search space and returns them
  as ``points_to_evaluate`` together with a Tune ``param_space`` built from the same space
  (:func:`build_param_space`), so that both name the same parameters and values.
* :class:`SkipUnpromising` skips trials ``/v1/decide`` says cannot beat the best score so far. It is both a Tune
  ``Callback`` (pass it in ``RunConfig(callbacks=[...])``) and the check the trainable calls first (or wrap the
  objective with :meth:`SkipUnpromising.wrap`).
* :class:`ReportBack`, a ``Callback``, posts each completed trial to ``/v1/runs`` as a run record (provenance source
  ``ray_tune``, locator ``<experiment>/<trial id>``).

**How skipping works with distributed trials.** Trials run in Ray worker processes, so nothing unpicklable travels
with the trainable: the check holds the server's URL and API key and builds its client inside the worker. The
incumbent (the best score so far and its configuration, and how many trials have completed) lives in a small Ray
actor that the callback creates on the driver when the experiment starts (named, so that the workers' copies of the
check find it) and removes when it ends. The driver updates it from every result and every completed trial it sees;
the check in a worker reads it, asks ``/v1/decide``, and, on *skip*, reports one final result and ends the trial
before the expensive objective runs. A skipped trial is thus an ordinary *terminated* trial of the results, with
``metaml_action == "skip"``, ``metaml_p_beat`` and the metric set to NaN: Tune's best-result selection
(``ResultGrid.get_best_result``) disregards NaN, so a skip never passes for a score, and searchers see a missing value
rather than a made-up one. Trials that ran report ``metaml_action == "evaluate"`` with the metric. Nothing is skipped
before ``min_completed`` trials have completed (each result records the count the check saw, ``metaml_completed``).

Runs are assumed to maximize the task's primary metric on the normalized scale (``score``, 0.91 not 91.0).
"""

from __future__ import annotations

import logging
import math
import pickle
import random
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import ray
from ray import tune
from ray.tune import Callback
from ray.tune.search import Searcher
from ray.tune.search.sample import Domain

from metaml_client._client import Client, Decision, MetamlAPIError, Recommendation, UploadResult
from metaml_client._proposer import Evaluated, LazyProposer
from metaml_client._space import (
    ParamSpec,
    config_from_params,
    draw_params,
    method_label,
    param_specs,
    params_key,
    same_method,
)

__all__ = ["MetamlSearcher", "ReportBack", "SkipUnpromising", "WarmStart", "build_param_space", "config_from_params",
           "method_label", "warm_start"]

log = logging.getLogger(__name__)

ACTION_KEY = "metaml_action"
P_BEAT_KEY = "metaml_p_beat"
INCUMBENT_KEY = "metaml_incumbent"
COMPLETED_KEY = "metaml_completed"


# -- warm start -------------------------------------------------------------------------------------------------------
def _domain(spec: ParamSpec) -> Any:
    if spec.kind == "choice":
        return tune.choice(list(spec.choices))
    if spec.kind == "int":  # Tune's upper bound is exclusive
        lo, hi = int(spec.low), int(spec.high) + 1
        return tune.lograndint(lo, hi) if spec.log else tune.randint(lo, hi)
    return tune.loguniform(spec.low, spec.high) if spec.log else tune.uniform(spec.low, spec.high)


def build_param_space(space: Mapping[str, Any], points: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """A Tune ``param_space`` for ``space`` (the search-space dict sent to ``/v1/recommend``): ``model`` and
    ``method`` (labels) as ``tune.choice``, each hyperparameter of ``space["hparams"]`` as ``tune.choice`` (a list of
    values) or ``tune.loguniform`` / ``tune.uniform`` (a range; ``tune.lograndint`` / ``tune.randint`` for integer
    hyperparameters). ``fixed`` hyperparameters are left out: :func:`config_from_params` adds them.

    ``points`` (e.g. ``points_to_evaluate``) make both agree: their model names are added to the choices and a method
    label they spell differently (parameters in another order) replaces the space's own spelling."""
    specs = param_specs(space)
    methods = list(space.get("methods") or [{"name": "full"}])
    labels = []
    for label, m in zip(specs["method"].choices, methods, strict=True):
        spelled = [str(p["method"]) for p in points if "method" in p and same_method(str(p["method"]), m)]
        labels.append(spelled[0] if spelled else label)
    models = list(specs["model"].choices)
    models += sorted({str(p["model"]) for p in points if "model" in p} - set(models))
    out: dict[str, Any] = {"model": tune.choice(models), "method": tune.choice(labels)}
    out.update({name: _domain(spec) for name, spec in specs.items() if name not in out})
    return out


@dataclass
class WarmStart:
    """What :func:`warm_start` found: the configurations to run first, a param space they lie in, and the full
    recommendation (ranked configurations with their predictions, and priors)."""

    points_to_evaluate: list[dict[str, Any]]
    param_space: dict[str, Any]
    recommendation: Recommendation


def warm_start(client: Client, task: Mapping[str, Any] | None, dataset: str | Mapping[str, Any],
               space: Mapping[str, Any], budget: int, **kwargs: Any) -> WarmStart:
    """Ask ``/v1/recommend`` for the ``budget`` best configurations of ``space``: best first, as parameter dicts for
    ``BasicVariantGenerator(points_to_evaluate=...)`` (or any searcher's ``points_to_evaluate``), with a
    ``param_space`` for ``tune.Tuner`` from :func:`build_param_space`. ``kwargs`` go to :meth:`Client.recommend`
    (``source``, ``seed``...)."""
    kwargs.setdefault("enqueue", min(budget, 100))
    rec = client.recommend(task, dataset, space, budget, **kwargs)
    points = [dict(p) for p in rec.priors.get("ray_tune", {}).get("points_to_evaluate", [])[:budget]]
    return WarmStart(points, build_param_space(space, points), rec)


# -- the searcher -----------------------------------------------------------------------------------------------------
class MetamlSearcher(Searcher):
    """A Tune searcher that asks ``/v1/suggest`` which configuration of a search space each trial evaluates.

    Use it as ``tune.Tuner(trainable, tune_config=tune.TuneConfig(search_alg=MetamlSearcher(...), num_samples=N,
    max_concurrent_trials=C))``. A trial's ``config`` holds ``model`` (a model id of the space), ``method`` (a label
    such as ``lora(lora_r=8)``) and each hyperparameter the space varies: :func:`config_from_params` reads it as the
    configuration. Other parameters of the Tuner's ``param_space`` (outside the knowledge) are drawn at random from
    their domains; constants pass through.

    The service is stateless: each suggestion sends the finished trials as the history (the trial's last ``metric``
    as the normalized score, ``runtime_key`` or Tune's ``time_total_s`` as the runtime; an errored trial as a
    failure) and steps around the configurations of running trials. With a scheduler that stops trials early (ASHA,
    HyperBand) pass ``resource_attr`` and ``max_resource``: a trial that ended below ``max_resource`` is not a score
    of its configuration; it is never proposed again but is left out of the history (so is a trial without a finite
    ``metric``, e.g. one :class:`SkipUnpromising` skipped). When every remaining candidate is running the searcher
    answers None (Tune asks again later); when the service has nothing left to propose it answers
    ``Searcher.FINISHED`` and Tune starts no more trials. Should the service be unreachable (a connection error, a
    5xx or 429 after the client's retries), the trial's configuration is drawn at random from the space (a warning is
    logged).

    The searcher lives on the driver; it holds the server's URL and key and builds its client there (it is
    pickled with the Tuner's state). :meth:`save` and :meth:`restore` keep the history and the running trials.

    Args:
        url: the metaml server.
        task: the record's task part (None: accuracy).
        dataset: a dataset name or spec dict.
        space: the search space (as ``/v1/recommend`` takes it).
        api_key: sent with each request.
        metric: the result key holding the normalized score (maximized; ``mode`` must be ``max``).
        source, max_false_skip, max_candidates, samples_per_point, seed: as :class:`~metaml_client.optuna.
            MetamlSampler` (how the server resolves the dataset, the skip rule's budget, the space's enumeration).
        runtime_key: the result key with the trial's training time in seconds.
        resource_attr, max_resource: a trial's result counts as final when ``result[resource_attr] >=
            max_resource``.
        timeout: seconds per request.
    """

    def __init__(self, url: str, task: Mapping[str, Any] | None, dataset: str | Mapping[str, Any],
                 space: Mapping[str, Any], *, api_key: str | None = None, metric: str | None = "score",
                 mode: str | None = "max", source: str = "upload", max_false_skip: float | None = None,
                 max_candidates: int | None = None, samples_per_point: int | None = None, seed: int = 0,
                 runtime_key: str = "runtime_s", resource_attr: str | None = None,
                 max_resource: float | None = None, timeout: float = 30.0) -> None:
        if mode not in (None, "max"):
            raise ValueError("MetamlSearcher maximizes the normalized score: mode must be 'max'")
        if (resource_attr is None) != (max_resource is None):
            raise ValueError("give both resource_attr and max_resource, or neither")
        super().__init__(metric=metric, mode=mode)
        self.space = dict(space)
        self._ask = LazyProposer(url, api_key, timeout, task, dataset, space, source=source,
                                 max_false_skip=max_false_skip, max_candidates=max_candidates,
                                 samples_per_point=samples_per_point, seed=seed)
        self.runtime_key = runtime_key
        self.resource_attr = resource_attr
        self.max_resource = max_resource
        self.evaluated: list[Evaluated] = []
        self.running: dict[str, dict[str, Any]] = {}  # trial id -> its parameters
        self.stopped: set[str] = set()  # keys of configurations that ended without a final score
        self.finished = False
        self._extra: dict[str, Domain] = {}
        self._rng = random.Random(seed)
        self._wait = False  # every candidate left is running: ask again once a trial completes

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict[str, Any],
                              **spec: Any) -> bool:
        if mode not in (None, "max"):
            raise ValueError("MetamlSearcher maximizes the normalized score: mode must be 'max'")
        self._metric = self._metric or metric
        names = param_specs(self.space)
        self._extra = {k: v for k, v in (config or {}).items() if k not in names and isinstance(v, Domain)}
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.finished:
            return Searcher.FINISHED
        if self._wait:
            return None
        taken = {params_key(p) for p in self.running.values()} | self.stopped
        try:
            pick = self._ask().next(self.evaluated, taken)
        except (httpx.TransportError, MetamlAPIError) as e:
            if isinstance(e, MetamlAPIError) and e.status < 500 and e.status != 429:
                raise
            log.warning("metaml: /v1/suggest failed (%s); trial %s is drawn at random", e, trial_id)
            params = draw_params(self.space, self._rng)
        else:
            if pick.params is None:
                # nothing free: wait for a running trial, or stop (the service is done, or nothing it proposes is
                # free and nothing runs that could change that)
                self.finished = pick.done or not self.running
                self._wait = not self.finished
                return Searcher.FINISHED if self.finished else None
            params = pick.params
        self.running[trial_id] = params
        return {**params, **{k: d.sample(random_state=self._rng.randrange(2**32)) for k, d in self._extra.items()}}

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        params = self.running.pop(trial_id, None)
        self._wait = False
        if params is None:
            return
        result = result or {}
        runtime = _finite(result.get(self.runtime_key, result.get("time_total_s")))
        score = _finite(result.get(self._metric)) if self._metric else None
        if error:
            self.evaluated.append(Evaluated(params, None, runtime))
        elif score is None or (self.resource_attr is not None
                               and (_finite(result.get(self.resource_attr)) or 0.0) < float(self.max_resource or 0)):
            self.stopped.add(params_key(params))
        else:
            self.evaluated.append(Evaluated(params, score, runtime))

    def get_state(self) -> dict[str, Any]:
        return {"evaluated": [(e.params, e.score, e.runtime_s) for e in self.evaluated],
                "running": dict(self.running), "stopped": sorted(self.stopped), "finished": self.finished}

    def set_state(self, state: dict[str, Any]) -> None:
        self.evaluated = [Evaluated(p, s, r) for p, s, r in state["evaluated"]]
        self.running = dict(state["running"])
        self.stopped = set(state["stopped"])
        self.finished = bool(state["finished"])
        self._wait = False

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))


# -- skipping ---------------------------------------------------------------------------------------------------------
@ray.remote(num_cpus=0)
class _Incumbent:
    """The best score so far, its configuration, the count of completed trials and each trial's latest score (the
    search's history, which lets the server recalibrate to the task), shared by concurrent trials."""

    def __init__(self, score: float | None, config: dict[str, Any] | None) -> None:
        self.score = score
        self.config = config
        self.completed = 0
        self.history: dict[str, tuple[dict[str, Any], float]] = {}

    def offer(self, score: float, config: dict[str, Any], trial_id: str) -> None:
        self.history[trial_id] = (config, score)
        if self.score is None or score > self.score:
            self.score, self.config = score, config

    def complete(self) -> None:
        self.completed += 1

    def state(self) -> tuple[int, float | None, dict[str, Any] | None, list[tuple[dict[str, Any], float]]]:
        return self.completed, self.score, self.config, list(self.history.values())


def _finite(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _report(metrics: dict[str, Any]) -> None:
    report = getattr(tune, "report", None)
    if report is None:  # Ray before 2.41: function trainables report through ray.train
        from ray import train

        report = train.report
    report(metrics)


class SkipUnpromising(Callback):
    """Skip trials the meta-learner says will not beat the best score so far.

    Pass the instance in ``RunConfig(callbacks=[...])`` (on the driver it keeps the shared incumbent up to date) and
    either call :meth:`check` at the start of the trainable, or let :meth:`wrap` do it around an objective.

    Args:
        url: the metaml server, reached from the workers.
        task: the record's task part (None: accuracy).
        dataset: a dataset name or spec dict.
        space: the search space (as sent to ``recommend``), to read a trial's ``config`` as a configuration.
        api_key: sent with each ``/v1/decide`` request.
        metric: the result key holding the normalized score (maximized).
        tolerance: evaluate candidates that may come within this much of the incumbent.
        max_false_skip: skip only when P(beat) is below this (server default 0.05).
        source: the dataset source the server resolves ``dataset`` in.
        min_completed: trials that must have completed before any is skipped.
        incumbent: a known best score to start from (a baseline, an earlier run), and ``incumbent_config`` its
            configuration; with one, ``min_completed=0`` lets the very first trials be skipped.
        timeout: seconds per request.
    """

    def __init__(self, url: str, task: Mapping[str, Any] | None, dataset: str | Mapping[str, Any],
                 space: Mapping[str, Any], *, api_key: str | None = None, metric: str = "score",
                 tolerance: float = 0.0, max_false_skip: float | None = None, source: str = "upload",
                 min_completed: int = 1, incumbent: float | None = None,
                 incumbent_config: Mapping[str, Any] | None = None, timeout: float = 30.0) -> None:
        if min_completed < 0:
            raise ValueError("min_completed must not be negative")
        self.url = url
        self.task = dict(task) if task is not None else None
        self.dataset = dataset if isinstance(dataset, str) else dict(dataset)
        self.space = dict(space)
        self.api_key = api_key
        self.metric = metric
        self.tolerance = tolerance
        self.max_false_skip = max_false_skip
        self.source = source
        self.min_completed = min_completed
        self.incumbent = incumbent
        self.incumbent_config = dict(incumbent_config) if incumbent_config is not None else None
        self.timeout = timeout
        self.skipped = 0  # counted on the driver
        self.last_check: dict[str, Any] = {}  # in a trial: the metaml fields of its check, for its results
        self._name = f"metaml-incumbent-{uuid.uuid4().hex}"
        self._actor: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_actor"] = None  # the workers' copies find the actor by name
        return state

    # on the driver
    def setup(self, **info: Any) -> None:
        self.skipped = 0
        self._actor = _Incumbent.options(name=self._name, get_if_exists=True).remote(self.incumbent,
                                                                                      self.incumbent_config)

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                        **info: Any) -> None:
        score = _finite(result.get(self.metric))
        if self._actor is not None and result.get(ACTION_KEY) != "skip" and score is not None:
            self._actor.offer.remote(score, config_from_params(trial.config, self.space), str(trial.trial_id))

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        if last.get(ACTION_KEY) == "skip":
            self.skipped += 1
        elif self._actor is not None and _finite(last.get(self.metric)) is not None:
            self._actor.complete.remote()

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        if self._actor is not None:
            ray.kill(self._actor)
            self._actor = None

    # in a trial
    def _state(self) -> tuple[int, float | None, dict[str, Any] | None, list[tuple[dict[str, Any], float]]]:
        if self._actor is None:
            if not ray.is_initialized():
                raise RuntimeError("SkipUnpromising.check runs in a Tune trial (no Ray instance here)")
            try:
                self._actor = ray.get_actor(self._name)
            except ValueError:
                raise RuntimeError("the incumbent is not shared: pass this SkipUnpromising in the Tuner's "
                                   "RunConfig(callbacks=[...]) as well") from None
        return ray.get(self._actor.state.remote(), timeout=self.timeout)

    def check(self, params: Mapping[str, Any]) -> Decision | None:
        """Ask ``/v1/decide`` whether the trial's ``config`` (``params``) can beat the best score so far.

        Returns None while fewer than ``min_completed`` trials have completed or there is no incumbent, or when the
        server cannot be reached (the trial then runs); else the decision. **On skip the trial's final result has
        been reported: return from the trainable at once.** :attr:`last_check` holds the fields to add to the
        trial's own results (:meth:`wrap` adds them)."""
        config = config_from_params(params, self.space)
        completed, best, best_config, history = self._state()
        self.last_check = {ACTION_KEY: "evaluate", P_BEAT_KEY: None, INCUMBENT_KEY: best, COMPLETED_KEY: completed}
        if completed < self.min_completed or best is None:
            return None
        try:
            with Client(self.url, api_key=self.api_key, timeout=self.timeout) as client:
                decision = client.decide(self.task, self.dataset, config, best, self.tolerance, unit="score",
                                         incumbent_config=best_config, max_false_skip=self.max_false_skip,
                                         source=self.source, history=history)
        except (httpx.TransportError, MetamlAPIError) as e:
            if isinstance(e, MetamlAPIError) and e.status < 500 and e.status != 429:
                raise
            log.warning("metaml: the skip check failed (%s); the trial runs", e)
            return None
        self.last_check.update({ACTION_KEY: decision.action, P_BEAT_KEY: decision.p_beat})
        if decision.skip:
            _report({self.metric: float("nan"), **self.last_check})
        return decision

    def wrap(self, objective: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], None]:
        """A function trainable that runs :meth:`check` first and ``objective(config)`` only when the trial is not
        skipped. ``objective`` returns the score (a float), a dict of metrics holding ``metric``, or None when it
        reports its results itself (then add :attr:`last_check` to them); the check's fields are added to a score
        or dict it returns."""

        def trainable(config: dict[str, Any]) -> None:
            decision = self.check(config)
            if decision is not None and decision.skip:
                return
            out = objective(config)
            if out is None:
                return
            metrics = dict(out) if isinstance(out, Mapping) else {self.metric: float(out)}
            _report({**metrics, **self.last_check})

        trainable.__name__ = getattr(objective, "__name__", "trainable")
        return trainable


# -- reporting back ---------------------------------------------------------------------------------------------------
def _locator(trial: Any) -> str:
    experiment = getattr(trial, "experiment_dir_name", None) or getattr(trial, "experiment_tag", None) or "experiment"
    return f"{experiment}/{trial.trial_id}"


class ReportBack(Callback):
    """Post each completed trial to ``/v1/runs`` as a run record, from the driver: the configuration its ``config``
    stands for in ``space``, its last ``metric`` as the score, ``runtime_key`` (else Tune's ``time_total_s``) as the
    runtime, on ``dataset``, with provenance source ``ray_tune`` (kept for an admin key, else the server's
    ``upload:<key name>``) and locator ``<experiment>/<trial id>``. Skipped
    trials are not posted; errored ones are, as ``failed`` runs, with ``report_errors``. Needs the ``write`` scope.

    An upload that fails is logged and kept in :attr:`errors` (trial id -> message) and the experiment goes on;
    :attr:`uploads` maps each posted trial's id to the server's answer."""

    def __init__(self, url: str, dataset: str | Mapping[str, Any], space: Mapping[str, Any], *,
                 api_key: str | None = None, task: Mapping[str, Any] | None = None, metric: str = "score",
                 runtime_key: str = "runtime_s", report_errors: bool = False,
                 provenance: Mapping[str, Any] | None = None, timeout: float = 30.0) -> None:
        self.url = url
        self.dataset = dataset
        self.space = dict(space)
        self.api_key = api_key
        self.task = dict(task) if task is not None else None
        self.metric = metric
        self.runtime_key = runtime_key
        self.report_errors = report_errors
        self.provenance = dict(provenance or {})
        self.timeout = timeout
        self.uploads: dict[str, UploadResult] = {}
        self.errors: dict[str, str] = {}
        self._client: Client | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_client"] = None
        return state

    def record(self, trial: Any, score: float | None, runtime_s: float | None, status: str = "ok") -> dict[str, Any]:
        """The run record of ``trial``."""
        config = config_from_params(trial.config, self.space)
        return {
            "task": dict(self.task) if self.task is not None else {"primary_metric": "accuracy"},
            "dataset": {"name": self.dataset} if isinstance(self.dataset, str) else dict(self.dataset),
            "model": dict(config["model"]),
            "method": dict(config.get("method") or {"name": "full"}),
            "hparams": dict(config.get("hparams") or {}),
            "outcome": {"status": status, "score": score, "runtime_s": runtime_s},
            "provenance": {"source": "ray_tune", "locator": _locator(trial), **self.provenance},
        }

    def _post(self, trial: Any, record: dict[str, Any]) -> None:
        try:
            if self._client is None:
                self._client = Client(self.url, api_key=self.api_key, timeout=self.timeout)
            self.uploads[trial.trial_id] = self._client.upload_runs([record])
        except (httpx.HTTPError, MetamlAPIError) as e:
            self.errors[trial.trial_id] = str(e)
            log.warning("metaml: trial %s was not reported back: %s", trial.trial_id, e)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        if last.get(ACTION_KEY) == "skip":
            return
        score = _finite(last.get(self.metric))
        if score is None:
            self.errors[trial.trial_id] = f"no finite {self.metric!r} in its last result"
            log.warning("metaml: trial %s has no finite %r to report back", trial.trial_id, self.metric)
            return
        runtime = _finite(last.get(self.runtime_key, last.get("time_total_s")))
        self._post(trial, self.record(trial, score, runtime))

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        if self.report_errors:
            runtime = _finite((trial.last_result or {}).get("time_total_s"))
            self._post(trial, self.record(trial, None, runtime, status="failed"))

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
