"""A readers-writer lock that holds across threads and across processes, and tells its holder when others wait.

DuckDB lets one process write a database file, and no other process open it while it does. The knowledge base
therefore takes this lock around every connection: shared for reads (many readers, in any number of processes),
exclusive for writes. Across processes it is ``fcntl.flock`` on a ``.lock`` file beside the database, which the
kernel releases when a process dies, even by SIGKILL; within a process a condition variable does the same job, since
``flock`` does not exclude two descriptors of one process from each other in a way DuckDB can live with.

A process that keeps the file open between writes (:class:`FileLock` held for a while, see
:mod:`collector.store._duckdb`) must give way to others: whoever waits for the lock holds a shared ``flock`` on a
second file, ``<db>.lock.wait``, for as long as it waits, and :meth:`FileLock.others_waiting` sees it.
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

#: Longest pause between two tries of a lock another process holds.
_MAX_POLL_S = 0.05


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


def _lock_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".lock")


def _wait_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".lock.wait")


class FileLock:
    """The knowledge base's lock, held from :meth:`acquire` to :meth:`release` (possibly across calls).

    Args:
        db_path: the DuckDB file; the lock file is ``<db_path>.lock``.
        exclusive: True for writers, False for readers.
    """

    def __init__(self, db_path: Path, *, exclusive: bool) -> None:
        self.db_path = db_path
        self.exclusive = exclusive
        self._fd: int | None = None
        self._local: _LocalRW | None = None

    def acquire(self, timeout: float) -> FileLock:
        """Wait for the lock (announcing the wait to its holder) at most ``timeout`` seconds.

        Raises:
            StoreBusy: it could not be had within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        local = _local_for(self.db_path)
        if not local.acquire(self.exclusive, deadline):
            raise StoreBusy(f"knowledge base {self.db_path} is busy in this process (waited {timeout:.0f}s)")
        try:
            fd = os.open(_lock_path(self.db_path), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                self._flock(fd, deadline, timeout)
            except BaseException:
                os.close(fd)
                raise
        except BaseException:
            local.release(self.exclusive)
            raise
        self._fd, self._local = fd, local
        return self

    def _flock(self, fd: int, deadline: float, timeout: float) -> None:
        mode = fcntl.LOCK_EX if self.exclusive else fcntl.LOCK_SH
        waiting: int | None = None
        delay = 0.002
        try:
            while True:
                try:
                    fcntl.flock(fd, mode | fcntl.LOCK_NB)
                    return
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise StoreBusy(
                            f"knowledge base {self.db_path} is held by another process (waited {timeout:.0f}s); "
                            "retry later or raise the lock timeout"
                        ) from None
                    if waiting is None:  # tell a holder that keeps the file open to give way
                        waiting = os.open(_wait_path(self.db_path), os.O_RDWR | os.O_CREAT, 0o600)
                        fcntl.flock(waiting, fcntl.LOCK_SH)
                    time.sleep(delay)
                    delay = min(delay * 2, _MAX_POLL_S)
        finally:
            if waiting is not None:
                os.close(waiting)  # releases its flock

    def others_waiting(self) -> bool:
        """Whether another process (or another thread's lock of this file) waits for the lock now."""
        try:
            fd = os.open(_wait_path(self.db_path), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def release(self) -> None:
        """Release the lock (a no-op when it is not held)."""
        fd, local = self._fd, self._local
        self._fd = self._local = None
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        if local is not None:
            local.release(self.exclusive)


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
    lock = FileLock(db_path, exclusive=exclusive).acquire(timeout)
    try:
        yield
    finally:
        lock.release()
