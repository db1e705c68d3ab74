"""Optuna helpers: warm-start a study with the meta-learner's recommendations, skip unpromising trials, prune trials
from their partial learning curves (:class:`MetamlPruner`), and report finished trials back to the knowledge base.

The parameters follow the recommendation's own names: ``model`` (a model id), ``method`` (a label such as ``full``
or ``lora(lora_r=8)``, see :func:`method_label`) and each varied hyperparameter (``learning_rate``...). An objective
suggests them under those names and turns them into a configuration with :func:`config_from_params`.

Studies are assumed to maximize the task's primary metric on the normalized scale (``score``, 0.91 not 91.0).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import optuna

from metaml_client._client import Client, CurveDecision, Decision, MetamlAPIError, Recommendation, UploadResult
from metaml_client._space import config_from_params, method_label

__all__ = ["MetamlPruner", "SkipUnpromising", "config_from_params", "method_label", "report_back", "warm_start"]

CONFIG_ATTR = "metaml_config"
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
    provenance source ``optuna`` and the study and trial number as locator. Needs the ``write`` scope."""
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
