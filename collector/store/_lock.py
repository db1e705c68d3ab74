"""A readers-writer lock that holds across threads and across processes.

DuckDB lets one process write a database file, and no other process open it while it does. The knowledge base
therefore takes this lock around every connection: shared for reads (many readers, in any number of processes),
exclusive for writes. Across processes it is ``fcntl.flock`` on a ``.lock`` file beside the database, which the
kernel releases when a process dies, even by SIGKILL; within a process a condition variable does the same job, since
``flock`` does not exclude two descriptors of one process from each other in a way DuckDB can live with.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from collector.errors import StoreBusy


class _LocalRW:
    """In-process readers-writer lock with writer preference."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0

    def acquire(self, exclusive: bool, deadline: float) -> bool:
        with self._cond:
            if exclusive:
                self._waiting_writers += 1
                try:
                    while self._writer or self._readers:
                        if not self._cond.wait(timeout=max(0.0, deadline - time.monotonic())):
                            return False
                    self._writer = True
                finally:
                    self._waiting_writers -= 1
            else:
                while self._writer or self._waiting_writers:
                    if not self._cond.wait(timeout=max(0.0, deadline - time.monotonic())):
                        return False
                self._readers += 1
            return True

    def release(self, exclusive: bool) -> None:
        with self._cond:
            if exclusive:
                self._writer = False
            else:
                self._readers -= 1
            self._cond.notify_all()


_LOCALS: dict[str, _LocalRW] = {}
_LOCALS_GUARD = threading.Lock()


def _local_for(path: Path) -> _LocalRW:
    key = str(path.resolve())
    with _LOCALS_GUARD:
        return _LOCALS.setdefault(key, _LocalRW())


@contextmanager
def kb_lock(db_path: Path, *, exclusive: bool, timeout: float) -> Iterator[None]:
    """Hold the knowledge base's lock for the duration of the block.

    Args:
        db_path: the DuckDB file; the lock file is ``<db_path>.lock``.
        exclusive: True for writers, False for readers.
        timeout: seconds to wait before giving up.

    Raises:
        StoreBusy: the lock could not be had within ``timeout``.
    """
    deadline = time.monotonic() + timeout
    local = _local_for(db_path)
    if not local.acquire(exclusive, deadline):
        raise StoreBusy(f"knowledge base {db_path} is busy in this process (waited {timeout:.0f}s)")
    try:
        lock_path = db_path.with_name(db_path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
            delay = 0.005
            while True:
                try:
                    fcntl.flock(fd, mode | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise StoreBusy(
                            f"knowledge base {db_path} is held by another process (waited {timeout:.0f}s); "
                            "retry later or raise the lock timeout"
                        ) from None
                    time.sleep(delay)
                    delay = min(delay * 2, 0.2)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    finally:
        local.release(exclusive)
