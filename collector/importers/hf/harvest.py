"""Hub harvester: download the model cards of a task's most downloaded Hub models, resumably, and parse them.

:func:`harvest_hub` lists the models of a pipeline task on the Hugging Face Hub (``HfApi().list_models(
pipeline_tag=task, sort="downloads", limit=limit)``), downloads each model's ``README.md`` and, where there is one,
its ``config.json`` (``HfApi().hf_hub_download``), and saves them as ``out_dir/<author>/<model>/README.md`` (+
``config.json``). The output directory is itself an input of ``metaml ingest out_dir --format hf_cards``
(:class:`collector.importers.hf.model_cards.ModelCards` reads such a directory); after the download the harvester
runs the same card parser over it and reports how many cards yield a usable run.

Listing and fetching are the two operations of a :class:`CardSource`:

* :class:`HubSource` calls the real ``huggingface_hub`` API (network);
* :class:`OfflineDirSource` reads a directory of ``<author>/<model>/README.md`` cards (for example the shipped
  ``cards.tar.gz`` extracted, or an earlier harvest): the listing keeps the cards whose task (model-index task type,
  ``pipeline_tag``, tags, then the importer's inference) is the requested one, sorted by id since there are no
  download counts offline. Everything after listing and fetching (resume state, files, parsing) is the same code.

Resume: ``out_dir/.harvest_state.jsonl`` is a journal with one line per model done (with whether a config was saved)
or failed (with its reason and whether it is permanent: repository missing or gated, no README, not retried; or
transient: rate limit or server error after all retries, network error, retried on the next run). A model's card
files are written (atomically: temp file + rename) before its line is appended, so a harvest killed at any point
continues where it stopped, refetching at most the model in flight; ``resume=False`` truncates the journal and
fetches everything again. A model id without an author (legacy ids such
as ``gpt2``) is saved under ``_/<model>/``; the card reader maps ``_/x`` back to ``x``.

Rate limits: every Hub call goes through :class:`Backoff`, which retries ``HfHubHTTPError`` responses with status
429 (and 500/502/503/504) up to ``max_retries`` times, waiting ``Retry-After`` seconds when the response says so
(seconds or an HTTP date, capped at ``max_wait``) and an exponential ``base_delay * 2**attempt`` (capped at
``max_delay``) otherwise; the status is read from the error's ``response.status_code`` (``huggingface_hub`` keeps the
``requests``/``httpx`` response on the error). Other HTTP errors are not retried. Recent ``huggingface_hub`` versions
also retry 429 inside some calls; this layer adds the retries older versions lack and takes over when the library's
own are spent.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from itertools import islice
from pathlib import Path
from typing import Any, Protocol, TypeVar

import huggingface_hub
from huggingface_hub.utils import EntryNotFoundError, GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

from collector.errors import CollectorError, FormatError
from collector.formats._base import Rejected
from collector.importers.hf.model_cards import LEGACY_AUTHOR, ModelCards, card_task

#: ``RemoteEntryNotFoundError`` (huggingface_hub >= 1.0) is the HTTP 404 of a missing file; older versions raise
#: ``EntryNotFoundError`` for it.
RemoteEntryNotFoundError: type[Exception] = getattr(huggingface_hub.errors, "RemoteEntryNotFoundError",
                                                    EntryNotFoundError)
MISSING_FILE_ERRORS: tuple[type[Exception], ...] = (EntryNotFoundError, RemoteEntryNotFoundError)
PERMANENT_ERRORS: tuple[type[Exception], ...] = (RepositoryNotFoundError, GatedRepoError, *MISSING_FILE_ERRORS)
#: Network failures: ``OSError`` (requests-based versions) and the HTTP client's own base error (httpx-based ones).
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (OSError, getattr(huggingface_hub.errors, "HTTPError", OSError))

STATE_FILE = ".harvest_state.jsonl"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(?:/[A-Za-z0-9][\w.\-]*)?$")

T = TypeVar("T")


class HarvestError(CollectorError):
    """The harvest could not start (no listing, unwritable output directory, unreadable offline directory)."""


# ----------------------------------------------------------------------------------------------------------------
# Backoff


def http_status(error: BaseException) -> int | None:
    """The HTTP status of a ``huggingface_hub`` error (``error.response.status_code``), or None."""
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def retry_after_seconds(error: BaseException, *, now: datetime | None = None) -> float | None:
    """The ``Retry-After`` header of the error's response in seconds (delay-seconds or an HTTP date), or None."""
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    value = headers.get("Retry-After") or headers.get("retry-after")
    if value is None:
        return None
    value = str(value).strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass
class Backoff:
    """Retry Hub calls on rate limits (429) and transient server errors, honoring ``Retry-After``.

    Attributes:
        max_retries: retries after the first attempt; the error is raised when they are spent.
        base_delay: first exponential wait in seconds (then doubled each retry).
        max_delay: cap of the exponential wait.
        max_wait: cap of a server-requested ``Retry-After`` wait.
        sleep: the wait function (``time.sleep``).
        retries: waits done so far (for reports).
        waited_s: seconds waited so far.
    """

    max_retries: int = 5
    base_delay: float = 1.0
    max_delay: float = 60.0
    max_wait: float = 300.0
    sleep: Callable[[float], None] = time.sleep
    retries: int = 0
    waited_s: float = 0.0

    def delay(self, attempt: int, error: BaseException) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based) after ``error``."""
        requested = retry_after_seconds(error)
        if requested is not None:
            return min(requested, self.max_wait)
        return min(self.base_delay * (2**attempt), self.max_delay)

    def should_retry(self, error: BaseException) -> bool:
        """True for ``HfHubHTTPError`` with a retryable status (429, 5xx gateway errors)."""
        return isinstance(error, HfHubHTTPError) and http_status(error) in RETRY_STATUSES

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)``, retried as described in the class docstring.

        Raises:
            HfHubHTTPError: a non-retryable HTTP error, or the last retryable one when the retries are spent.
        """
        attempt = 0
        while True:
            try:
                return fn(*args, **kwargs)
            except HfHubHTTPError as e:
                if not self.should_retry(e) or attempt >= self.max_retries:
                    raise
                wait = self.delay(attempt, e)
                self.retries += 1
                self.waited_s += wait
                self.sleep(wait)
                attempt += 1


# ----------------------------------------------------------------------------------------------------------------
# Sources


@dataclass
class FetchedCard:
    """What was fetched for one model: the card text and, when the repository has one, its config.json text."""

    readme: str
    config: str | None = None


class CardSource(Protocol):
    """Where cards come from: list a task's model ids, then fetch each model's card."""

    def list_models(self, task: str, limit: int) -> list[str]:
        """Up to ``limit`` model ids of ``task``, most relevant first."""
        ...

    def fetch(self, model_id: str) -> FetchedCard:
        """The card (and config) of ``model_id``.

        Raises:
            FileNotFoundError / RepositoryNotFoundError / GatedRepoError / EntryNotFoundError: permanently missing.
            HfHubHTTPError / OSError: anything else (treated as transient).
        """
        ...


class HubSource:
    """The Hugging Face Hub through ``huggingface_hub.HfApi`` (network)."""

    def __init__(self, api: huggingface_hub.HfApi | None = None, backoff: Backoff | None = None, *,
                 cache_dir: Path | None = None) -> None:
        self.api = api or huggingface_hub.HfApi()
        self.backoff = backoff or Backoff()
        self.cache_dir = cache_dir

    def list_models(self, task: str, limit: int) -> list[str]:
        def listing() -> list[str]:
            models = self.api.list_models(pipeline_tag=task, sort="downloads", limit=limit)
            return [m.id for m in islice(models, limit)]

        return self.backoff.call(listing)

    def fetch(self, model_id: str) -> FetchedCard:
        readme = self._download(model_id, "README.md")
        if readme is None:
            raise EntryNotFoundError(f"{model_id} has no README.md")
        return FetchedCard(readme=readme, config=self._download(model_id, "config.json"))

    def _download(self, model_id: str, filename: str) -> str | None:
        try:
            path = self.backoff.call(self.api.hf_hub_download, model_id, filename, cache_dir=self.cache_dir)
        except MISSING_FILE_ERRORS:
            return None
        return Path(path).read_text(encoding="utf-8", errors="replace")


class OfflineDirSource:
    """A directory of ``<author>/<model>/README.md`` cards (+ ``config.json``), listed by the card's own task."""

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise HarvestError(f"offline directory not found: {root}")
        self.root = root

    def list_models(self, task: str, limit: int) -> list[str]:
        ids: list[str] = []
        for readme in sorted(self.root.glob("*/*/README.md")):
            model_id = _dir_to_id(readme.parent.parent.name, readme.parent.name)
            try:
                text = readme.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            if task in card_task(text, model_id):
                ids.append(model_id)
                if len(ids) >= limit:
                    break
        return ids

    def fetch(self, model_id: str) -> FetchedCard:
        folder = self.root / _id_to_dir(model_id)
        readme = folder / "README.md"
        if not readme.is_file():
            raise FileNotFoundError(f"{model_id}: no README.md in {folder}")
        config = folder / "config.json"
        return FetchedCard(readme=readme.read_text(encoding="utf-8", errors="replace"),
                           config=config.read_text(encoding="utf-8", errors="replace") if config.is_file() else None)


def _id_to_dir(model_id: str) -> Path:
    author, _, name = model_id.rpartition("/")
    return Path(author or LEGACY_AUTHOR) / name


def _dir_to_id(author: str, name: str) -> str:
    return name if author == LEGACY_AUTHOR else f"{author}/{name}"


# ----------------------------------------------------------------------------------------------------------------
# State and result


@dataclass
class HarvestState:
    """Resume state: models done and models failed (with reason and permanence), kept as an append-only journal.

    Each event is one JSON line (``{"id", "status": "done"|"failed", ...}``) appended and flushed as it happens, so
    recording a model costs one short write whatever the harvest's size, and a kill can at worst cut the last line,
    which :meth:`load` ignores (that model is fetched again). The last event of a model wins.
    """

    path: Path
    done: dict[str, dict[str, Any]] = field(default_factory=dict)
    failed: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, out_dir: Path) -> HarvestState:
        state = cls(out_dir / STATE_FILE)
        if not state.path.exists():
            return state
        try:
            lines = state.path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise HarvestError(f"resume state {state.path} is unreadable ({e}); delete it or use --no-resume") from e
        for line in lines:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
            if isinstance(event, dict) and isinstance(event.get("id"), str):
                state._apply(event)
        return state

    @classmethod
    def fresh(cls, out_dir: Path) -> HarvestState:
        """An empty state; the journal on disk is truncated."""
        state = cls(out_dir / STATE_FILE)
        state.path.write_text("", encoding="utf-8")
        return state

    def record(self, event: dict[str, Any]) -> None:
        """Apply ``event`` and append it to the journal (flushed to the OS before returning)."""
        self._apply(event)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(event, sort_keys=True) + "\n")
            f.flush()

    def _apply(self, event: dict[str, Any]) -> None:
        model_id = event["id"]
        if event.get("status") == "done":
            self.done[model_id] = event
            self.failed.pop(model_id, None)
        elif event.get("status") == "failed":
            self.failed[model_id] = event
            self.done.pop(model_id, None)


@dataclass
class HarvestResult:
    """What one :func:`harvest_hub` call did, and what the saved cards yield."""

    task: str
    out_dir: Path
    listed: int = 0
    fetched: int = 0
    skipped: int = 0
    """Listed models already done (or failed permanently) in an earlier run, not fetched again."""
    failed: dict[str, str] = field(default_factory=dict)
    """Models that failed in this run -> reason."""
    configs: int = 0
    retries: int = 0
    waited_s: float = 0.0
    cards: int = 0
    """Cards in the output directory after the harvest."""
    usable: int = 0
    """Of those, cards that yield a run record."""
    rejected: Counter[str] = field(default_factory=Counter)
    """Why the other cards do not (reason -> count)."""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["out_dir"] = str(self.out_dir)
        data["rejected"] = dict(self.rejected.most_common())
        data["waited_s"] = round(self.waited_s, 3)
        data["seconds"] = round(self.seconds, 3)
        return data


# ----------------------------------------------------------------------------------------------------------------
# Harvest


def harvest_hub(task: str, limit: int, out_dir: Path, *, api: huggingface_hub.HfApi | None = None,
                offline_dir: Path | None = None, resume: bool = True, source: CardSource | None = None,
                backoff: Backoff | None = None, on_listed: Callable[[int], None] | None = None,
                on_model: Callable[[str, str], None] | None = None) -> HarvestResult:
    """Harvest the cards of up to ``limit`` models of ``task`` into ``out_dir`` and parse them.

    Args:
        task: a Hub pipeline tag (``text-classification``, ``token-classification``...).
        limit: how many models to list (the top ``limit`` by downloads on the Hub).
        out_dir: where cards go (``<author>/<model>/README.md`` + ``config.json``) with the resume state.
        api: the ``HfApi`` to use (default: a new one; ignored with ``offline_dir`` or ``source``).
        offline_dir: read cards from this directory instead of the Hub (see :class:`OfflineDirSource`).
        resume: continue from ``out_dir``'s state (skip models done or failed permanently); False refetches all.
        source: any :class:`CardSource` (overrides ``api`` and ``offline_dir``).
        backoff: the retry policy of Hub calls (default :class:`Backoff`).
        on_listed: called once with the number of models listed (progress bars).
        on_model: called after each listed model with ``(model_id, status)``; status is ``fetched``, ``skipped``
            or ``failed``.

    Raises:
        HarvestError: the listing failed, or ``out_dir`` / ``offline_dir`` is unusable.
    """
    started = time.perf_counter()
    backoff = backoff or Backoff()
    if source is None:
        source = OfflineDirSource(offline_dir) if offline_dir is not None else HubSource(api, backoff)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise HarvestError(f"cannot create output directory {out_dir}: {e}") from e
    state = HarvestState.load(out_dir) if resume else HarvestState.fresh(out_dir)
    result = HarvestResult(task=task, out_dir=out_dir)
    try:
        ids = source.list_models(task, limit)
    except TRANSIENT_ERRORS as e:
        raise HarvestError(f"listing the {task!r} models failed: {_first_line(e)}") from e
    result.listed = len(ids)
    if on_listed is not None:
        on_listed(len(ids))
    for model_id in ids:
        status = _harvest_one(source, model_id, task, out_dir, state, result, resume=resume)
        if on_model is not None:
            on_model(model_id, status)
    backoff_used = getattr(source, "backoff", backoff)
    result.retries, result.waited_s = backoff_used.retries, backoff_used.waited_s
    _summarize_cards(out_dir, result)
    result.seconds = time.perf_counter() - started
    return result


def _harvest_one(source: CardSource, model_id: str, task: str, out_dir: Path, state: HarvestState,
                 result: HarvestResult, *, resume: bool) -> str:
    if resume and model_id in state.done and (out_dir / _id_to_dir(model_id) / "README.md").is_file():
        result.skipped += 1
        return "skipped"
    if resume and state.failed.get(model_id, {}).get("permanent"):
        result.skipped += 1
        return "skipped"
    if not _REPO_ID.match(model_id):
        _fail(state, result, model_id, task, "not a valid Hub model id", permanent=True)
        return "failed"
    try:
        card = source.fetch(model_id)
    except (*PERMANENT_ERRORS, FileNotFoundError) as e:
        _fail(state, result, model_id, task, f"{type(e).__name__}: {_first_line(e)}", permanent=True)
        return "failed"
    except HfHubHTTPError as e:
        _fail(state, result, model_id, task, f"HTTP {http_status(e)}: {_first_line(e)}", permanent=False)
        return "failed"
    except TRANSIENT_ERRORS as e:
        _fail(state, result, model_id, task, f"{type(e).__name__}: {_first_line(e)}", permanent=False)
        return "failed"
    folder = out_dir / _id_to_dir(model_id)
    folder.mkdir(parents=True, exist_ok=True)
    _atomic_write(folder / "README.md", card.readme)
    if card.config is not None:
        _atomic_write(folder / "config.json", card.config)
        result.configs += 1
    state.record({"id": model_id, "status": "done", "task": task, "config": card.config is not None,
                  "at": _now()})
    result.fetched += 1
    return "fetched"


def _fail(state: HarvestState, result: HarvestResult, model_id: str, task: str, reason: str, *,
          permanent: bool) -> None:
    state.record({"id": model_id, "status": "failed", "task": task, "reason": reason, "permanent": permanent,
                  "at": _now()})
    result.failed[model_id] = reason


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _summarize_cards(out_dir: Path, result: HarvestResult) -> None:
    """Run the card parser over the whole output directory (what ``metaml ingest --format hf_cards`` will read)."""
    try:
        items: Iterator[Any] = ModelCards().read(out_dir)
        for item in items:
            result.cards += 1
            if isinstance(item, Rejected):
                result.rejected[item.reason] += 1
            else:
                result.usable += 1
    except FormatError:
        return


__all__ = [
    "STATE_FILE",
    "Backoff",
    "CardSource",
    "FetchedCard",
    "HarvestError",
    "HarvestResult",
    "HarvestState",
    "HubSource",
    "OfflineDirSource",
    "harvest_hub",
    "http_status",
    "retry_after_seconds",
]
