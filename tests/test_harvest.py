"""Tests of the Hub harvester: offline harvesting of the real cards, resume, rate-limit backoff with real
``huggingface_hub`` errors, the real ``HfApi`` against a loopback Hub, and the ``harvest hub`` command."""

from __future__ import annotations

import hashlib
import json
import tarfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import huggingface_hub
import pytest
from click.testing import CliRunner
from huggingface_hub.utils import HfHubHTTPError, hf_raise_for_status

from collector.formats import RawRecord
from collector.importers.hf.harvest import (
    STATE_FILE,
    Backoff,
    FetchedCard,
    HarvestState,
    HubSource,
    OfflineDirSource,
    harvest_hub,
    http_status,
    retry_after_seconds,
)
from collector.importers.hf.model_cards import ModelCards
from collector.ingest import ingest_path
from collector.store import KnowledgeBase
from service.cli.harvest import harvest

TASK = "text-classification"


@pytest.fixture(scope="module")
def cards_dir(public_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real shipped cards extracted to a temporary directory as <author>/<model>/README.md."""
    root = tmp_path_factory.mktemp("cards")
    with tarfile.open(public_data / "metadatasets" / "hf_model_cards" / "cards.tar.gz", "r:gz") as tar:
        tar.extractall(root, filter="data")
    return root


def readme_mtimes(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.glob("*/*/README.md")}


class CountingSource(OfflineDirSource):
    """The offline directory source, counting fetches (and optionally listing extra ids / failing some)."""

    def __init__(self, root: Path, extra_ids: tuple[str, ...] = (), errors: dict[str, Exception] | None = None):
        super().__init__(root)
        self.fetches: list[str] = []
        self.extra_ids = extra_ids
        self.errors = errors or {}

    def list_models(self, task: str, limit: int) -> list[str]:
        return [*self.extra_ids, *super().list_models(task, limit)][:limit]

    def fetch(self, model_id: str) -> FetchedCard:
        self.fetches.append(model_id)
        if model_id in self.errors:
            raise self.errors[model_id]
        return super().fetch(model_id)


def http_error(status: int, headers: dict[str, str] | None = None) -> HfHubHTTPError:
    """A real ``HfHubHTTPError`` as huggingface_hub raises it: ``hf_raise_for_status`` on a response of the HTTP
    client class the installed version uses (httpx/httpx2 ``Response``; ``requests.Response`` before 1.0)."""
    response_cls = huggingface_hub.errors.Response
    url = "https://huggingface.co/api/models/someone/model"
    if response_cls.__module__.startswith("requests"):
        import requests

        response = requests.Response()
        response.status_code = status
        response.headers.update(headers or {})
        response.url = url
        response.reason = "Too Many Requests" if status == 429 else "Error"
        response.request = requests.Request("GET", url).prepare()
    else:
        module = __import__(response_cls.__module__.split(".")[0])
        response = response_cls(status, headers=headers or {}, request=module.Request("GET", url))
    try:
        hf_raise_for_status(response)
    except HfHubHTTPError as e:
        return e
    raise AssertionError("hf_raise_for_status did not raise")


# --- offline harvesting and resume -------------------------------------------------------------------------------


def test_offline_harvest_writes_ingestible_cards(cards_dir: Path, tmp_path: Path) -> None:
    """An offline harvest lists the real cards of the task, writes them as <author>/<model>/README.md with a resume
    journal, parses them (usable + rejected = cards) and the directory ingests as hf_cards with the same count."""
    out = tmp_path / "out"
    result = harvest_hub(TASK, 40, out, offline_dir=cards_dir)
    assert (result.listed, result.fetched, result.skipped, result.failed) == (40, 40, 0, {})
    assert result.cards == 40 and result.usable + sum(result.rejected.values()) == 40 and result.usable > 5
    assert len((out / STATE_FILE).read_text().splitlines()) == 40
    for readme in out.glob("*/*/README.md"):
        original = cards_dir / readme.relative_to(out)
        assert readme.read_bytes() == original.read_bytes()
    assert ModelCards.detect(out)
    kb = KnowledgeBase(tmp_path / "kb.duckdb")
    (report,) = ingest_path(kb, out)
    assert report.format == "hf_cards" and report.ingested == result.usable and report.read == 40


def test_offline_listing_follows_task(cards_dir: Path) -> None:
    """Offline listing keeps only cards of the requested task (here ASR), sorted by id, at most ``limit``."""
    source = OfflineDirSource(cards_dir)
    ids = source.list_models("automatic-speech-recognition", 50)
    assert len(ids) == 50 and ids == sorted(ids)
    assert sum("wav2vec2" in i or "xls" in i or "xlsr" in i or "asr" in i.lower() for i in ids) > 35


def test_resume_after_limit_does_not_refetch(cards_dir: Path, tmp_path: Path) -> None:
    """A harvest stopped by a small limit continues with a larger one: the models already there are skipped (not
    fetched again, files untouched), only the new ones are fetched."""
    out = tmp_path / "out"
    first = CountingSource(cards_dir)
    harvest_hub(TASK, 5, out, source=first)
    assert len(first.fetches) == 5
    before = readme_mtimes(out)
    second = CountingSource(cards_dir)
    result = harvest_hub(TASK, 12, out, source=second)
    assert (result.skipped, result.fetched) == (5, 7)
    assert len(second.fetches) == 7 and not set(second.fetches) & set(first.fetches)
    after = readme_mtimes(out)
    assert {k: after[k] for k in before} == before and len(after) == 12


def test_resume_after_kill(cards_dir: Path, tmp_path: Path) -> None:
    """A harvest interrupted after 3 models (and with its journal's last line cut by the kill) resumes: the 3 done
    are skipped, the cut line is ignored, the rest is fetched; --no-resume fetches everything again."""
    out = tmp_path / "out"
    seen: list[str] = []

    def interrupt(model_id: str, status: str) -> None:
        seen.append(model_id)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        harvest_hub(TASK, 10, out, source=CountingSource(cards_dir), on_model=interrupt)
    with open(out / STATE_FILE, "a", encoding="utf-8") as f:
        f.write('{"id": "half/writ')
    assert set(HarvestState.load(out).done) == set(seen)
    source = CountingSource(cards_dir)
    result = harvest_hub(TASK, 10, out, source=source)
    assert (result.skipped, result.fetched) == (3, 7) and not set(source.fetches) & set(seen)
    again = CountingSource(cards_dir)
    assert harvest_hub(TASK, 10, out, source=again, resume=False).fetched == 10 and len(again.fetches) == 10


def test_failures_permanent_and_transient(cards_dir: Path, tmp_path: Path) -> None:
    """A model whose card is missing fails permanently (skipped on the next run); one that hit a server error after
    the retries fails transiently and is fetched again on the next run; the others are saved."""
    out = tmp_path / "out"
    listed = OfflineDirSource(cards_dir).list_models(TASK, 3)
    source = CountingSource(cards_dir, extra_ids=("ghost/missing-model",), errors={listed[0]: http_error(503)})
    result = harvest_hub(TASK, 4, out, source=source)
    assert set(result.failed) == {"ghost/missing-model", listed[0]}
    assert "FileNotFoundError" in result.failed["ghost/missing-model"] and "HTTP 503" in result.failed[listed[0]]
    state = HarvestState.load(out)
    assert state.failed["ghost/missing-model"]["permanent"] and not state.failed[listed[0]]["permanent"]
    retry = CountingSource(cards_dir, extra_ids=("ghost/missing-model",))
    second = harvest_hub(TASK, 4, out, source=retry)
    assert retry.fetches == [listed[0]] and second.skipped == 3 and second.failed == {}
    assert listed[0] in HarvestState.load(out).done


# --- backoff with real huggingface_hub errors -----------------------------------------------------------------


def test_backoff_honors_retry_after() -> None:
    """A 429 HfHubHTTPError with ``Retry-After: 7`` is retried after 7 s (twice here), then the call succeeds."""
    error = http_error(429, {"Retry-After": "7"})
    assert isinstance(error, HfHubHTTPError) and http_status(error) == 429 and retry_after_seconds(error) == 7
    waits: list[float] = []
    calls = iter([error, error, "ok"])

    def flaky() -> str:
        outcome = next(calls)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    backoff = Backoff(sleep=waits.append)
    assert backoff.call(flaky) == "ok"
    assert waits == [7.0, 7.0] and backoff.retries == 2 and backoff.waited_s == 14.0


def test_backoff_exponential_and_gives_up() -> None:
    """Without Retry-After the waits double from base_delay up to max_delay; after max_retries the last 429 is
    raised; a 404 is not retried at all."""
    waits: list[float] = []
    backoff = Backoff(max_retries=4, base_delay=1.5, max_delay=5.0, sleep=waits.append)
    error = http_error(429)

    def always() -> None:
        raise error

    with pytest.raises(HfHubHTTPError) as raised:
        backoff.call(always)
    assert raised.value is error and waits == [1.5, 3.0, 5.0, 5.0]
    not_found = http_error(404)
    waits.clear()

    def missing() -> None:
        raise not_found

    with pytest.raises(HfHubHTTPError):
        backoff.call(missing)
    assert waits == []


def test_retry_after_http_date_and_cap() -> None:
    """``Retry-After`` as an HTTP date is converted to seconds from now; a huge one is capped at max_wait."""
    now = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
    error = http_error(429, {"Retry-After": format_datetime(now + timedelta(seconds=30), usegmt=True)})
    assert retry_after_seconds(error, now=now) == pytest.approx(30.0)
    assert Backoff(max_wait=10).delay(0, http_error(429, {"Retry-After": "3600"})) == 10


# --- the real HfApi against a loopback Hub ----------------------------------------------------------------------


class _Hub(BaseHTTPRequestHandler):
    """Serves /api/models (one 429 first) and /<repo>/resolve/<rev>/<file> from a directory of cards."""

    root: Path
    ids: list[str]
    requests: list[str]

    def log_message(self, *args: Any) -> None:
        pass

    def do_HEAD(self) -> None:
        self._file(head=True)

    def do_GET(self) -> None:
        if self.path.startswith("/api/models"):
            self.requests.append(self.path)
            if len([r for r in self.requests if r.startswith("/api/models")]) == 1:
                self._reply(429, b"", {"Retry-After": "0"})
                return
            body = json.dumps([{"id": i, "_id": i, "modelId": i, "pipeline_tag": TASK} for i in self.ids]).encode()
            self._reply(200, body, {"Content-Type": "application/json"})
            return
        self._file(head=False)

    def _file(self, *, head: bool) -> None:
        parts = self.path.split("?")[0].strip("/").split("/")
        if "resolve" not in parts:
            self._reply(404, b"", {})
            return
        at = parts.index("resolve")
        path = self.root / "/".join(parts[:at]) / "/".join(parts[at + 2 :])
        self.requests.append(f"{self.command} {self.path}")
        if not path.is_file():
            self._reply(404, b"", {"X-Error-Code": "EntryNotFound"})
            return
        data = path.read_bytes()
        headers = {"ETag": f'"{hashlib.sha1(data).hexdigest()}"', "X-Repo-Commit": "a" * 40}
        self._reply(200, b"" if head else data, headers, length=len(data))

    def _reply(self, status: int, body: bytes, headers: dict[str, str], length: int | None = None) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        if body:
            self.wfile.write(body)


@pytest.fixture
def loopback_hub(cards_dir: Path) -> Iterator[tuple[str, type[_Hub]]]:
    """A Hub on 127.0.0.1 serving the real cards (3 listed models) through the real HTTP endpoints."""
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        pytest.skip("HF_HUB_OFFLINE is set: huggingface_hub refuses every request")
    ids = OfflineDirSource(cards_dir).list_models(TASK, 3)
    handler = type("Hub", (_Hub,), {"root": cards_dir, "ids": ids, "requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_hub_source_with_real_hfapi(loopback_hub: tuple[str, type[_Hub]], tmp_path: Path) -> None:
    """The network source drives the real ``HfApi`` (list_models sorted by downloads, hf_hub_download of README.md
    and config.json) against a loopback Hub: a first 429 on the listing is retried, cards are saved, a missing
    config.json is no failure, and the harvested directory parses."""
    endpoint, hub = loopback_hub
    api = huggingface_hub.HfApi(endpoint=endpoint, token=False)
    source = HubSource(api, Backoff(sleep=lambda s: None), cache_dir=tmp_path / "cache")
    out = tmp_path / "out"
    result = harvest_hub(TASK, 3, out, source=source)
    assert (result.listed, result.fetched, result.failed, result.configs) == (3, 3, {}, 0)
    listings = [r for r in hub.requests if r.startswith("/api/models")]
    assert len(listings) == 2 and "pipeline_tag=text-classification" in listings[1] and "sort=downloads" in listings[1]
    assert any(r.endswith("/config.json") for r in hub.requests)
    for model_id in hub.ids:
        assert (out / model_id / "README.md").read_bytes() == (hub.root / model_id / "README.md").read_bytes()
    items = list(ModelCards().read(out))
    assert len(items) == 3 and result.usable == sum(isinstance(i, RawRecord) for i in items)


# --- the command ----------------------------------------------------------------------------------------------


def test_cli_harvest_and_ingest(cards_dir: Path, tmp_path: Path) -> None:
    """``harvest hub --offline-dir`` harvests, ingests into --kb and prints a JSON summary; exit code 2 because some
    cards are rejected; a second run fetches nothing new and ingests only duplicates; --no-ingest leaves no KB."""
    out, kb = tmp_path / "out", tmp_path / "kb.duckdb"
    args = ["hub", "--task", TASK, "--limit", "15", "--out", str(out), "--offline-dir", str(cards_dir),
            "--kb", str(kb), "--json"]
    run = CliRunner().invoke(harvest, args)
    assert run.exit_code == 2, run.output
    summary = json.loads(run.output)
    assert summary["harvest"]["fetched"] == 15
    assert summary["ingest"]["ingested"] == summary["harvest"]["usable"] > 0
    assert summary["ingest"]["rejected"] == 15 - summary["harvest"]["usable"]
    again = json.loads(CliRunner().invoke(harvest, args).output)
    assert again["harvest"]["fetched"] == 0 and again["harvest"]["skipped"] == 15
    assert again["ingest"]["ingested"] == 0 and again["ingest"]["duplicates"] == summary["harvest"]["usable"]
    plain = CliRunner().invoke(harvest, ["hub", "--task", TASK, "--limit", "3", "--out", str(tmp_path / "o2"),
                                         "--offline-dir", str(cards_dir), "--kb", str(tmp_path / "none.duckdb"),
                                         "--no-ingest"])
    assert plain.exit_code == 0, plain.output
    assert "listed 3, fetched 3" in plain.output and not (tmp_path / "none.duckdb").exists()


def test_cli_errors(tmp_path: Path) -> None:
    """A missing --offline-dir is a usage error; --task is required."""
    missing = CliRunner().invoke(harvest, ["hub", "--task", TASK, "--out", str(tmp_path / "o"),
                                           "--offline-dir", str(tmp_path / "nope")])
    assert missing.exit_code != 0 and "does not exist" in missing.output
    assert CliRunner().invoke(harvest, ["hub", "--out", str(tmp_path / "o")]).exit_code != 0
