"""Records as JSON text arriving in pieces (a file read in chunks, an HTTP body as it streams in), split into one text
per record without parsing the whole, so that memory stays bounded by one record and limits apply while reading.

* :class:`JsonArraySplitter` splits a JSON array of records (or a single record) into its items. It follows strings
  and brackets only, so an item nested deeper than the limit, or longer than the limit, is found, skipped and
  reported without being kept or parsed; the array's own syntax (brackets, commas) is checked as it goes.
* :class:`LineSplitter` splits JSON Lines / NDJSON into lines; a line longer than the limit is skipped unread.

Both yield :class:`Piece` objects; :func:`parse_piece` turns one into a :class:`RawRecord` or a :class:`Rejected`.
Neither ever recurses, so no input can exhaust the interpreter's stack.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

from collector.errors import FormatError
from collector.formats._base import Item, RawRecord, Rejected
from collector.schema import DEFAULT_LIMITS

_WS = re.compile(rb"[ \t\r\n]*")
_STRING = rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"'
_FLAT = rb'(?:[^\[\]{}"]++|' + _STRING + rb")*+"
#: Everything inside an item up to its next bracket: other characters and whole strings (a string cut by the end of
#: the data stops it at its opening quote). Possessive, so that it never backtracks.
_SKIP = re.compile(_FLAT, re.DOTALL)
#: The same, also skipping whole innermost objects and arrays (those holding no bracket), which leave the depth as it
#: was: one regular-expression step for a run of curve points instead of two loop turns each.
_SKIP_FLAT = re.compile(rb"(?:[^\[\]{}\"]++|" + _STRING + rb"|\{" + _FLAT + rb"\}|\[" + _FLAT + rb"\])*+", re.DOTALL)
_QUOTE, _BACKSLASH, _OPEN_ARRAY, _OPEN_OBJECT = ord('"'), ord("\\"), ord("["), ord("{")
#: The rest of a string up to its closing quote (or to the end of the data, or to a backslash ending the data).
_STRING_REST = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*', re.DOTALL)
#: The end of a bare scalar (number, true, false, null) at the array's level.
_SCALAR_END = re.compile(rb"[,\]\s]")
_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}:,]', re.DOTALL)


@dataclass
class Piece:
    """The JSON text of one record, or why it cannot be one (then ``text`` is None)."""

    locator: str
    text: bytes | None
    problem: str | None = None
    field: str | None = None


def field_at(text: bytes, max_depth: int | None = None) -> str | None:
    """The field (at most ``part.field``) where ``text`` first nests deeper than ``max_depth`` or, without a depth,
    where the text stops (the field a record cut at its size limit was in); None when the record's root is not an
    object. Meant for rejected records only: it walks the text token by token."""
    stack: list[bytes] = []
    keys: list[str | None] = []
    last: bytes = b""

    def path() -> str | None:
        found = []
        for container, key in zip(stack, keys, strict=True):
            if container != b"{" or not key:
                break
            found.append(key)
        return ".".join(found[:2]) or None

    for m in _TOKENS.finditer(text):
        tok = m.group()
        if tok[:1] == b'"':
            last = tok
        elif tok == b":":
            if stack and stack[-1] == b"{":
                try:
                    keys[-1] = json.loads(last)
                except ValueError:
                    keys[-1] = last[1:-1].decode("utf-8", "replace")
        elif tok in (b"[", b"{"):
            if max_depth is not None and len(stack) >= max_depth:
                return path()
            stack.append(tok)
            keys.append(None)
        elif tok in (b"]", b"}") and stack:
            stack.pop()
            keys.pop()
        elif tok == b"," and stack and stack[-1] == b"{":
            keys[-1] = None
    return path() if max_depth is None else None


def too_deep(max_depth: int) -> str:
    """The reason given for a record nested deeper than ``max_depth``."""
    return f"nested more than {max_depth} levels deep"


def too_long(what: str, size: int, limit: int) -> str:
    """The reason given for a record whose text is longer than ``limit`` bytes."""
    return f"{what} of {size:,} bytes exceeds the {limit:,}-byte limit for one record"


class JsonArraySplitter:
    """Split a JSON array of records, fed in chunks, into the text of each item (``item <i>``); a top-level object
    is one record (``single_locator``).

    Args:
        max_item_bytes: longer items are reported (``problem``) and not kept.
        max_depth: items nested deeper (the item itself being level 1) are reported and not kept.
        single_locator: the locator of a document that is one object rather than an array.
    """

    def __init__(self, *, max_item_bytes: int = DEFAULT_LIMITS.max_record_bytes,
                 max_depth: int = DEFAULT_LIMITS.max_depth, single_locator: str = "item 0") -> None:
        self.max_item_bytes = max_item_bytes
        self.max_depth = max_depth
        self.single_locator = single_locator
        self._stage = "start"  # start, first (after '['), item, after (an item), need (after ','), end
        self._offset = 0  # bytes fed before the current chunk
        self._index = 0
        self._single = False
        # the item being read
        self._kind = ""  # struct ({ or [), string, scalar (number, true, false, null)
        self._opening = False
        self._depth = 0
        self._in_string = False
        self._escape = False
        self._chunks: list[bytes] = []
        self._size = 0
        self._field: str | None = None  # where an item too deep or too long broke its limit
        self._too_deep = False
        self._too_big = False

    def _error(self, message: str, pos: int) -> FormatError:
        return FormatError(f"invalid JSON at byte {self._offset + pos:,}: {message}")

    def feed(self, data: bytes) -> Iterator[Piece]:
        """The items that end in ``data``, in order.

        Raises:
            FormatError: the document is not a JSON array (or object) of items: a missing comma or bracket, a
                trailing comma, data after the end.
        """
        pos, n = 0, len(data)
        while pos < n:
            stage = self._stage
            if stage == "item":
                pos, piece = self._scan(data, pos)
                if piece is not None:
                    yield piece
                continue
            pos = _WS.match(data, pos).end()
            if pos >= n:
                break
            c = data[pos:pos + 1]
            if stage == "start":
                if c == b"[":
                    self._stage = "first"
                    pos += 1
                elif c == b"{":
                    self._single = True
                    self._begin(c)
                else:
                    raise self._error("expected a JSON array of records or one record", pos)
            elif stage in ("first", "need"):
                if c == b"]" and stage == "first":
                    self._stage = "end"
                    pos += 1
                elif c in (b"]", b","):
                    raise self._error("expected an item", pos)
                else:
                    self._begin(c)
            elif stage == "after":
                if c == b",":
                    self._stage = "need"
                elif c == b"]":
                    self._stage = "end"
                else:
                    raise self._error("expected ',' or ']' after an item", pos)
                pos += 1
            else:  # end
                raise self._error("unexpected data after the end of the document", pos)
        self._offset += n

    def close(self) -> Iterator[Piece]:
        """Check that the document ended (nothing is left to yield: an array ends with its bracket).

        Raises:
            FormatError: the document is empty, or it ended inside an item or before its closing bracket.
        """
        if self._stage == "start":
            raise FormatError("the document is empty: expected a JSON array of records or one record")
        if self._stage != "end":
            raise FormatError(f"truncated JSON: the document ends at byte {self._offset:,} before it is complete")
        return iter(())

    # -- one item ----------------------------------------------------------------------------------------------

    def _begin(self, first: bytes) -> None:
        self._stage = "item"
        self._kind = "struct" if first in (b"[", b"{") else "string" if first == b'"' else "scalar"
        self._opening = self._kind == "string"
        self._depth = 0
        self._in_string = self._escape = False
        self._chunks = []
        self._size = 0
        self._deep_field = None
        self._too_deep = self._too_big = False

    def _scan(self, data: bytes, pos: int) -> tuple[int, Piece | None]:
        """Advance through the current item from ``pos``; (new position, the item when it ended in ``data``)."""
        start, n, end = pos, len(data), -1
        if self._kind == "scalar":
            m = _SCALAR_END.search(data, pos)
            pos = end = m.start() if m is not None else -1
            if m is None:
                pos = n
        else:
            if self._opening:  # the opening quote of a string item
                self._opening = False
                self._in_string = True
                pos += 1
            while pos < n:
                if self._in_string:  # a string that began in an earlier chunk
                    if self._escape:  # the character a backslash at the end of the previous chunk escapes
                        self._escape = False
                        pos += 1
                        continue
                    pos = _STRING_REST.match(data, pos).end()
                    if pos >= n:
                        break
                    if data[pos] == _BACKSLASH:  # a backslash ending the data: its pair comes next
                        self._escape = True
                        pos = n
                        break
                    self._in_string = False
                    pos += 1
                    if self._kind == "string":
                        end = pos
                        break
                    continue
                skip = _SKIP_FLAT if 0 < self._depth < self.max_depth else _SKIP
                pos = skip.match(data, pos).end()  # whole strings, flat containers, all but brackets, in C
                if pos >= n:
                    break
                c = data[pos]
                pos += 1
                if c == _QUOTE:  # a string running past the end of the data
                    self._in_string = True
                elif c in (_OPEN_ARRAY, _OPEN_OBJECT):
                    self._depth += 1
                    if self._depth > self.max_depth and not self._too_deep:
                        self._too_deep = True
                        if not self._too_big:
                            self._field = field_at(b"".join(self._chunks) + data[start:pos], self.max_depth)
                        self._chunks = []
                else:
                    self._depth -= 1
                    if self._depth == 0:
                        end = pos
                        break
        stop = end if end >= 0 else pos
        self._size += stop - start
        if not (self._too_big or self._too_deep):
            if self._size > self.max_item_bytes:
                self._too_big = True
                cut = stop - (self._size - self.max_item_bytes)
                self._field = field_at(b"".join(self._chunks) + data[start:cut])
                self._chunks = []
            else:
                self._chunks.append(data[start:stop])
        if end < 0:
            return pos, None
        return end, self._finish()

    def _finish(self) -> Piece:
        loc = self.single_locator if self._single else f"item {self._index}"
        self._index += 1
        self._stage = "end" if self._single else "after"
        if self._too_deep:
            piece = Piece(loc, None, too_deep(self.max_depth), self._field)
        elif self._too_big:
            piece = Piece(loc, None, too_long("item", self._size, self.max_item_bytes), self._field)
        else:
            piece = Piece(loc, b"".join(self._chunks))
        self._chunks = []
        return piece


class LineSplitter:
    """Split JSON Lines, fed in chunks, into lines (``line <n>``, counting from 1); blank lines are skipped.

    Args:
        max_line_bytes: longer lines are reported (``problem``) and not kept.
    """

    def __init__(self, *, max_line_bytes: int = DEFAULT_LIMITS.max_record_bytes) -> None:
        self.max_line_bytes = max_line_bytes
        self._lineno = 0
        self._partial: list[bytes] = []
        self._size = 0
        self._too_big = False
        self._field: str | None = None

    def feed(self, data: bytes) -> Iterator[Piece]:
        """The lines that end in ``data``, in order."""
        parts = data.split(b"\n")
        for i, part in enumerate(parts):
            self._size += len(part)
            if not self._too_big:
                if self._size > self.max_line_bytes:
                    self._too_big = True
                    kept = len(part) - (self._size - self.max_line_bytes)
                    self._field = field_at(b"".join(self._partial) + part[:kept])
                    self._partial = []
                else:
                    self._partial.append(part)
            if i < len(parts) - 1:
                piece = self._end_line()
                if piece is not None:
                    yield piece

    def close(self) -> Iterator[Piece]:
        """The last line, when the input does not end with a line break."""
        if self._size or self._partial:
            piece = self._end_line()
            if piece is not None:
                yield piece

    def _end_line(self) -> Piece | None:
        self._lineno += 1
        loc = f"line {self._lineno}"
        size, too_big, field = self._size, self._too_big, self._field
        text = b"".join(self._partial)
        self._partial, self._size, self._too_big, self._field = [], 0, False, None
        if too_big:
            return Piece(loc, None, too_long("line", size, self.max_line_bytes), field)
        if not text.strip():
            return None
        return Piece(loc, text)


def parse_piece(piece: Piece, uri: str | None = None, *, max_depth: int = DEFAULT_LIMITS.max_depth) -> Item:
    """Parse one piece into a raw record: a JSON object, else a rejection with the place and reason."""
    if piece.text is None:
        return Rejected(piece.locator, piece.problem or "unreadable", field=piece.field, uri=uri)
    try:
        value = json.loads(piece.text)
    except RecursionError:
        return Rejected(piece.locator, too_deep(max_depth), field=field_at(piece.text, max_depth), uri=uri)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return Rejected(piece.locator, f"invalid JSON: {e}", uri=uri)
    if not isinstance(value, dict):
        return Rejected(piece.locator, f"expected a JSON object, got {type(value).__name__}", uri=uri)
    return RawRecord(value, piece.locator, uri)
