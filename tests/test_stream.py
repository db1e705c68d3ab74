"""The streaming splitters of JSON arrays and JSON Lines: the same items whatever the chunking, syntax errors found,
items too long or too deep reported with their field without being kept or parsed, no recursion."""

from __future__ import annotations

import json
import random

import pytest
from factories import record

from collector.errors import FormatError
from collector.formats import JsonArraySplitter, LineSplitter, Piece, RawRecord, Rejected, parse_piece


def _split(doc: bytes, chunk: int, **kwargs: int) -> list[Piece]:
    splitter = JsonArraySplitter(**kwargs)
    out: list[Piece] = []
    for i in range(0, len(doc), chunk):
        out.extend(splitter.feed(doc[i:i + chunk]))
    out.extend(splitter.close())
    return out


TRICKY = [1, 'a\\"b]', {"x": "]}\\\\", "y": "\\u00e9\u202e"}, [1, [2, {"z": '"{'}]], None, True, -1.5e3, "", {}, []]


@pytest.mark.parametrize("doc", [[record(i) for i in range(12)], TRICKY, [], [record(1)]])
@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1 << 20])
def test_items_are_the_same_whatever_the_chunking(doc: list, chunk: int) -> None:
    """Fed in chunks of any size (strings, escapes and brackets cut anywhere), the splitter yields exactly the
    items json.loads finds, in order, located as item <i>."""
    for indent in (None, 2):
        text = json.dumps(doc, indent=indent).encode()
        pieces = _split(text, chunk)
        assert [json.loads(p.text) for p in pieces] == doc
        assert [p.locator for p in pieces] == [f"item {i}" for i in range(len(doc))]


def test_a_lone_object_is_one_record() -> None:
    pieces = _split(json.dumps(record(3)).encode(), 5, max_depth=32)
    assert len(pieces) == 1 and json.loads(pieces[0].text) == record(3) and pieces[0].locator == "item 0"


@pytest.mark.parametrize(("doc", "message"), [
    (b"", "empty"),
    (b"   ", "empty"),
    (b"[1,]", "expected an item"),
    (b"[,1]", "expected an item"),
    (b"[1 2]", "expected ',' or ']'"),
    (b"[1] [2]", "after the end"),
    (b"x", "expected a JSON array"),
    (b"[1,2", "truncated"),
    (b'[{"a": "b"}', "truncated"),
    (b'["abc]', "truncated"),
])
def test_a_malformed_array_is_an_error_with_its_place(doc: bytes, message: str) -> None:
    for chunk in (1, 3, 100):
        with pytest.raises(FormatError, match=message):
            _split(doc, chunk)


def test_long_and_deep_items_are_reported_with_their_field_unkept() -> None:
    """An item past the size limit and one past the depth limit come out as problems naming where they broke the
    limit (dataset.name, method.config); the items around them are intact; 100,000 nested arrays need no
    recursion."""
    deep = json.dumps(record(2)).replace('"method": {', '"method": {"config": ' + '{"a": ' * 5000 + "1" + "}" * 5000
                                         + ", ", 1)
    doc = ("[" + ",".join([json.dumps(record(1, dataset__name="x" * 3000)), deep, json.dumps(record(3))]) + "]")
    pieces = _split(doc.encode(), 4096, max_item_bytes=2000, max_depth=32)
    assert [(p.text is None, p.field) for p in pieces] == [(True, "dataset.name"), (True, "method.config"),
                                                          (False, None)]
    assert "exceeds the 2,000-byte limit" in pieces[0].problem and "32 levels" in pieces[1].problem
    (arrays,) = _split(b"[" * 100_000 + b"]" * 100_000, 65536)
    assert arrays.text is None and arrays.field is None and "32 levels" in arrays.problem


def test_lines_are_split_and_long_lines_skipped() -> None:
    """JSON Lines fed in chunks: blank lines skipped (but counted), a line past the limit reported with its field,
    the last line without a line break kept."""
    lines = [json.dumps(record(1)), "", json.dumps(record(2, model__id="m" * 5000)), "  ", json.dumps(record(3))]
    text = "\n".join(lines).encode()
    rng = random.Random(1)
    splitter, out, pos = LineSplitter(max_line_bytes=3000), [], 0
    while pos < len(text):
        step = rng.randint(1, 900)
        out.extend(splitter.feed(text[pos:pos + step]))
        pos += step
    out.extend(splitter.close())
    assert [p.locator for p in out] == ["line 1", "line 3", "line 5"]
    assert out[1].text is None and out[1].field == "model.id" and "exceeds the 3,000-byte limit" in out[1].problem
    assert [json.loads(p.text) for p in (out[0], out[2])] == [record(1), record(3)]


def test_parse_piece_rejects_what_is_not_an_object_without_raising() -> None:
    """A piece that is not JSON, not an object, or too deep for the parser becomes a rejection with its place."""
    assert isinstance(parse_piece(Piece("line 1", b'{"a": 1}')), RawRecord)
    for text, reason in [(b"{oops", "invalid JSON"), (b"[1]", "expected a JSON object"),
                         (b'{"method": {"config": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_002, "32 levels")]:
        rejected = parse_piece(Piece("line 9", text), "f.jsonl")
        assert isinstance(rejected, Rejected) and reason in rejected.reason and rejected.uri == "f.jsonl"
    assert parse_piece(Piece("line 9", b'{"method": {"config": ' + b"[" * 50_000)).field == "method.config"
