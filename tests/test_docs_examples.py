"""The example answers of docs/api.md are the service's: ``docs/examples.py`` regenerates them from a real run (a
small knowledge base of public files, a small registered meta-model, the app in this process), and this module runs
its check, holds every interval the examples show within the metric's scale, and reads every interval written in
the doc."""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "api.md"
#: Keys of a value in points (the primary metric x 100) in the answers.
_POINTS = re.compile(r'"(\w*points(?:_lo|_hi)?)": (-?\d+(?:\.\d+)?(?:e-?\d+)?)')


def _script() -> ModuleType:
    """``docs/examples.py`` as a module (registered: its dataclasses look their module up)."""
    spec = importlib.util.spec_from_file_location("docs_examples", ROOT / "docs" / "examples.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return _script()


@pytest.fixture(scope="module")
def exchanges(script: ModuleType, public_data: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    """Every example request of the doc, answered by the service over the script's setup."""
    return script.collect(script.build(public_data, tmp_path_factory.mktemp("doc-examples")))


def _intervals(value: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every object of an answer that holds a ``points_lo``..``points_hi`` interval: (where, the object)."""
    if isinstance(value, dict):
        if "points_lo" in value and "points_hi" in value:
            yield ".".join(path), value
        for k, v in value.items():
            yield from _intervals(v, (*path, str(k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _intervals(v, (*path, str(i)))


def test_the_docs_example_answers_are_what_the_service_answers(script: ModuleType, exchanges: list[Any]) -> None:
    """docs/api.md holds, between its markers, exactly the requests the script sends and the answers the service
    gives now (abridged the script's way): the same text ``python docs/examples.py`` would write."""
    diff = script.stale_diff(DOC, exchanges)
    assert not diff, f"docs/api.md's examples are stale: run `python docs/examples.py`\n{diff}"


def test_every_interval_of_the_examples_lies_within_the_metric_scale(exchanges: list[Any]) -> None:
    """Each example's task is scored by accuracy (the default), so every interval the answers hold (predict,
    recommend, suggest, decide/curve) lies within 0..100 points and holds its prediction."""
    found = [(e.example.name, where, item) for e in exchanges for where, item in _intervals(e.answer)]
    assert {name for name, _, _ in found} >= {"predict", "recommend", "suggest", "decide-curve"}
    for name, where, item in found:
        lo, hi = item["points_lo"], item["points_hi"]
        center = item.get("points", item.get("predicted_points"))
        assert 0.0 <= lo <= center <= hi <= 100.0, f"{name} {where}: {lo} .. {center} .. {hi} leaves 0..100"


def test_no_value_in_points_written_in_the_doc_leaves_the_scale() -> None:
    """Every value in points the doc writes (inside the generated examples or not) lies within 0..100: the doc's
    examples are all scored by accuracy."""
    values = _POINTS.findall(DOC.read_text(encoding="utf-8"))
    assert len(values) > 10
    outside = [(key, value) for key, value in values if not 0.0 <= float(value) <= 100.0]
    assert not outside, f"docs/api.md writes points outside 0..100: {outside}"
