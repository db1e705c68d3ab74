"""Shared fixtures: where the public data lives, and fresh knowledge bases."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from collector.store import KnowledgeBase

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
