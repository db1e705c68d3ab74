"""Limits every record is held to, wherever it comes from: sizes, nesting depth, integer range and characters.

The record's fields use the annotated types below (``Name``, ``Text``, ``JsonMap``, ``Int64``...), so the limits are
checked where the record is defined, field by field, and a record that breaks one is rejected naming that field.
Integers must fit the store's 64-bit columns; names (ids, metric names, sources...) hold no control or bidirectional
formatting characters at all, free text (error messages, locators) no control characters other than tab and line
breaks. Sizes and depth come from a :class:`RecordLimits` passed as the validation context
(``RunRecord.model_validate(data, context={"limits": limits})``), :data:`DEFAULT_LIMITS` otherwise.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, Field, ValidationInfo

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class RecordLimits:
    """How large and how deep one record may be.

    Attributes:
        max_record_bytes: JSON text of one record (a JSON Lines line, an item of a JSON array); a longer one is
            rejected without being parsed.
        max_depth: nesting levels of objects and arrays in one record, the record itself being level 1.
        max_name_chars: characters of a name (dataset, model, method, metric, source, license...).
        max_text_chars: characters of free text (``outcome.error_message``, ``provenance.uri``, ``locator``).
        max_json_field_bytes: JSON text of each free-form mapping (``method.config``, ``hparams.extra``).
    """

    max_record_bytes: int = 1 << 20
    max_depth: int = 32
    max_name_chars: int = 256
    max_text_chars: int = 16_384
    max_json_field_bytes: int = 64 * 1024


DEFAULT_LIMITS = RecordLimits()

#: Never in a name: C0 and C1 control characters, DEL, line and paragraph separators, and the bidirectional
#: embedding, override and isolate controls that make text display differently from what it is.
_NOT_IN_NAMES = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
#: Never in free text: the same, except tab, line feed and carriage return.
_NOT_IN_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def limits_of(info: ValidationInfo | None) -> RecordLimits:
    """The limits in the validation context, or :data:`DEFAULT_LIMITS`."""
    context = info.context if info is not None else None
    if not context:
        return DEFAULT_LIMITS
    found = context.get("limits") if isinstance(context, dict) else None
    return found if isinstance(found, RecordLimits) else DEFAULT_LIMITS


def _describe(ch: str) -> str:
    return f"U+{ord(ch):04X}"


def _check_chars(value: str, pattern: re.Pattern[str], what: str) -> None:
    bad = pattern.search(value)
    if bad is not None:
        raise ValueError(f"{what} holds the control character {_describe(bad.group())} at position {bad.start()}")


def _string_check(size: str, pattern: re.Pattern[str], what: str) -> Any:
    """A validator holding a string to the limit named ``size`` and free of the characters ``pattern`` finds."""

    def check(value: str, info: ValidationInfo) -> str:
        limit = getattr(limits_of(info), size)
        if len(value) > limit:
            raise ValueError(f"{what} of {len(value):,} characters is longer than the limit of {limit:,}")
        _check_chars(value, pattern, what)
        return value

    return check


def nesting_depth(value: Any) -> int:
    """Levels of dicts and lists in ``value`` (0 for a scalar), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def _strings(value: Any) -> Any:
    """Every string (keys included) inside a JSON value."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            yield from (k for k in node if isinstance(k, str))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _json_map(value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
    limits = limits_of(info)
    # the mapping sits two levels below the record (record -> part -> mapping)
    allowed = limits.max_depth - 2
    if nesting_depth(value) > allowed:
        raise ValueError(f"nested more than {limits.max_depth} levels deep (this mapping may nest {allowed} levels)")
    try:
        size = len(json.dumps(value, ensure_ascii=False, allow_nan=False).encode())
    except ValueError as e:
        raise ValueError(f"not storable as JSON: {e}") from None
    if size > limits.max_json_field_bytes:
        raise ValueError(f"{size:,} bytes as JSON, more than the limit of {limits.max_json_field_bytes:,}")
    for s in _strings(value):
        _check_chars(s, _NOT_IN_TEXT, "a string in the mapping")
    return value


#: A single-line identifier-like string (see the module docstring).
Name = Annotated[str, AfterValidator(_string_check("max_name_chars", _NOT_IN_NAMES, "name"))]
#: Free text: may hold tabs and line breaks.
Text = Annotated[str, AfterValidator(_string_check("max_text_chars", _NOT_IN_TEXT, "text"))]
#: A free-form mapping stored as JSON text, bounded in depth and size.
JsonMap = Annotated[dict[str, Any], AfterValidator(_json_map)]
#: Integers the store's 64-bit columns can hold.
Int64 = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
PosInt = Annotated[int, Field(ge=1, le=INT64_MAX)]
NonNegInt = Annotated[int, Field(ge=0, le=INT64_MAX)]
