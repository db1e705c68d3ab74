"""What `metaml ingest` prints when its output goes to a log instead of a terminal: progress lines at a steady
pace, and where the rejected records' reasons are."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from collector.ingest import ingest_path
from collector.progress import PROGRESS_INTERVAL_S, every, progress_interval
from collector.store import KnowledgeBase

REPO = Path(__file__).resolve().parents[1]
PROGRESS = re.compile(r"^ingest (?P<label>.+?): (?P<done>done, )?read (?P<read>[\d,]+), stored (?P<stored>[\d,]+), "
                      r"duplicates (?P<dupes>[\d,]+), rejected (?P<rejected>[\d,]+), [\d,]+ rec/s, \d+s$")


def _metaml(cwd: Path, *argv: str) -> tuple[int, str, str]:
    """Run the CLI in a subprocess with stdout and stderr redirected to files (no terminal)."""
    out, err = cwd / "stdout.log", cwd / "stderr.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("METAML_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    with open(out, "w") as fo, open(err, "w") as fe:
        code = subprocess.run([sys.executable, "-m", "service.cli", *argv], cwd=cwd, env=env, stdout=fo, stderr=fe,
                              stdin=subprocess.DEVNULL, timeout=300).returncode
    return code, out.read_text(), err.read_text()


def _n(text: str) -> int:
    return int(text.replace(",", ""))


def test_ingest_into_a_log_prints_plain_progress_lines(public_data: Path, tmp_path: Path) -> None:
    """With stderr redirected to a file, ingesting the real TransferGraph runs prints a line when the input starts
    and a line when it ends with its counts (read, stored, duplicates, rejected, rate), no progress-bar control
    characters, and the done line's counts agree with the summary on stdout."""
    code, out, err = _metaml(tmp_path, "ingest", str(public_data / "metadatasets" / "transfergraph"),
                             "--kb", str(tmp_path / "kb.duckdb"), "--no-enrich")
    assert code in (0, 2), err
    assert "\r" not in err and "\x1b[" not in err
    lines = err.splitlines()
    assert "ingest transfergraph: transfergraph: started" in lines
    done = [m for m in map(PROGRESS.match, lines) if m and m["done"]]
    assert len(done) == 1, err
    total = KnowledgeBase(tmp_path / "kb.duckdb").count()
    assert _n(done[0]["stored"]) == total > 5000
    assert _n(done[0]["read"]) == total + _n(done[0]["dupes"]) + _n(done[0]["rejected"])
    assert f"{total:,}" in out


def test_progress_lines_come_at_the_interval_while_an_input_is_read(public_data: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Without a terminal, a line comes every ``progress_interval`` seconds while an input is read (the real LM-BFF
    archive, 15,000 candidates, read for a few seconds), with the counts growing, then one done line."""
    reports = ingest_path(KnowledgeBase(tmp_path / "kb.duckdb"), public_data / "metadatasets" / "lmbff",
                          progress=True, progress_interval=0.2)
    lines = [m for m in map(PROGRESS.match, capsys.readouterr().err.splitlines()) if m]
    ticks, done = [m for m in lines if not m["done"]], [m for m in lines if m["done"]]
    assert len(ticks) >= 2 and len(done) == 1
    reads = [_n(m["read"]) for m in ticks]
    assert reads == sorted(reads) and reads[-1] > reads[0]
    assert _n(done[0]["read"]) == sum(r.read for r in reports) and _n(done[0]["rejected"]) == reports[0].rejected


def test_ingest_that_rejects_says_where_the_reasons_are(public_data: Path, tmp_path: Path) -> None:
    """Ingesting the real TransferGraph runs rejects 5 broken rows: the summary says how many of how many were
    rejected, names the rejects report (which holds those 5 with place and reason), and shows the reasons with
    counts; with two inputs rejecting (TransferGraph and LM-BFF) it also lists the top reasons over both."""
    kb = tmp_path / "kb.duckdb"
    code, out, err = _metaml(tmp_path, "ingest", str(public_data / "metadatasets" / "transfergraph"),
                             "--kb", str(kb), "--no-enrich")
    assert code == 2, err
    pointer = next(line for line in out.splitlines() if line.startswith("rejected "))
    assert pointer.startswith("rejected 5 of 5,448 records; each one, with its place and reason, is in ")
    report = Path(pointer.rsplit(" is in ", 1)[1])
    assert report.parent == tmp_path / "rejects" and report.suffix == ".jsonl"
    rejects = [json.loads(line) for line in report.read_text().splitlines()]
    assert len(rejects) == 5 and all(r["locator"] and r["reason"] for r in rejects)
    assert re.search(r"^\s+4 x model: malformed row", out, re.M) and re.search(r"^\s+1 x eval_accuracy", out, re.M)

    code, out, err = _metaml(tmp_path, "ingest", str(public_data / "metadatasets" / "transfergraph"),
                             str(public_data / "metadatasets" / "lmbff"), "--kb", str(tmp_path / "two.duckdb"),
                             "--no-enrich", "--rejects", str(tmp_path / "two.jsonl"))
    assert code == 2, err
    assert f"rejected 60 of 20,448 records; each one, with its place and reason, is in {tmp_path / 'two.jsonl'}" in out
    top = out.split("top reasons:\n", 1)[1].splitlines()
    assert re.match(r"^\s+55 x outcome\.score: no score", top[0]) and re.match(r"^\s+4 x model: malformed", top[1])
    assert len((tmp_path / "two.jsonl").read_text().splitlines()) == 60


def test_progress_ticks_while_the_block_runs_and_stops_with_it() -> None:
    """``every`` calls its function at the interval while the block runs, and never after it; the interval comes from
    METAML_PROGRESS_INTERVAL_S (at least 0.1 s), the default where it is not a number."""
    ticks: list[float] = []
    with every(0.05, lambda: ticks.append(time.perf_counter())):
        time.sleep(0.4)
    ended, seen = time.perf_counter(), len(ticks)
    time.sleep(0.2)
    assert 3 <= seen == len(ticks) and all(t <= ended for t in ticks)
    with pytest.raises(RuntimeError), every(0.05, lambda: None):
        raise RuntimeError("the block's error goes through")
    assert progress_interval({"METAML_PROGRESS_INTERVAL_S": "2.5"}) == 2.5
    assert progress_interval({"METAML_PROGRESS_INTERVAL_S": "0"}) == 0.1
    assert progress_interval({"METAML_PROGRESS_INTERVAL_S": "often"}) == progress_interval({}) == PROGRESS_INTERVAL_S
