"""Progress lines of long work: how often, and a background thread that writes them.

A step with no progress of its own (fitting a model, attaching features, a slow chunk commit) must not leave a
terminal, a log or a CI job silent for long: :func:`every` calls a function every :func:`progress_interval` seconds
while a block runs, from a daemon thread (ingest's line progress and the command line's heartbeat both use it).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

#: Seconds between the progress lines of long steps, unless ``METAML_PROGRESS_INTERVAL_S`` says otherwise.
PROGRESS_INTERVAL_S = 10.0
PROGRESS_INTERVAL_ENV = "METAML_PROGRESS_INTERVAL_S"


def progress_interval(environ: dict[str, str] | None = None) -> float:
    """Seconds between progress lines: ``METAML_PROGRESS_INTERVAL_S`` (at least 0.1), else
    :data:`PROGRESS_INTERVAL_S` (also when the variable is not a number)."""
    env = os.environ if environ is None else environ
    try:
        return max(0.1, float(env.get(PROGRESS_INTERVAL_ENV, PROGRESS_INTERVAL_S)))
    except ValueError:
        return PROGRESS_INTERVAL_S


@contextmanager
def every(interval: float, tick: Callable[[], None], *, name: str = "metaml-progress") -> Iterator[None]:
    """Call ``tick()`` every ``interval`` seconds from a daemon thread while the block runs (not at its start or
    end); the thread is stopped and joined when the block ends, whether it raised or not."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(interval):
            tick()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
