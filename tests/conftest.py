"""Shared fixtures: where the public data lives, fresh knowledge bases, and a live server with a trained meta-model
for the client tests."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from collector.store import KnowledgeBase
from metaml_client import Client
from service.testing import ServerProcess

REPO = Path(__file__).resolve().parents[1]


def public_data_root() -> Path:
    """``$METAML_PUBLIC_DATA`` or ``../shared/data`` beside the checkout."""
    return Path(os.environ.get("METAML_PUBLIC_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def public_data() -> Path:
    """The real public data (never copied into the project); skips when absent."""
    root = public_data_root()
    if not (root / "metadatasets").is_dir():
        pytest.skip(f"public data not found at {root} (set METAML_PUBLIC_DATA)")
    return root


@pytest.fixture
def kb(tmp_path: Path) -> KnowledgeBase:
    """An empty knowledge base in a fresh directory."""
    return KnowledgeBase(tmp_path / "kb.duckdb")


@pytest.fixture(scope="session")
def served_world(public_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """As in test_service_predict: a knowledge base from the TransferGraph and OPDA DeBERTa files (SST-2 described),
    one small meta-model registered as version 1 and promoted; an admin key and a read key. Shared by the client
    tests (test_client, test_ray_tune): they add runs, so they compare counts before and after, never absolute ones."""
    from factories import served_knowledge_base

    from metaml._artifact import snapshot_id
    from metaml._data import load_runs
    from metaml._estimators import MetaModel, OutcomeEstimator
    from metaml._tracking import log_model_version, promote
    from service.keys import create_key

    work = tmp_path_factory.mktemp("client")
    kb = served_knowledge_base(public_data, work)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    model = MetaModel(outcome=OutcomeEstimator(n_estimators=50, random_state=0), random_state=0).fit(load_runs(kb))
    log_model_version(model, {"kb_snapshot": snapshot_id(kb), "evaluation": {"spearman": 0.3}}, tracking_uri=uri)
    promote(1, tracking_uri=uri)
    keys = {name: create_key(work / "keys.db", name, scopes)[1]
            for name, scopes in {"root": ["admin"], "reader": ["read"]}.items()}
    return {"work": work, "kb": kb, "uri": uri, "keys": keys}


@pytest.fixture(scope="session")
def served(served_world: dict[str, Any]) -> Iterator[ServerProcess]:
    """The server of :func:`served_world` (uvicorn in a child process)."""
    with ServerProcess(served_world["kb"].path, settings={"tracking_uri": served_world["uri"]}) as s:
        yield s


@pytest.fixture(scope="session")
def served_with_keys(served_world: dict[str, Any]) -> Iterator[ServerProcess]:
    """The server of :func:`served_world` with ``read_requires_key``: every operation but health checks needs a
    key (the examples' key hint is tested against it)."""
    with ServerProcess(served_world["kb"].path, settings={"tracking_uri": served_world["uri"],
                                                           "read_requires_key": True}) as s:
        yield s


@pytest.fixture(scope="session")
def served_client(served: ServerProcess, served_world: dict[str, Any]) -> Iterator[Client]:
    """A client of :func:`served` with the admin key."""
    with Client(served.url, api_key=served_world["keys"]["root"], timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    """A Ray instance of this test module alone (two CPUs, its own short temp dir: socket paths stay short)."""
    ray = pytest.importorskip("ray")
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=temp, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
