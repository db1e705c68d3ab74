"""The client keeps its own copy of the upload answer (it must not import the server): the copy has the server's
fields, with the same types and the same required / optional split."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import pytest

import metaml_client
from service.api import schemas


def _shape(cls: type, fields: dict[str, tuple[Any, bool]]) -> dict[str, tuple[str, bool]]:
    """name -> (type, required), nested answer classes named by their class name so both sides compare."""
    return {name: (str(tp).replace(f"{cls.__module__}.", "").replace("typing.", ""), required)
            for name, (tp, required) in fields.items()}


def _client(cls: type) -> dict[str, tuple[str, bool]]:
    hints = typing.get_type_hints(cls)
    return _shape(cls, {f.name: (hints[f.name], f.default is dataclasses.MISSING
                                 and f.default_factory is dataclasses.MISSING) for f in dataclasses.fields(cls)})


def _server(cls: type) -> dict[str, tuple[str, bool]]:
    return _shape(cls, {name: (info.rebuild_annotation(), info.is_required())
                        for name, info in cls.model_fields.items()})


@pytest.mark.parametrize("name", ["RecordStatus", "UploadResult"])
def test_client_answer_matches_the_server(name: str) -> None:
    """Same field names, same types (``list[RecordStatus]``, ``Literal['accepted', 'duplicate', 'rejected']``,
    ``str | None``...), same required fields."""
    client, server = _client(getattr(metaml_client, name)), _server(getattr(schemas, name))
    assert client == server
    assert client  # compared something


def test_the_comparison_sees_a_difference() -> None:
    """A client class that drifts (a type changed) is told apart."""

    @dataclasses.dataclass
    class RecordStatus:
        index: int
        locator: str
        status: str
        run_id: str | None = None
        uri: str | None = None
        field: str | None = None
        reason: str | None = None

    assert _client(RecordStatus) != _server(schemas.RecordStatus)
