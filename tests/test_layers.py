"""The layers import one way (collector <- metaml <- service), the libraries have no command line or HTTP code (every
command is in service.cli, every route in service.api), and packages export what they declare."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: The outer layer's frameworks: command line (click) and HTTP (FastAPI, Starlette, uvicorn).
OUTER = {"click", "fastapi", "starlette", "uvicorn"}
FORBIDDEN = {
    "collector": {"metaml", "service", "metaml_client", *OUTER},
    "metaml": {"service", "metaml_client", *OUTER},
    # the client is installed without the server's dependencies
    "metaml_client": {"collector", "metaml", "service", "pandas", "duckdb", "numpy", "pyarrow", "lightgbm", "sklearn"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_lower_layers_never_import_higher_ones(package: str) -> None:
    """No module of collector imports metaml or service; no module of metaml imports service; neither imports click,
    FastAPI, Starlette or uvicorn (they are libraries: their commands and routes live in service)."""
    offenders = {
        str(p.relative_to(REPO)): sorted(_imports(p) & FORBIDDEN[package])
        for p in (REPO / package).rglob("*.py")
        if _imports(p) & FORBIDDEN[package]
    }
    assert offenders == {}


@pytest.mark.parametrize("module", ["collector.schema", "collector.store", "collector.ingest", "collector.formats",
                                   "collector.features", "collector.importers.hf", "metaml_client",
                                   "metaml_client.optuna", "metaml_client.ray_tune", "metaml_client.syne_tune"])
def test_exported_names_match_all(module: str) -> None:
    """Every name in a package's __all__ exists, and every public name it defines at top level is in __all__."""
    mod = importlib.import_module(module)
    declared = set(getattr(mod, "__all__", []))
    assert declared, f"{module} declares no __all__"
    assert all(hasattr(mod, n) for n in declared)
    public = {n for n, v in vars(mod).items() if not n.startswith("_") and getattr(v, "__module__", "").startswith(
        module) and not isinstance(v, type(mod))}
    assert public <= declared, sorted(public - declared)


def test_every_command_is_in_the_service_command_line() -> None:
    """The click commands are defined under service/cli/ only, and the root command registers every one of them."""
    import click

    from service.cli import cli

    defining = sorted(str(p.relative_to(REPO)) for pkg in ("collector", "metaml", "service")
                      for p in (REPO / pkg).rglob("*.py") if "click" in _imports(p))
    assert defining and all(p.startswith("service/cli/") for p in defining), defining
    assert set(cli.commands) >= {"ingest", "formats", "kb", "harvest", "describe", "evaluate", "train", "models",
                                 "bench", "serve", "keys", "quickstart"}
    assert all(isinstance(c, click.Command) for c in cli.commands.values())
