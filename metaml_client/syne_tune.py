"""Syne Tune: a searcher that asks the service what to evaluate next (:class:`MetamlSearcher`), for Syne Tune's FIFO
scheduler (``SingleObjectiveScheduler``) and its multi-fidelity ones (``AsynchronousSuccessiveHalving``: ASHA, and
asynchronous Hyperband with ``brackets > 1``).

The parameters are those of the other integrations: ``model`` (a model id), ``method`` (a label such as
``lora(lora_r=8)``) and each varied hyperparameter (``learning_rate``...); :func:`build_config_space` makes a Syne
Tune config space of them, :func:`~metaml_client._space.config_from_params` reads a trial's config as the
configuration. Method labels hold spaces and parentheses: give the ``LocalBackend`` ``pass_args_as_json=True`` and
read the config in the training script with ``syne_tune.utils.load_config_json``.

Runs are assumed to maximize the task's primary metric on the normalized scale (``score``, 0.91 not 91.0): build the
scheduler with ``do_minimize=False`` (Syne Tune then passes the searcher the negated metric, which it turns back).

    space = {"models": [{"id": "roberta-base"}], "methods": [{"name": "full"}, {"name": "lora", "lora_r": 8}],
             "hparams": {"learning_rate": {"low": 1e-5, "high": 1e-3, "log": True}}, "fixed": {"epochs": 3}}
    config_space = build_config_space(space, epochs=3)
    searcher = MetamlSearcher(url, None, "glue/sst2", space, config_space=config_space, max_resource=3)
    scheduler = AsynchronousSuccessiveHalving(config_space, metric="score", do_minimize=False, searcher=searcher,
                                              time_attr="epoch", max_t=3)
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Mapping
from typing import Any

import httpx
from syne_tune.config_space import Domain, choice, lograndint, loguniform, randint, uniform
from syne_tune.optimizer.schedulers.searchers.single_objective_searcher import SingleObjectiveBaseSearcher

from metaml_client._client import MetamlAPIError
from metaml_client._proposer import Evaluated, LazyProposer
from metaml_client._space import ParamSpec, config_from_params, draw_params, param_specs, params_key

__all__ = ["MetamlSearcher", "build_config_space", "config_from_params"]

log = logging.getLogger("metaml_client")


def _domain(spec: ParamSpec) -> Domain:
    if spec.kind == "choice":
        return choice(list(spec.choices))
    if spec.kind == "int":  # Syne Tune's bounds are both inclusive
        return lograndint(int(spec.low), int(spec.high)) if spec.log else randint(int(spec.low), int(spec.high))
    return loguniform(spec.low, spec.high) if spec.log else uniform(spec.low, spec.high)


def build_config_space(space: Mapping[str, Any], **constants: Any) -> dict[str, Any]:
    """A Syne Tune config space for ``space`` (the search space sent to ``/v1/suggest``): ``model`` and ``method``
    (labels) as ``choice``, each hyperparameter of ``space["hparams"]`` as a ``choice`` (a list of values) or a
    ``loguniform`` / ``uniform`` range (``lograndint`` / ``randint`` for integer hyperparameters), and ``constants``
    (what the training script needs besides: epochs, a data path...) as they are."""
    return {**{name: _domain(spec) for name, spec in param_specs(space).items()}, **constants}


class MetamlSearcher(SingleObjectiveBaseSearcher):
    """A Syne Tune searcher that asks ``/v1/suggest`` which configuration of a search space each new trial runs.

    The service is stateless: each suggestion sends the trials' final results as the history and steps around every
    configuration already suggested that has no final result yet (running, stopped early by the scheduler, or
    started without reporting). A final result is one passed to ``on_trial_complete`` (the FIFO scheduler), or, under
    a multi-fidelity scheduler (ASHA, Hyperband), one at ``resource_level >= max_resource``: **only final results are
    sent as scores**. A trial ASHA stopped at a lower rung is no score of its configuration (a partial curve): it is
    left out of the history and never proposed again. A trial that fails is sent as a failure. The runtime sent is
    the wall time from the suggestion to the final result, as the searcher sees it.

    When the service has nothing left to propose (or every candidate it proposes is already taken) ``suggest``
    answers None and the Syne Tune tuner ends the run ("searcher out of candidates"); running trials finish when the
    tuner waits for them (``wait_trial_completion_when_stopping=True``). Parameters of the config space outside
    ``space`` are drawn at random from their domains, and so is every parameter while the service cannot be reached
    (a connection error, a 5xx or 429 after the client's retries; a warning is logged): the space's parameters with
    the searcher's seeded generator, the others as Syne Tune's random searcher draws them.

    Args:
        url: the metaml server.
        task: the record's task part (None: accuracy).
        dataset: a dataset name or spec dict.
        space: the search space (as ``/v1/recommend`` takes it).
        config_space: the scheduler's config space (default :func:`build_config_space` of ``space``).
        api_key: sent with each request.
        max_resource: the multi-fidelity scheduler's ``max_t`` (None under the FIFO scheduler).
        source, max_false_skip, max_candidates, samples_per_point, seed: as :class:`~metaml_client.optuna.
            MetamlSampler` (how the server resolves the dataset, the skip rule's budget, the space's enumeration;
            ``seed`` seeds the searcher's random draws too).
        timeout: seconds per request.
    """

    def __init__(self, url: str, task: Mapping[str, Any] | None, dataset: str | Mapping[str, Any],
                 space: Mapping[str, Any], *, config_space: dict[str, Any] | None = None,
                 api_key: str | None = None, max_resource: float | None = None, source: str = "upload",
                 max_false_skip: float | None = None, max_candidates: int | None = None,
                 samples_per_point: int | None = None, seed: int = 0, timeout: float = 30.0) -> None:
        super().__init__(config_space if config_space is not None else build_config_space(space), random_seed=seed)
        self.space = dict(space)
        self._ask = LazyProposer(url, api_key, timeout, task, dataset, space, source=source,
                                 max_false_skip=max_false_skip, max_candidates=max_candidates,
                                 samples_per_point=samples_per_point, seed=seed)
        self.max_resource = max_resource
        self._names = tuple(param_specs(space))
        missing = [n for n in self._names if not isinstance(self.config_space.get(n), Domain)]
        if missing:
            raise ValueError(f"the config space lacks the space's parameters {', '.join(missing)} "
                             "(build it with build_config_space)")
        self._extra = {k: v for k, v in self.config_space.items() if k not in self._names and isinstance(v, Domain)}
        self.suggested: list[dict[str, Any]] = []  # in order: the n-th is the n-th trial of a fresh tuner
        self.trials: dict[int, dict[str, Any]] = {}  # trial id -> its parameters, from its results
        self.evaluated: list[Evaluated] = []
        self.finished = False
        self._final: set[str] = set()
        self._started: dict[str, float] = {}
        self._rng = random.Random(seed)

    def _extras(self) -> dict[str, Any]:
        """The config space's parameters outside the space, drawn as Syne Tune's random searcher draws them."""
        return {k: d.sample() for k, d in self._extra.items()}

    def suggest(self, **kwargs: Any) -> dict[str, Any] | None:
        if self.finished:
            return None
        taken = {params_key(p) for p in self.suggested} - self._final
        try:
            pick = self._ask().next(self.evaluated, taken)
        except (httpx.TransportError, MetamlAPIError) as e:
            if isinstance(e, MetamlAPIError) and e.status < 500 and e.status != 429:
                raise
            log.warning("metaml: /v1/suggest failed (%s); the next trial is drawn at random", e)
            params = draw_params(self.space, self._rng)
        else:
            if pick.params is None:
                self.finished = True
                log.info("metaml: the service has nothing left to propose%s",
                         "" if pick.done else " that is not already running or stopped")
                return None
            params = pick.params
        self.suggested.append(params)
        self._started.setdefault(params_key(params), time.monotonic())
        return {**params, **self._extras()}

    def _params(self, trial_id: int, config: Mapping[str, Any] | None) -> dict[str, Any] | None:
        if config is not None and all(n in config for n in self._names):
            self.trials[trial_id] = {n: config[n] for n in self._names}
        elif trial_id not in self.trials and 0 <= trial_id < len(self.suggested):
            self.trials[trial_id] = self.suggested[trial_id]  # a fresh tuner numbers trials as they are suggested
        return self.trials.get(trial_id)

    def _record(self, params: dict[str, Any], score: float | None) -> None:
        key = params_key(params)
        if key in self._final:
            return
        self._final.add(key)
        started = self._started.get(key)
        runtime = time.monotonic() - started if started is not None else None
        self.evaluated.append(Evaluated(params, score, runtime))

    def on_trial_result(self, trial_id: int, config: dict[str, Any], metric: float,
                        resource_level: float | None = None) -> None:
        params = self._params(trial_id, config)
        if params is None or resource_level is None:
            return  # an intermediate result of the FIFO scheduler: its final one comes to on_trial_complete
        if self.max_resource is None:
            raise ValueError("a multi-fidelity scheduler reports resource levels: give MetamlSearcher the "
                             "scheduler's max_t as max_resource")
        if resource_level >= self.max_resource:
            self._record(params, -float(metric))

    def on_trial_complete(self, trial_id: int, config: dict[str, Any], metric: float) -> None:
        params = self._params(trial_id, config)
        if params is not None:
            self._record(params, -float(metric))

    def on_trial_error(self, trial_id: int) -> None:
        params = self._params(trial_id, None)
        if params is not None:
            self._record(params, None)
