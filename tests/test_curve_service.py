"""Stopping runs from their partial curves over HTTP: `POST /v1/decide/curve` on a live server whose artifact holds
the curve estimator (fit on the real OPDA and PEFT comparison curves), through the sync and async clients, and
Optuna's `MetamlPruner` in a real study whose trials replay real OPDA MultiNLI runs."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from metaml_client import AsyncClient, Client, MetamlAPIError
from service.testing import ServerProcess

MNLI = "opda|glue/mnli|accuracy|full"


@pytest.fixture(scope="module")
def world(public_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from factories import curve_knowledge_base, curve_model_artifact

    from metaml._curves import load_curve_runs
    from service.keys import create_key

    work = tmp_path_factory.mktemp("curve-service")
    kb = curve_knowledge_base(public_data, work)
    artifact = curve_model_artifact(kb, work / "model")
    key = create_key(work / "keys.db", "tuner", ["read"])[1]
    opda = load_curve_runs(kb)
    opda = opda[opda["task_key"] == MNLI].reset_index(drop=True)
    settings = {"model_path": artifact, "tracking_uri": f"sqlite:///{work / 'no-registry' / 'mlflow.db'}"}
    with ServerProcess(kb.path, settings=settings) as server:
        yield {"url": server.url, "key": key, "opda": opda}


def _run(opda: pd.DataFrame, i: int) -> dict[str, Any]:
    """OPDA run ``i`` as a client sends it: {step: accuracy}, its planned steps, its final score."""
    p, v = opda["curve_progress"][i], opda["curve_points"][i]
    total = int(opda["hparams_max_steps"][i])
    return {"curve": {round(float(x) * total): float(y) / 100 for x, y in zip(p, v, strict=True)},
            "total_steps": total, "score": float(opda["points"][i]) / 100}


def _partial(run: dict[str, Any], share: float) -> dict[int, float]:
    return {s: v for s, v in run["curve"].items() if s <= share * run["total_steps"]}


def _collapsed_and_good(opda: pd.DataFrame) -> tuple[list[int], list[int]]:
    """Runs that ended at chance level after a first evaluation above 60% (they diverged), and the best runs."""
    first = opda["curve_points"].map(lambda v: v[0])
    collapsed = opda.index[(opda["points"] < 40) & (first > 60)].tolist()
    good = opda["points"].sort_values(ascending=False).index[:8].tolist()
    return collapsed, good


def test_decide_curve_stops_a_diverged_run_and_continues_a_good_one(world: dict[str, Any]) -> None:
    """With three finished good runs as history: a run that fell to chance level by a third of its training is
    stopped (P(above) under the threshold), a top run at the same point continues; the answer states the model, the
    progress and its basis; points and scores give the same answer; the async client agrees."""
    opda = world["opda"]
    collapsed, good = _collapsed_and_good(opda)
    history = [_run(opda, i) for i in good[3:6]]
    incumbent = max(h["score"] for h in history)
    bad = _run(opda, collapsed[0])
    with Client(world["url"], api_key=world["key"], timeout=60) as c:
        stop = c.decide_curve(None, "glue/mnli", _partial(bad, 0.35), incumbent, total_steps=bad["total_steps"],
                              history=history, source="opda")
        top = _run(opda, good[0])
        go = c.decide_curve(None, "glue/mnli", _partial(top, 0.35), incumbent - 0.01, total_steps=top["total_steps"],
                            history=history, source="opda")
        in_points = c.decide_curve(None, "glue/mnli", {s: 100 * v for s, v in _partial(bad, 0.35).items()},
                                   100 * incumbent, total_steps=bad["total_steps"], unit="points",
                                   history=[{**h, "curve": {s: 100 * v for s, v in h["curve"].items()},
                                             "score": 100 * h["score"]} for h in history], source="opda")
    assert stop.stop and stop.p_above < stop.threshold == stop.stated_error_rate == 0.05
    assert 0.2 < stop.progress <= 0.35 and stop.n_history == 3 and "recalibrated on 3 finished runs" in stop.basis
    assert stop.points_lo <= stop.predicted_points <= stop.points_hi and stop.predicted_points < 60
    for answer in (stop, go, in_points):  # intervals on the accuracy's scale, whatever the estimator's spread
        assert 0.0 <= answer.points_lo <= answer.points_hi <= 100.0
    assert stop.curve_model["n_train_rows"] > 1000 and stop.curve_model["interval_level"] == pytest.approx(0.8)
    assert not go.stop and go.p_above > stop.p_above
    assert in_points.action == stop.action and in_points.p_above == pytest.approx(stop.p_above)

    async def ask() -> Any:
        async with AsyncClient(world["url"], api_key=world["key"], timeout=60) as ac:
            return await ac.decide_curve(None, "glue/mnli", _partial(bad, 0.35), incumbent,
                                         total_steps=bad["total_steps"], history=history, source="opda")

    assert asyncio.run(ask()).p_above == pytest.approx(stop.p_above)


def test_decide_curve_refuses_what_it_cannot_place(world: dict[str, Any]) -> None:
    """A curve by steps without the planned total, a curve whose only point is at step 0, a point with neither step
    nor epoch and a finished run without a score are 422 answers that say what is missing."""
    with Client(world["url"], api_key=world["key"], timeout=60, retries=0) as c:
        with pytest.raises(MetamlAPIError) as e:
            c.decide_curve(None, "glue/mnli", {1000: 0.8}, 0.85)
        assert e.value.status == 422 and "total_steps" in str(e.value)
        with pytest.raises(MetamlAPIError) as e:
            c.decide_curve(None, "glue/mnli", {0: 0.8}, 0.85, total_steps=100)
        assert e.value.status == 422 and "after the start of training" in str(e.value)
    body = {"dataset": {"name": "glue/mnli"}, "incumbent": 0.85, "curve": {"points": [{"value": 0.8}]}}
    r = httpx.post(f"{world['url']}/v1/decide/curve", json=body, headers={"Authorization": f"Bearer {world['key']}"})
    assert r.status_code == 422 and "step" in r.text
    body = {"dataset": {"name": "glue/mnli"}, "incumbent": 0.85,
            "curve": {"points": [{"step": 10, "value": 0.8}], "total_steps": 100},
            "history": [{"curve": {"points": [{"step": 10, "value": 0.8}]}}]}
    r = httpx.post(f"{world['url']}/v1/decide/curve", json=body, headers={"Authorization": f"Bearer {world['key']}"})
    assert r.status_code == 422 and "score" in r.text


def test_optuna_pruner_prunes_diverged_trials(world: dict[str, Any]) -> None:
    """A real Optuna study whose trials replay real OPDA runs (reporting accuracy at each evaluation, the step being
    the percent of training done): good runs complete, runs that diverged to chance level are pruned before their
    end, every decision is kept with its probability."""
    optuna = pytest.importorskip("optuna")
    from metaml_client.optuna import MetamlPruner

    opda = world["opda"]
    collapsed, good = _collapsed_and_good(opda)
    order = [good[1], good[2], good[4], *collapsed[:6], good[0]]

    def objective(trial: Any) -> float:
        i = order[trial.number]
        p, v = opda["curve_progress"][i], opda["curve_points"][i]
        reported: set[int] = set()
        for x, y in zip(p[:-1], v[:-1], strict=True):
            step = max(1, round(100 * float(x)))
            if step in reported:  # dense curves: one report per percent of training
                continue
            reported.add(step)
            trial.report(float(y) / 100, step=step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return float(opda["points"][i]) / 100

    with Client(world["url"], api_key=world["key"], timeout=60) as c:
        pruner = MetamlPruner(c, None, "glue/mnli", total_steps=100, source="opda", min_completed=2)
        study = optuna.create_study(direction="maximize", pruner=pruner, sampler=optuna.samplers.RandomSampler(0))
        study.optimize(objective, n_trials=len(order))
    states = [t.state for t in study.trials]
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert states[:3] == [optuna.trial.TrialState.COMPLETE] * 3 and states[-1] == optuna.trial.TrialState.COMPLETE
    assert len(pruned) >= 5 and all(t.number in range(3, 9) for t in pruned)
    assert all(max(t.intermediate_values) < 100 for t in pruned)
    assert pruner.pruned == len(pruned) and all(pruner.decisions[t.number].stop for t in pruned)
    assert study.best_value == pytest.approx(max(float(opda["points"][i]) / 100 for i in order))
    assert np.all([0 < d.p_above < 1 for d in pruner.decisions.values()])


def test_pruner_never_prunes_on_a_failed_request(world: dict[str, Any]) -> None:
    """A server that cannot be reached: the pruner warns and lets the trial run."""
    optuna = pytest.importorskip("optuna")
    from metaml_client.optuna import MetamlPruner

    with Client("http://127.0.0.1:9", timeout=2, retries=0) as c:
        pruner = MetamlPruner(c, None, "glue/mnli", total_steps=10)
        study = optuna.create_study(direction="maximize", pruner=pruner)

        def objective(trial: Any) -> float:
            for step in range(1, 4):
                trial.report(0.1 * step, step)
                if trial.should_prune():
                    raise optuna.TrialPruned()
            return 0.5

        with pytest.warns(UserWarning, match="no pruning decision"):
            study.optimize(objective, n_trials=2)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
