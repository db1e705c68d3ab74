"""`metaml quickstart` end to end on a small real subset of the public data (TransferGraph runs, SST-2 texts), in a
fresh working directory with its own knowledge base and MLflow registry; run twice to check it reuses what exists."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from collector.store import KnowledgeBase
from metaml._tracking import list_versions
from service.keys import list_keys, verify_key


def _quickstart(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "service.cli", "quickstart", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def _quickstart_timed(cwd: Path, env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess[str],
                                                                           list[float]]:
    """:func:`_quickstart`, with the time each line of stderr arrived (read as it comes, as a log would get it)."""
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "quickstart", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    times: list[float] = [time.monotonic()]
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read() if proc.stdout else ""), daemon=True)
    reader.start()
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.append(line)
        times.append(time.monotonic())
    code = proc.wait(600)
    reader.join(60)
    times.append(time.monotonic())
    return subprocess.CompletedProcess(proc.args, code, "".join(out), "".join(lines)), times


def test_quickstart_builds_everything_once_and_reuses_it(public_data: Path, tmp_path: Path) -> None:
    """From a folder holding the TransferGraph runs and the SST-2 texts, quickstart ingests the runs, describes SST-2,
    checks the meta-learner on one held-out dataset beside the baselines, trains, registers and promotes version 1,
    creates an admin key (printed once) and prints where everything is, without serving (--no-serve); progress goes
    to stderr step by step, as plain lines (no terminal) that never pause for 10 seconds, with the rejects report and
    the held-out check explained.
    Run again, it ingests nothing, describes nothing, trains nothing, creates no key, and prints the same places."""
    source = tmp_path / "public"
    (source / "metadatasets").mkdir(parents=True)
    (source / "text").mkdir()
    (source / "metadatasets" / "transfergraph").symlink_to(public_data / "metadatasets" / "transfergraph")
    (source / "text" / "glue_sst2").symlink_to(public_data / "text" / "glue_sst2")
    home = tmp_path / "home"
    home.mkdir()
    kb_path = home / "data" / "kb.duckdb"
    uri = f"sqlite:///{home / 'data' / 'mlflow.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("METAML_")}
    env.update(METAML_KB=str(kb_path), METAML_TRACKING_URI=uri)

    # progress lines every second here (10 by default): no step may leave the output silent past 10 s
    first, times = _quickstart_timed(home, {**env, "METAML_PROGRESS_INTERVAL_S": "1"}, "--from", str(source),
                                     "--no-serve", "--max-folds", "1", "--port", "8765")
    assert first.returncode == 0, first.stderr[-3000:]
    assert max(b - a for a, b in itertools.pairwise(times)) < 10.0
    assert "training: still working (" in first.stderr
    for step in range(1, 6):
        assert f"[{step}/6]" in first.stderr
    assert "[6/6]" not in first.stderr and "ingested 5,443" in first.stderr and "described 1 dataset" in first.stderr
    # without a terminal, progress comes as plain lines; rejects are counted, reported in a file and explained
    assert "ingest transfergraph: transfergraph: done, read 5,448, stored 5,443, duplicates 0, rejected 5" \
        in first.stderr
    pointer = next(line.strip() for line in first.stderr.splitlines() if line.strip().startswith("rejected 5 of"))
    report = Path(pointer.rsplit(" is in ", 1)[1])
    assert report.parent == home / "data" / "rejects" and len(report.read_text().splitlines()) == 5
    assert "top reasons:" in first.stderr and "4 x model: malformed row" in first.stderr
    # the held-out check says what it is, shows the baselines of the same fold, and points to the full evaluation
    check = first.stderr.split("held-out check: ", 1)[1].splitlines()
    assert check[0].startswith("leave-one-dataset-out on 1 held-out dataset(s) (") and "task(s))" in check[0]
    assert "regret@1 and rmse in score points, 0-100" in check[1]
    assert check[2].split() == ["predictor", "spearman", "ndcg@5", "regret@1", "rmse"]
    rows = {line.split()[0]: [float(v) for v in line.split()[1:]] for line in check[3:9]}
    assert set(rows) == {"metaml", "lookup", "random", "global_mean", "model_method_mean", "knn_datasets"}
    assert all(-1 <= r[0] <= 1 and 0 <= r[1] <= 1 and r[2] >= 0 and r[3] >= 0 for r in rows.values())
    assert "`metaml evaluate --protocol lodo` holds out every eligible dataset" in check[9]
    out = first.stdout
    assert out.startswith("metaml is ready")
    assert f"knowledge base   {kb_path} (5,443 runs)" in out
    assert "version 1 (production) - trained now" in out
    assert f"MLflow registry  {uri}" in out and f"API keys         {home / 'data' / 'keys.db'}" in out
    assert "http://127.0.0.1:8765 (not started: --no-serve)" in out and "http://127.0.0.1:8765/docs" in out
    secret = next(line.split()[-1] for line in out.splitlines() if line.strip().startswith("admin key"))
    key = verify_key(home / "data" / "keys.db", secret)
    assert key is not None and key.allows("admin")
    assert [(v.version, v.aliases) for v in list_versions(tracking_uri=uri)] == [(1, ("production",))]
    kb = KnowledgeBase(kb_path)
    assert kb.count() == 5443 and "glue/sst2" in kb.table("datasets").column("name").to_pylist()
    assert (home / "data" / "models" / "latest" / "metadata.json").is_file()

    second = _quickstart(home, env, "--from", str(source), "--no-serve", "--max-folds", "0", "--port", "8765")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "ingested 0, already there 5,443" in second.stderr
    assert "described 0 dataset(s), 1 already described" in second.stderr
    assert "reusing version 1" in second.stderr
    assert "version 1 (production)\n" in second.stdout and "trained now" not in second.stdout
    assert secret not in second.stdout and f"admin key        {key.key_id} (admin)" in second.stdout
    assert [(v.version, v.aliases) for v in list_versions(tracking_uri=uri)] == [(1, ("production",))]
    assert len(list_keys(home / "data" / "keys.db")) == 1
    assert kb.count() == 5443


def test_quickstart_without_runs_fails_cleanly(tmp_path: Path) -> None:
    """A --from folder without metadatasets/ is an error on stderr with exit code 1, and nothing is trained."""
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("METAML_")}
    env.update(METAML_KB=str(tmp_path / "kb.duckdb"), METAML_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")
    result = _quickstart(tmp_path, env, "--from", str(empty), "--no-serve")
    assert result.returncode == 1
    assert "holds no metadatasets/ folder" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("env_value", [None, "x"])
def test_default_public_data_prefers_the_environment(env_value: str | None, tmp_path: Path) -> None:
    """$METAML_PUBLIC_DATA names the public data when set; otherwise ../shared/data is used when it exists."""
    from service.cli.quickstart import default_public_data

    environ = {"METAML_PUBLIC_DATA": str(tmp_path / env_value)} if env_value else {}
    found = default_public_data(environ)
    if env_value:
        assert found == tmp_path / "x"
    else:
        assert found is None or (found / "metadatasets").is_dir()
