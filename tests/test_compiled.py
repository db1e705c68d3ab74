"""Compiled trees (metaml._compiled): the same answers as LightGBM, a cache that is reused and refuses damaged
libraries, and a server that swaps them in after it starts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from collector.schema import DatasetMeta
from metaml import _compiled
from metaml._compiled import CompileError, compile_model, compiled_model
from metaml._data import load_runs
from metaml._estimators import CostEstimator, FailureEstimator, MetaModel, OutcomeEstimator
from metaml.serving import candidate_rows, task_row
from service.testing import ServerProcess, sample_candidates, served_knowledge_base

pytestmark = pytest.mark.skipif(not _compiled.available(), reason="the tree compiler (lleaves) is not installed")


@pytest.fixture(scope="module")
def world(public_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A small meta-model on the real TransferGraph and OPDA runs, compiled once into a cache."""
    from metaml._artifact import save_model

    work = tmp_path_factory.mktemp("compiled")
    kb = served_knowledge_base(public_data, work)
    model = MetaModel(outcome=OutcomeEstimator(n_estimators=30), cost=CostEstimator(n_estimators=30),
                      failure=FailureEstimator(n_estimators=30)).fit(load_runs(kb))
    save_model(model, work / "model", metadata={})
    cache = work / "cache"
    started = time.perf_counter()
    libraries = compile_model(model, cache)
    return {"work": work, "kb": kb, "model": model, "cache": cache, "libraries": libraries,
            "compile_s": time.perf_counter() - started}


def _rows(n: int) -> Any:
    row = task_row({"primary_metric": "accuracy"}, {"name": "glue/sst2"})
    return candidate_rows(row, sample_candidates(n, seed=n))


def test_compiled_trees_answer_as_lightgbm_does(world: dict[str, Any]) -> None:
    model = world["model"]
    assert set(world["libraries"]) == {"ranker", "level", "difficulty", "cost", "failure"}
    fast = compiled_model(model, world["cache"])
    assert isinstance(fast.outcome_.ranker_, _compiled.CompiledEstimator)
    assert not isinstance(model.outcome_.ranker_, _compiled.CompiledEstimator)  # the original is untouched
    rows = _rows(500)
    ours, theirs = fast.predict_arrays(rows), model.predict_arrays(rows)
    for name in ("points", "lo", "hi", "rank_score", "runtime_s", "p_fail"):
        np.testing.assert_allclose(ours[name], theirs[name], rtol=0, atol=1e-9, err_msg=name)
    assert np.ptp(theirs["points"]) > 0  # the check compares varied answers, not one constant


def test_the_cache_is_reused_and_a_damaged_library_is_refused(world: dict[str, Any], tmp_path: Path) -> None:
    model = world["model"]
    before = {name: path.stat().st_mtime_ns for name, path in world["libraries"].items()}
    started = time.perf_counter()
    again = compile_model(model, world["cache"])
    assert again == world["libraries"]
    assert {name: path.stat().st_mtime_ns for name, path in again.items()} == before
    assert time.perf_counter() - started < world["compile_s"] / 2  # nothing was compiled again

    damaged = tmp_path / "cache"
    damaged.mkdir()
    for path in world["cache"].iterdir():
        (damaged / path.name).write_bytes(path.read_bytes())
    (damaged / world["libraries"]["level"].name).write_bytes(b"not a library")
    with pytest.raises(CompileError, match=r"level-.*does not match the digest"):
        compiled_model(model, damaged)
    with pytest.raises(CompileError, match="no compiled library"):
        compiled_model(model, tmp_path / "empty")


def test_a_server_swaps_in_the_compiled_trees_with_the_same_answers(world: dict[str, Any]) -> None:
    settings = {"model_path": world["work"] / "model", "compile_trees": True, "compiled_cache": world["cache"]}
    configs = sample_candidates(200, seed=7)
    body = {"dataset": {"name": "glue/sst2"}, "candidates": configs}
    with ServerProcess(world["kb"].path, settings=settings) as server, \
            httpx.Client(base_url=server.url, timeout=60) as c:
        deadline = time.monotonic() + 120
        while not (answer := c.post("/v1/predict", json=body).json())["model"]["compiled_trees"]:
            assert time.monotonic() < deadline, "the compiled trees were never served"
            time.sleep(0.5)
    meta = DatasetMeta.model_validate({k: v for k, v in answer["task"]["meta"].items() if v is not None})
    expected = world["model"].predict(candidate_rows(task_row({"primary_metric": "accuracy"}, {"name": "glue/sst2"},
                                                              dataset_meta=meta), configs))
    np.testing.assert_allclose([p["points"] for p in answer["predictions"]], expected["points"], atol=1e-9)
    np.testing.assert_allclose([p["p_fail"] for p in answer["predictions"]], expected["p_fail"], atol=1e-9)


def test_a_failed_compilation_leaves_lightgbm_serving(world: dict[str, Any], tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """Compiling into a cache that cannot be created (a file stands where the directory should be) is logged and
    changes nothing: the holder keeps serving the model on LightGBM's trees."""
    from service.api.predictor import LoadedModel, ModelHolder, compile_later
    from service.settings import Settings

    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    loaded = LoadedModel(model=world["model"], metadata={}, source="path")
    holder = ModelHolder(loaded)
    settings = Settings(kb=str(world["kb"].path), compile_trees=True, compiled_cache=blocker / "cache")
    with caplog.at_level("WARNING", logger="metaml.service"):
        thread = compile_later(holder, loaded, settings)
        assert thread is not None
        thread.join(60)
    assert holder.current is loaded and not holder.current.compiled
    assert "serving LightGBM's trees" in caplog.text
    assert compile_later(holder, loaded, Settings(kb=str(world["kb"].path), compile_trees=False)) is None


def test_promotion_compiles_into_the_servers_cache(world: dict[str, Any], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """`metaml models promote N` compiles the version's trees into the cache its servers read (here the one compiled
    already: nothing is compiled twice), and says where; --no-compile only moves the alias."""
    from click.testing import CliRunner

    from metaml._tracking import log_model_version
    from service.cli.models import models

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    log_model_version(world["model"], {}, tracking_uri=uri)
    before = {p.name: p.stat().st_mtime_ns for p in world["cache"].iterdir()}
    monkeypatch.setenv("METAML_COMPILED_CACHE", str(world["cache"]))
    runner = CliRunner()
    done = runner.invoke(models, ["promote", "1", "--tracking-uri", uri, "--kb", str(world["kb"].path), "--compile"])
    assert done.exit_code == 0, done.output
    assert f"its trees are compiled in {world['cache']}" in done.stderr
    assert {p.name: p.stat().st_mtime_ns for p in world["cache"].iterdir()} == before
    skipped = runner.invoke(models, ["promote", "1", "--tracking-uri", uri, "--no-compile"])
    assert skipped.exit_code == 0 and "compiled" not in skipped.stderr
