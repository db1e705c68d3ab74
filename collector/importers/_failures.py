"""The kind of a failure, read from its error text: one rule for every importer that keeps failed runs.

``oom``: the process ran out of memory (CUDA ``out of memory``, ``OutOfMemoryError``, a CPU allocator that cannot
allocate, DataLoader workers out of shared memory, a bare ``OOM`` word). ``timeout``: an evaluation or job time
limit ended it (``timeout``, ``timed out``, ``exceeded allowed time``). Anything else is ``error``.
"""

from __future__ import annotations

import re

_OOM = ("out of memory", "outofmemory", "out of shared memory", "can't allocate memory", "cannot allocate memory")
_TIMEOUT = ("timeout", "timed out", "exceeded allowed time")


def error_kind(message: str) -> str:
    """``oom``, ``timeout`` or ``error`` for an error text (the record's ``outcome.error_kind``)."""
    low = message.lower()
    if any(p in low for p in _OOM) or "oom" in low.split():
        return "oom"
    if any(p in low for p in _TIMEOUT):
        return "timeout"
    return "error"


def clip_message(message: str, limit: int = 2000) -> str:
    """An error text cut to what a record keeps: stripped, at most ``limit`` characters."""
    text = message.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_EXCEPTION = re.compile(r"^[\w.]+(Error|Exception|Interrupt|Exit)\b")


def exception_line(text: str) -> str | None:
    """The exception a traceback ends with (``RuntimeError: CUDA out of memory...``): its last line naming an
    exception, else its last non-empty line; None for an empty text. Terminal colours are removed."""
    lines = [line.strip() for line in _ANSI.sub("", text).splitlines() if line.strip()]
    if not lines:
        return None
    return next((line for line in reversed(lines) if _EXCEPTION.match(line)), lines[-1])
