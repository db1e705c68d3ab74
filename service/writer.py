"""Group commit: uploads that arrive together are stored together, in one knowledge-base transaction.

One writer thread per server process keeps the knowledge base open (``KnowledgeBase.keep_open``: a DuckDB file
stays open, with its lock, between commits and is given way as soon as another process waits for it; the lakehouse
keeps its catalog connection), takes every upload waiting in its queue, appends them as one batch, and answers each
caller with the runs *it* stored once the transaction has committed. Each upload is still all-or-nothing (uploads of
one group commit or fail together), an answer still comes only after the commit, and a run sent by several uploads
of one group is stored once and credited to the first.

Stored runs get their features as ``metaml ingest`` gives them: the models they name are added to the ``models``
table from the model registry (:func:`collector.enrich.model_features`, looked up once per model and process), and
their missing dataset meta-features and model features are filled from the ``datasets`` and ``models`` tables, in
the same transaction.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from collector.enrich import batch_model_ids, model_features
from collector.features import ModelRegistry
from collector.store import KnowledgeBase

#: Most rows one group transaction gathers (an upload larger than this is committed on its own).
DEFAULT_MAX_GROUP_ROWS = 50_000


@dataclass
class _Job:
    table: pa.Table
    future: Future[set[str]] = field(default_factory=Future)


class GroupWriter:
    """A writer thread that coalesces concurrent appends to ``kb``.

    Args:
        kb: the knowledge base.
        max_group_rows: most rows gathered into one transaction.
        on_commit: called after each committed transaction with (uploads, rows, seconds) (metrics).
    """

    def __init__(self, kb: KnowledgeBase, *, max_group_rows: int = DEFAULT_MAX_GROUP_ROWS,
                 on_commit: Callable[[int, int, float], None] | None = None, idle_s: float = 1.0) -> None:
        self.kb = kb
        self.on_commit = on_commit
        self.max_group_rows = max_group_rows
        self.idle_s = idle_s
        self._models: dict[str, dict[str, Any]] = {}  # model id -> its features ({} when nothing is known)
        self._stored: set[str] = set()  # model ids this writer has committed to the models table (rows stay)
        self._registry: ModelRegistry | None = None
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.transactions = 0

    def start(self) -> GroupWriter:
        with self._lock:
            if self._thread is None:
                self.kb.keep_open(self.idle_s)
                self._thread = threading.Thread(target=self._run, name="metaml-group-writer", daemon=True)
                self._thread.start()
        return self

    def close(self, timeout: float = 60.0) -> None:
        """Store what is queued, then stop the thread."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)
            self.kb.close()

    def submit(self, table: pa.Table) -> Future[set[str]]:
        """Queue ``table`` for the next group; the future gives the ids this call inserted, once committed (of a run
        repeated in ``table`` or sent by an earlier upload of the same group, the store keeps the first row), or
        raises StoreError when the group's transaction failed (nothing of it is stored; StoreBusy included). A
        coroutine awaits it with ``asyncio.wrap_future``, holding no thread; cancelled before its group is taken,
        it is left out of it."""
        if self._thread is None:
            raise RuntimeError("the group writer is not running")
        job = _Job(table)
        self._queue.put(job)
        return job.future

    def append(self, table: pa.Table) -> set[str]:
        """:meth:`submit` ``table`` and wait for its commit."""
        return self.submit(table).result()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            job = self._queue.get()
            if job is None:
                break
            jobs, rows = [job], job.table.num_rows
            while rows < self.max_group_rows:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stopping = True
                    break
                jobs.append(nxt)
                rows += nxt.table.num_rows
            jobs = [j for j in jobs if j.future.set_running_or_notify_cancel()]  # a cancelled caller left
            if jobs:
                self._commit(jobs)

    def _features_of(self, table: pa.Table) -> dict[str, dict[str, Any]]:
        """Registry features of the models ``table`` names (looked up once per model id and process), but those this
        writer already added to the ``models`` table (rows there are replaced, never deleted)."""
        ids = batch_model_ids(table)
        new = ids - self._models.keys()
        if new:
            if self._registry is None:
                self._registry = ModelRegistry.load_default()
            found = model_features(new, self._registry)
            self._models.update({mid: found.get(mid, {}) for mid in new})
        return {mid: self._models[mid] for mid in ids - self._stored if self._models[mid]}

    def _commit(self, jobs: list[_Job]) -> None:
        started = time.perf_counter()
        try:
            table = jobs[0].table if len(jobs) == 1 else pa.concat_tables([j.table for j in jobs])
            models = self._features_of(table)
            inserted = set(self.kb.append(table, attach_features=True, models=models).inserted)
            if inserted:  # the models were added with them
                self._stored |= models.keys()
        except BaseException as e:  # every caller learns of the failure; the thread lives on
            for j in jobs:
                j.future.set_exception(e)
            return
        self.transactions += 1
        if self.on_commit is not None:
            self.on_commit(len(jobs), table.num_rows, time.perf_counter() - started)
        claimed: set[str] = set()
        for j in jobs:  # append keeps the first occurrence of a repeated id: credit the first job that sent it
            mine = {rid for rid in j.table.column("run_id").to_pylist() if rid in inserted and rid not in claimed}
            claimed |= mine
            j.future.set_result(mine)
