"""The OpenAPI document: a snapshot of its surface (paths, operation ids, parameters, body types, answers) catches
accidental API changes, and property-based tests generated from it (schemathesis + hypothesis) against the running
server find no 5xx answer.

To accept an intended API change: ``METAML_UPDATE_SNAPSHOTS=1 pytest tests/test_service_openapi.py``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.api import create_app
from service.keys import create_key
from service.settings import Settings
from service.testing import ServerProcess

SNAPSHOT = Path(__file__).parent / "snapshots" / "openapi.json"
EXAMPLES_PER_MODE = 40


def surface(schema: dict[str, Any]) -> dict[str, Any]:
    """What clients depend on: per path and method, the operation id, parameters, body media types and statuses."""
    out: dict[str, Any] = {}
    for path, ops in sorted(schema["paths"].items()):
        for method, op in sorted(ops.items()):
            out.setdefault(path, {})[method] = {
                "operationId": op["operationId"],
                "parameters": sorted(f"{p['in']}:{p['name']}{'!' if p.get('required') else ''}"
                                     for p in op.get("parameters", [])),
                "requestBody": sorted(op.get("requestBody", {}).get("content", {})),
                "responses": sorted(op.get("responses", {})),
                "security": sorted(k for s in op.get("security", []) for k in s),
            }
    return {"paths": out, "schemas": sorted(schema.get("components", {}).get("schemas", {}))}


def _operations() -> list[tuple[str, str]]:
    """(method, path) of every operation the app declares (building the app touches no file)."""
    schema = create_app(Settings(kb=Path("unused") / "kb.duckdb")).openapi()
    return [(method, path) for path, ops in schema["paths"].items() for method in ops]


def test_openapi_matches_snapshot(tmp_path: Path) -> None:
    """The generated OpenAPI surface equals tests/snapshots/openapi.json, operation ids are unique, and every /v1
    operation documents the error body."""
    schema = create_app(Settings(kb=tmp_path / "kb.duckdb")).openapi()
    current = surface(schema)
    if os.environ.get("METAML_UPDATE_SNAPSHOTS"):
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(json.dumps(current, indent=2) + "\n")
    assert current == json.loads(SNAPSHOT.read_text()), "API changed: update the snapshot if intended"
    ids = [op["operationId"] for ops in current["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    for path, ops in current["paths"].items():
        if path.startswith("/v1/"):
            assert all({"401", "422"} <= set(op["responses"]) for op in ops.values()), path


def _tiny_model(directory: Path) -> Path:
    """A meta-model artifact fitted on a few factory records, and a curve estimator on random curve inputs, so that
    the prediction endpoints answer."""
    import numpy as np
    import pandas as pd
    from factories import record

    from collector.schema import RunRecord, to_row
    from metaml._artifact import save_model
    from metaml._curves import INPUTS, CurveEstimator
    from metaml._data import LEARN_COLUMNS
    from metaml._estimators import CostEstimator, FailureEstimator, MetaModel, OutcomeEstimator

    runs = pd.DataFrame([to_row(RunRecord.model_validate(record(i, dataset__name=f"fuzz/{i % 4}",
                                                                hparams__learning_rate=1e-5 * (1 + i))))
                         for i in range(80)])[list(LEARN_COLUMNS)]
    model = MetaModel(outcome=OutcomeEstimator(n_estimators=5, min_child_samples=2),
                      cost=CostEstimator(n_estimators=5), failure=FailureEstimator(n_estimators=5)).fit(runs)
    rng = np.random.default_rng(0)
    inputs = rng.uniform(0, 100, (60, len(INPUTS)))
    curve = CurveEstimator(n_estimators=5, min_child_samples=2).fit(inputs, inputs[:, 0] + rng.normal(0, 2, 60))
    return save_model(model, directory, curve=curve)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A running server with a (tiny) meta-model and an admin key (so generated requests reach past authentication
    and into the prediction endpoints)."""
    work = tmp_path_factory.mktemp("service-fuzz")
    _, key = create_key(work / "keys.db", "fuzzer", ["admin"])
    settings = {"sql_timeout_s": 5, "max_batch_records": 200, "model_path": _tiny_model(work / "model"),
                "tracking_uri": f"sqlite:///{work / 'no-registry' / 'mlflow.db'}", "max_predict_candidates": 200,
                "max_recommend_candidates": 500, "max_sample_rows": 200}
    with ServerProcess(work / "kb.duckdb", settings=settings) as s:
        yield s.url, key


@pytest.fixture(scope="module")
def api_schema(live: tuple[str, str]) -> Any:
    import schemathesis

    url, _ = live
    return schemathesis.openapi.from_url(f"{url}/openapi.json")


def test_served_openapi_is_the_generated_one(live: tuple[str, str], tmp_path: Path) -> None:
    """The server serves the same document the app factory generates."""
    served = httpx.get(f"{live[0]}/openapi.json").json()
    assert surface(served) == surface(create_app(Settings(kb=tmp_path / "kb.duckdb")).openapi())


@pytest.mark.parametrize(("method", "path"), _operations())
def test_generated_requests_get_no_server_error(api_schema: Any, live: tuple[str, str], method: str,
                                                path: str) -> None:
    """Requests generated from the OpenAPI document, valid and invalid (schemathesis), bounded to a few dozen per
    operation, never get a 5xx answer; every error answer carries the error body."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    url, key = live
    operation = api_schema[path][method]
    headers = {"Authorization": f"Bearer {key}"}
    failures: list[str] = []

    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        @settings(max_examples=EXAMPLES_PER_MODE, deadline=None, database=None, derandomize=True,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            # the explicit auth tests cover keys; here every request carries the admin key and nothing else
            case.headers = {k: v for k, v in (case.headers or {}).items()
                            if k.lower() not in ("authorization", "x-api-key")}
            response = case.call(base_url=url, headers=headers, timeout=30)
            if response.status_code >= 500:
                failures.append(f"{response.status_code} for {case.as_curl_command(headers=headers)}: "
                                f"{response.text[:300]}")
            elif response.status_code >= 400:
                body = response.json()
                assert set(body) == {"error"} or path == "/readyz", body
        try:
            run()
        except Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE  # nothing to make invalid: no parameters, no body
    assert not failures, "\n".join(failures[:5])
