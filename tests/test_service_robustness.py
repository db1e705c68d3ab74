"""Concurrency and crash safety of uploads over real HTTP against a real DuckDB file: overlapping uploads from
several client processes to two server processes sharing one knowledge base, a server SIGKILLed mid-stream, and
sixteen uploaders mixing good and bad records."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import httpx
from factories import record

from collector.schema import RunRecord
from collector.store import KnowledgeBase
from service.keys import create_key
from service.testing import ServerProcess


def _upload_batches(url: str, key: str, batches: list[list[dict]]) -> list[tuple[int, dict]]:
    """Client process: upload each batch in turn; (status, body) per batch."""
    out = []
    with httpx.Client(base_url=url, timeout=120.0, headers={"Authorization": f"Bearer {key}"}) as c:
        for batch in batches:
            r = c.post("/v1/runs", json=batch)
            out.append((r.status_code, r.json()))
    return out


def test_concurrent_overlapping_uploads_land_exactly_once(tmp_path: Path) -> None:
    """Four client processes upload overlapping batches at once, alternating between two server processes on the
    same knowledge base: every answer is 200, every distinct run is accepted by exactly one upload (the sum of
    accepted equals the distinct count) and stored exactly once."""
    kb_path = tmp_path / "kb.duckdb"
    _, key = create_key(tmp_path / "keys.db", "swarm", ["write"])
    pool = [record(i) for i in range(240)]
    ids = {r_id for r_id in (RunRecord.model_validate(r).run_id for r in pool)}
    rng = random.Random(7)
    plans = []
    for _ in range(4):
        chosen = rng.sample(pool, 150)
        plans.append([chosen[i:i + 30] for i in range(0, len(chosen), 30)])
    covered = {RunRecord.model_validate(r).run_id for plan in plans for batch in plan for r in batch}
    assert covered <= ids
    a = ServerProcess(kb_path).start()
    b = ServerProcess(kb_path).start()
    try:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=4, mp_context=ctx) as ex:
            futures = [ex.submit(_upload_batches, (a if i % 2 == 0 else b).url, key, plan)
                       for i, plan in enumerate(plans)]
            results = [f.result(timeout=150) for f in futures]
    finally:
        a.stop()
        b.stop()
    answers = [body for res in results for status, body in res if status == 200]
    assert len(answers) == sum(len(p) for p in plans), [s for res in results for s, _ in res]
    accepted = [x["run_id"] for body in answers for x in body["records"] if x["status"] == "accepted"]
    assert sum(body["accepted"] for body in answers) == len(covered)
    assert sorted(accepted) == sorted(covered)
    assert all(x["status"] != "rejected" for body in answers for x in body["records"])
    kb = KnowledgeBase(kb_path)
    assert kb.count() == len(covered)
    assert kb.existing_ids(sorted(covered)) == covered


def test_sigkill_during_uploads_loses_no_acknowledged_run(tmp_path: Path) -> None:
    """Two clients stream uploads while the server is SIGKILLed: after a restart on the same file, every run that
    got a 2xx answer is in the knowledge base, the file opens cleanly, and uploading everything again stores
    exactly the rest (each run once)."""
    kb_path = tmp_path / "kb.duckdb"
    _, key = create_key(tmp_path / "keys.db", "crash", ["write", "read"])
    batches = [[record(10_000 + b * 25 + i) for i in range(25)] for b in range(200)]
    acked: set[str] = set()
    acked_lock = threading.Lock()
    stop = threading.Event()
    server = ServerProcess(kb_path).start()

    def client(offset: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30.0, headers={"Authorization": f"Bearer {key}"}) as c:
            for batch in batches[offset::2]:
                if stop.is_set():
                    return
                try:
                    r = c.post("/v1/runs", json=batch)
                except httpx.TransportError:
                    return
                if 200 <= r.status_code < 300:
                    with acked_lock:
                        acked.update(x["run_id"] for x in r.json()["records"] if x["status"] == "accepted")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(acked) < 300 and time.monotonic() < deadline:
        time.sleep(0.01)
    server.kill()
    stop.set()
    for t in threads:
        t.join(30)
    assert len(acked) >= 300, "the uploads did not get going before the kill"

    kb = KnowledgeBase(kb_path)
    assert kb.existing_ids(sorted(acked)) == acked
    with ServerProcess(kb_path) as restarted, httpx.Client(base_url=restarted.url, timeout=60.0,
                                                           headers={"Authorization": f"Bearer {key}"}) as c:
        assert c.get("/readyz").status_code == 200
        stored_before = c.get("/v1/stats").json()["runs"]
        assert stored_before >= len(acked)
        everything = [r for batch in batches for r in batch]
        accepted = 0
        for i in range(0, len(everything), 1000):
            body = c.post("/v1/runs", json=everything[i:i + 1000]).json()
            assert body["rejected"] == 0
            accepted += body["accepted"]
        assert stored_before + accepted == len(everything)
        assert c.get("/v1/stats").json()["runs"] == len(everything)


def test_group_writer_credits_each_run_to_one_upload(tmp_path: Path) -> None:
    """Concurrent appends through the group writer share transactions, yet each inserted run is credited to exactly
    one caller, a run sent by several callers is stored once, and a failed group reports the error to its callers
    without stopping the writer."""
    from concurrent.futures import ThreadPoolExecutor

    from collector.schema import RowBuffer
    from service.writer import GroupWriter

    def table(seeds: range) -> object:
        rows = RowBuffer()
        for i in seeds:
            rows.append(RunRecord.model_validate(record(i)))
        return rows.to_arrow()

    kb = KnowledgeBase(tmp_path / "kb.duckdb")
    kb.create()
    writer = GroupWriter(kb).start()
    try:
        tables = [table(range(start, start + 20)) for start in range(0, 200, 10)]  # each overlaps the next
        with ThreadPoolExecutor(8) as ex:
            credited = list(ex.map(writer.append, tables))
        distinct = {rid for t in tables for rid in t.column("run_id").to_pylist()}
        assert sum(len(c) for c in credited) == len(distinct) == kb.count()
        assert set().union(*credited) == distinct
        assert writer.transactions < len(tables) or len(tables) == 1
        bad = table(range(500, 501)).drop_columns(["run_id"])
        try:
            writer.append(bad)
        except Exception as e:
            assert "run_id" in str(e)
        else:
            raise AssertionError("a table without run ids was stored")
        assert writer.append(table(range(600, 602))) and kb.count() == len(distinct) + 2
        # a caller that gives up before its group is taken is left out of it; once taken, it is stored
        big, small = table(range(700, 1700)), table(range(2000, 2005))
        first = writer.submit(big)
        while not (first.running() or first.done()):  # the writer has taken it: the next waits for the next group
            time.sleep(0.001)
        second = writer.submit(small)
        left_out = second.cancel()
        assert len(first.result()) == 1000

        assert kb.count() == len(distinct) + 2 + 1000 + (0 if left_out else len(second.result()))
    finally:
        writer.close()


def _bad_records(rng: random.Random, ndjson: bool) -> tuple[str, str]:
    """One bad record as JSON text, and what its rejection must mention."""
    i = rng.randrange(10**9)
    deep = json.dumps(record(i)).replace('"method": {', '"method": {"config": ' + '{"a": ' * 3000 + "1" + "}" * 3000
                                         + ", ", 1)
    kinds = [
        (json.dumps(record(i, hparams__seed=2**64)), "9223372036854775807"),
        (json.dumps(record(i, dataset__name="glue/sst2\x00")), "U+0000"),
        (json.dumps(record(i, model__id="roberta\u202e-base")), "U+202E"),
        (json.dumps(record(i, method__config={"a": _nested(40)})), "levels deep"),
        (deep, "levels deep"),
        (json.dumps(record(i, model__id="m" * 300)), "longer than the limit"),
        (json.dumps(record(i, hparams__extra={"blob": "x" * 70_000})), "more than the limit"),
        (json.dumps(record(i, method__name="telepathy")), "unknown method"),
        ("42", "expected a JSON object"),
    ]
    if ndjson:
        kinds.append(('{"task": {"primary_metric": ', "invalid JSON"))
    if rng.random() < 0.02:
        kinds.append((json.dumps(record(i, outcome__error_message="e" * (1 << 20))), "exceeds the 1,048,576-byte"))
    return rng.choice(kinds)


def _nested(levels: int) -> list:
    value: list = [1]
    for _ in range(levels - 1):
        value = [value]
    return value


def test_sixteen_uploaders_mixing_good_and_bad_records(tmp_path: Path) -> None:
    """Sixteen uploaders send, for a bounded time (METAML_LOAD_SECONDS, default 12 s), JSON arrays and NDJSON bodies
    mixing new records, records other uploaders also send, and bad records of every kind (integers past 64 bits,
    control characters, deep nesting, oversized fields and records, unknown methods, non-objects, broken lines).
    Every answer is 200; every bad record is reported rejected at its place with its reason; every good record is
    accepted by exactly one upload and stored exactly once."""
    seconds = float(os.environ.get("METAML_LOAD_SECONDS", "12"))
    _, key = create_key(tmp_path / "keys.db", "loader", ["write"])
    shared = [record(50_000_000 + i) for i in range(300)]
    shared_ids = [RunRecord.model_validate(r).run_id for r in shared]
    lock = threading.Lock()
    sent_good: set[str] = set()
    accepted: Counter[str] = Counter()
    problems: list[str] = []
    answers = Counter[int]()
    deadline = time.monotonic() + seconds

    def uploader(u: int, url: str) -> None:
        rng = random.Random(u)
        n = 0
        with httpx.Client(base_url=url, timeout=120.0, headers={"X-API-Key": key}) as c:
            while time.monotonic() < deadline:
                ndjson = rng.random() < 0.5
                items: list[tuple[str, str | None, str | None]] = []  # (text, expected run id, reason fragment)
                for _ in range(rng.randint(10, 40)):
                    n += 1
                    good = record(60_000_000 + u * 1_000_000 + n)
                    items.append((json.dumps(good), RunRecord.model_validate(good).run_id, None))
                for _ in range(rng.randint(1, 4)):
                    j = rng.randrange(len(shared))
                    items.append((json.dumps(shared[j]), shared_ids[j], None))
                for _ in range(rng.randint(1, 6)):
                    text, reason = _bad_records(rng, ndjson)
                    items.append((text, None, reason))
                rng.shuffle(items)
                body = "\n".join(t for t, _, _ in items) if ndjson else "[" + ",".join(t for t, _, _ in items) + "]"
                r = c.post("/v1/runs", content=body.encode(), headers={
                    "Content-Type": "application/x-ndjson" if ndjson else "application/json"})
                with lock:
                    answers[r.status_code] += 1
                    if r.status_code != 200:
                        problems.append(f"{r.status_code}: {r.text[:200]}")
                        continue
                    records = r.json()["records"]
                    if len(records) != len(items):
                        problems.append(f"{len(records)} statuses for {len(items)} items")
                        continue
                    for (_, run_id, reason), status in zip(items, records, strict=True):
                        if run_id is None:
                            if status["status"] != "rejected" or reason not in (status["reason"] or ""):
                                problems.append(f"bad record answered {status} (expected {reason!r})")
                        elif status["run_id"] != run_id or status["status"] not in ("accepted", "duplicate"):
                            problems.append(f"good record answered {status}")
                        else:
                            sent_good.add(run_id)
                            if status["status"] == "accepted":
                                accepted[run_id] += 1

    server = ServerProcess(tmp_path / "kb.duckdb").start()
    try:
        threads = [threading.Thread(target=uploader, args=(u, server.url)) for u in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(seconds + 180)
    finally:
        server.stop()
    assert not problems, problems[:5]
    assert set(answers) == {200} and sum(answers.values()) >= 16
    print(f"{sum(answers.values())} uploads in {seconds:g} s, {len(sent_good)} distinct good runs stored")
    assert set(accepted) == sent_good and max(accepted.values()) == 1
    kb = KnowledgeBase(tmp_path / "kb.duckdb")
    assert kb.count() == len(sent_good)
    assert kb.existing_ids(sorted(sent_good)) == sent_good
