"""The layers import one way (collector <- metaml <- service) and packages export what they declare."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "collector": {"metaml", "service", "metaml_client"},
    "metaml": {"service", "metaml_client"},
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
    """No module of collector imports metaml or service; no module of metaml imports service."""
    offenders = {
        str(p.relative_to(REPO)): sorted(_imports(p) & FORBIDDEN[package])
        for p in (REPO / package).rglob("*.py")
        if _imports(p) & FORBIDDEN[package]
    }
    assert offenders == {}


@pytest.mark.parametrize("module", ["collector.schema", "collector.store", "collector.ingest", "collector.formats",
                                   "collector.features", "metaml_client", "metaml_client.optuna",
                                   "metaml_client.ray_tune", "metaml_client.syne_tune"])
def test_exported_names_match_all(module: str) -> None:
    """Every name in a package's __all__ exists, and every public name it defines at top level is in __all__."""
    mod = importlib.import_module(module)
    declared = set(getattr(mod, "__all__", []))
    assert declared, f"{module} declares no __all__"
    assert all(hasattr(mod, n) for n in declared)
    public = {n for n, v in vars(mod).items() if not n.startswith("_") and getattr(v, "__module__", "").startswith(
        module) and not isinstance(v, type(mod))}
    assert public <= declared, sorted(public - declared)
