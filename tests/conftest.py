"""Shared fixtures: where the public data lives, fresh knowledge bases on every backend (a DuckDB file, and a DuckLake
lakehouse on a throwaway PostgreSQL server), and a live server with a trained meta-model for the client tests."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from collector.store import KnowledgeBase
from metaml_client import Client
from service.testing import PostgresServer, ServerProcess, build_served_world, postgres_bindir

#: The store backends every store-level test runs against.
BACKENDS = ("duckdb", "ducklake")

REPO = Path(__file__).resolve().parents[1]
# Servers started by the tests serve LightGBM's trees: compiling them takes a core for a minute per model, so only the
# tests of compiled trees turn it on (tests/test_compiled.py).
os.environ.setdefault("METAML_COMPILE_TREES", "false")


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


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server for the lakehouse tests (one per test process). Skips where PostgreSQL is not
    installed, except under CI (``CI`` set), where its absence fails the run."""
    if postgres_bindir() is None:
        message = "PostgreSQL is not installed (apt-get install -y postgresql)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with PostgresServer() as server:
        yield server


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each store backend in turn."""
    return request.param


@pytest.fixture
def make_kb(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., KnowledgeBase]]:
    """``make_kb(name="kb")``: a new, not yet created knowledge base of the test's backend (a DuckDB file in the
    test's directory, or a lakehouse in a new PostgreSQL database with its files in the test's directory)."""
    made: list[KnowledgeBase] = []

    def make(name: str = "kb", **options: Any) -> KnowledgeBase:
        if backend == "duckdb":
            kb = KnowledgeBase(tmp_path / f"{name}.duckdb", **options)
        else:
            server: PostgresServer = request.getfixturevalue("postgres")
            kb = KnowledgeBase(server.lake(tmp_path / f"{name}-lake"), **options)
        made.append(kb)
        return kb

    yield make
    for kb in made:
        kb.close()


@pytest.fixture
def kb(make_kb: Callable[..., KnowledgeBase]) -> KnowledgeBase:
    """An empty knowledge base, on each backend in turn."""
    return make_kb()


@pytest.fixture(scope="session")
def served_world(public_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """As in test_service_predict: a knowledge base from the TransferGraph and OPDA DeBERTa files (SST-2 described),
    one small meta-model registered as version 1 and promoted; an admin key and a read key. Shared by the client
    tests (test_client, test_ray_tune): they add runs, so they compare counts before and after, never absolute ones."""
    return build_served_world(public_data, tmp_path_factory.mktemp("client"),
                              {"root": ["admin"], "reader": ["read"]}, evaluation={"spearman": 0.3})


@pytest.fixture(scope="session")
def served(served_world: dict[str, Any]) -> Iterator[ServerProcess]:
    """The server of :func:`served_world` (uvicorn in a child process)."""
    with ServerProcess(served_world["kb"].location, settings={"tracking_uri": served_world["uri"]}) as s:
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
