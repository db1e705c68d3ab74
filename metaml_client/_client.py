"""Synchronous and asynchronous clients of the metaml HTTP API (see docs/api.md).

Only httpx and the standard library are imported: the client installs and runs anywhere without the service's
dependencies."""

from __future__ import annotations

import asyncio
import email.utils
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

__all__ = [
    "AsyncClient",
    "Client",
    "Decision",
    "DescribeResult",
    "Health",
    "MetamlAPIError",
    "ModelList",
    "ModelVersion",
    "PredictResult",
    "Prediction",
    "PromoteResult",
    "RankedConfig",
    "Recommendation",
    "RecordStatus",
    "RunPage",
    "SqlResult",
    "SuggestResult",
    "Suggestion",
    "UploadResult",
]

RETRY_STATUSES = frozenset({429, 503})
MAX_RETRY_SLEEP_S = 60.0


class MetamlAPIError(Exception):
    """An error answer of the API: its HTTP status and the body's ``{"error": {code, message, details}}``."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    @classmethod
    def from_response(cls, response: httpx.Response) -> MetamlAPIError:
        try:
            err = response.json()["error"]
            return cls(response.status_code, str(err.get("code")), str(err.get("message")), err.get("details"))
        except (ValueError, KeyError, TypeError, AttributeError):
            return cls(response.status_code, "http_error", response.text[:500] or response.reason_phrase)

    def key_hint(self, scope: str = "read") -> str | None:
        """For a missing, invalid or under-scoped key (401, 403): which key the operation needs and how an operator
        creates one; None for any other error. The scope is the one the answer names, else ``scope``."""
        if self.status not in (401, 403):
            return None
        named = re.search(r"'(\w+)' scope", self.message)
        needed = self.details.get("needed") if isinstance(self.details, Mapping) else None
        needed = str(needed or (named.group(1) if named else scope))
        return (f"this server needs an API key with the '{needed}' scope (it answered {self.status}: "
                f"{self.message}).\nAn operator creates one on the server's machine with:\n"
                f"    metaml keys create --name NAME --scope {needed}\n"
                "and the key it prints once (mk_...) is passed as the client's api_key (the examples' --key).")


# -- typed results ----------------------------------------------------------------------------------------------------
@dataclass
class RecordStatus:
    """What happened to one uploaded record (the server's ``RecordStatus``; a test keeps the two equal)."""

    index: int
    locator: str
    status: Literal["accepted", "duplicate", "rejected"]
    run_id: str | None = None
    uri: str | None = None
    field: str | None = None
    reason: str | None = None


@dataclass
class UploadResult:
    """Per-record statuses of an upload and their totals (the server's ``UploadResult``; a test keeps the two
    equal)."""

    total: int
    accepted: int
    duplicates: int
    rejected: int
    uploader: str
    records: list[RecordStatus]
    source: str | None = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> UploadResult:
        return cls(total=d["total"], accepted=d["accepted"], duplicates=d["duplicates"], rejected=d["rejected"],
                   uploader=d["uploader"], records=[RecordStatus(**r) for r in d["records"]], source=d.get("source"))


@dataclass
class RunPage:
    runs: list[dict[str, Any]]
    count: int
    next_cursor: str | None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RunPage:
        return cls(runs=list(d["runs"]), count=d["count"], next_cursor=d.get("next_cursor"))


@dataclass
class DescribeResult:
    name: str | None
    n_rows: int
    meta: dict[str, Any]
    stored: bool

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> DescribeResult:
        return cls(name=d.get("name"), n_rows=d["n_rows"], meta=dict(d["meta"]), stored=d["stored"])


@dataclass
class SqlResult:
    columns: list[dict[str, str]]
    rows: list[list[Any]]
    row_count: int
    truncated: bool

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SqlResult:
        return cls(columns=list(d["columns"]), rows=list(d["rows"]), row_count=d["row_count"],
                   truncated=d["truncated"])

    @property
    def names(self) -> list[str]:
        return [c["name"] for c in self.columns]

    def records(self) -> list[dict[str, Any]]:
        """The rows as dicts keyed by column name."""
        names = self.names
        return [dict(zip(names, row, strict=True)) for row in self.rows]


@dataclass
class Prediction:
    index: int
    points: float
    score: float
    points_lo: float
    points_hi: float
    rank_score: float | None
    runtime_s: float | None
    p_fail: float | None
    support: list[dict[str, Any]]

    @classmethod
    def from_json(cls, d: Mapping[str, Any], offset: int = 0) -> Prediction:
        return cls(index=d["index"] + offset, points=d["points"], score=d["score"], points_lo=d["points_lo"],
                   points_hi=d["points_hi"], rank_score=d.get("rank_score"), runtime_s=d.get("runtime_s"),
                   p_fail=d.get("p_fail"), support=list(d.get("support") or []))


@dataclass
class PredictResult:
    model: dict[str, Any]
    model_ms: float
    n_candidates: int
    task: dict[str, Any]
    predictions: list[Prediction]

    @classmethod
    def merge(cls, answers: Sequence[Mapping[str, Any]], sizes: Sequence[int]) -> PredictResult:
        """One result from the answers to consecutive batches (indices continue across batches)."""
        preds: list[Prediction] = []
        offset = 0
        for answer, size in zip(answers, sizes, strict=True):
            preds.extend(Prediction.from_json(p, offset) for p in answer["predictions"])
            offset += size
        first = answers[0]
        return cls(model=dict(first["model"]), model_ms=sum(a["model_ms"] for a in answers),
                   n_candidates=sum(a["n_candidates"] for a in answers), task=dict(first["task"]), predictions=preds)


@dataclass
class RankedConfig:
    rank: int
    config: dict[str, Any]
    points: float
    score: float
    points_lo: float
    points_hi: float
    runtime_s: float | None
    p_fail: float
    utility: float


@dataclass
class Recommendation:
    model: dict[str, Any]
    model_ms: float
    n_candidates: int
    truncated: bool
    task: dict[str, Any]
    params: dict[str, str]
    ranked: list[RankedConfig]
    priors: dict[str, Any]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Recommendation:
        return cls(model=dict(d["model"]), model_ms=d["model_ms"], n_candidates=d["n_candidates"],
                   truncated=d["truncated"], task=dict(d["task"]), params=dict(d["params"]),
                   ranked=[RankedConfig(**r) for r in d["ranked"]], priors=dict(d["priors"]))

    @property
    def optuna_trials(self) -> list[dict[str, Any]]:
        """Parameter dicts for ``study.enqueue_trial`` (``model``, ``method`` label, each varied hyperparameter)."""
        return list(self.priors.get("optuna", {}).get("enqueue_trials", []))


@dataclass
class Decision:
    model: dict[str, Any]
    action: str
    p_beat: float
    predicted_points: float
    predicted_score: float
    incumbent_points: float
    tolerance_points: float
    threshold: float
    stated_false_skip_rate: float
    basis: str

    @property
    def skip(self) -> bool:
        return self.action == "skip"


@dataclass
class Suggestion:
    """One configuration ``/v1/suggest`` proposes to evaluate next: its ``index`` among the candidates (the request's
    list, or the space as the server enumerates it), the full ``config``, the meta-model's prediction (points and
    interval), the engine's belief after the history (``belief_points`` +- ``belief_sd``), the probability it beats
    the best so far, the expected improvement, the acquisition value it was chosen by, and the predicted runtime and
    failure probability."""

    index: int
    config: dict[str, Any]
    points: float
    points_lo: float
    points_hi: float
    belief_points: float
    belief_sd: float
    p_beat: float
    expected_improvement: float
    acquisition: float
    runtime_s: float | None
    p_fail: float

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Suggestion:
        return cls(index=d["index"], config=dict(d["config"]), points=d["points"], points_lo=d["points_lo"],
                   points_hi=d["points_hi"], belief_points=d["belief_points"], belief_sd=d["belief_sd"],
                   p_beat=d["p_beat"], expected_improvement=d["expected_improvement"], acquisition=d["acquisition"],
                   runtime_s=d.get("runtime_s"), p_fail=d["p_fail"])


@dataclass
class SuggestResult:
    """The answer of ``/v1/suggest``: the ``suggestions`` (best first; empty when nothing is left), the candidates
    the skip rule ``excluded`` now and their summed probability of beating the best so far
    (``skip_budget_spent``), ``done`` (every remaining candidate is evaluated or excluded: stop the search) and the
    ``basis`` of the belief (mechanism, history size, past tasks weighed)."""

    model: dict[str, Any]
    model_ms: float
    n_candidates: int
    truncated: bool
    task: dict[str, Any]
    suggestions: list[Suggestion]
    excluded: list[int]
    skip_budget_spent: float
    done: bool
    basis: dict[str, Any]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SuggestResult:
        return cls(model=dict(d["model"]), model_ms=d["model_ms"], n_candidates=d["n_candidates"],
                   truncated=d["truncated"], task=dict(d["task"]),
                   suggestions=[Suggestion.from_json(s) for s in d["suggestions"]], excluded=list(d["excluded"]),
                   skip_budget_spent=d["skip_budget_spent"], done=d["done"], basis=dict(d["basis"]))


@dataclass
class CurveDecision:
    """Continue or stop a training run (``POST /v1/decide/curve``); scores in points unless named ``_score``."""

    model: dict[str, Any]
    curve_model: dict[str, Any]
    action: str
    p_above: float
    predicted_points: float
    predicted_score: float
    points_lo: float
    points_hi: float
    incumbent_points: float
    tolerance_points: float
    progress: float
    n_history: int
    threshold: float
    stated_error_rate: float
    basis: str

    @property
    def stop(self) -> bool:
        return self.action == "stop"


#: A learning curve as the curve methods take it: ``{step: value}`` / ``{epoch: value}`` (``by`` says which), or a
#: list of ``{"step": ..., "epoch": ..., "value": ...}`` points.
CurveLike = Mapping[int, float] | Mapping[float, float] | Sequence[Mapping[str, Any]]


@dataclass
class ModelVersion:
    version: int
    run_id: str | None
    created_at: str | None
    aliases: list[str]
    status: str | None
    kb_snapshot: str | None
    metrics: dict[str, float]
    loaded: bool


@dataclass
class ModelList:
    registered_name: str
    loaded: dict[str, Any] | None
    versions: list[ModelVersion]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ModelList:
        return cls(registered_name=d["registered_name"], loaded=d.get("loaded"),
                   versions=[ModelVersion(**v) for v in d["versions"]])


@dataclass
class PromoteResult:
    version: int
    aliases: list[str]
    loaded: dict[str, Any]
    previous: dict[str, Any] | None = None


@dataclass
class Health:
    status: str
    ready: bool | None = None
    model: str | None = None
    model_version: int | None = None
    reason: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


# -- requests, shared by both clients ---------------------------------------------------------------------------------
@dataclass
class _Req:
    method: str
    path: str
    parse: Callable[[Any], Any]
    json: Any = None
    params: dict[str, Any] | None = None
    content: bytes | None = None
    headers: dict[str, str] | None = None
    files: Any = None
    data: dict[str, Any] | None = None
    ok_statuses: frozenset[int] = frozenset()  # non-2xx statuses answered as results (readiness)


def _dataset(dataset: str | Mapping[str, Any]) -> dict[str, Any]:
    return {"name": dataset} if isinstance(dataset, str) else dict(dataset)


def _task_body(task: Mapping[str, Any] | None, dataset: str | Mapping[str, Any], source: str,
               extra: Mapping[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"dataset": _dataset(dataset), "source": source}
    if task is not None:
        body["task"] = dict(task)
    body.update({k: v for k, v in extra.items() if v is not None})
    return body


def _upload_req(records: Any, fmt: str | None) -> _Req:
    parse = UploadResult.from_json
    if isinstance(records, str | os.PathLike):
        path = Path(records)
        data = {"format": fmt} if fmt else None
        return _Req("POST", "/v1/runs", parse, files={"file": (path.name, path.read_bytes())}, data=data)
    if isinstance(records, Mapping):
        records = [records]
    return _Req("POST", "/v1/runs", parse, json=list(records))


def _list_req(filters: Mapping[str, Any]) -> _Req:
    return _Req("GET", "/v1/runs", RunPage.from_json, params={k: v for k, v in filters.items() if v is not None})


def _describe_req(texts: Sequence[str] | None, labels: Sequence[Any] | None, path: str | os.PathLike | None,
                  fields: Mapping[str, Any]) -> _Req:
    fields = {k: v for k, v in fields.items() if v is not None}
    if path is not None:
        p = Path(path)
        data = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in fields.items()}
        return _Req("POST", "/v1/datasets/describe", DescribeResult.from_json,
                    files={"file": (p.name, p.read_bytes())}, data=data)
    body = {"texts": list(texts or []), **fields}
    if labels is not None:
        body["labels"] = list(labels)
    return _Req("POST", "/v1/datasets/describe", DescribeResult.from_json, json=body)


def as_columns(configs: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Candidate configurations (``{"model": {...}, "method": {...}, "hparams": {...}}``) in the columnar form of
    ``POST /v1/predict``: one array per ``part.field``, null where a candidate leaves the field unset."""
    names = list(dict.fromkeys(f"{part}.{field}" for c in configs for part in ("model", "method", "hparams")
                               for field in (c.get(part) or {})))
    return {name: [(c.get(name.split(".")[0]) or {}).get(name.split(".", 1)[1]) for c in configs] for name in names}


def _predict_reqs(task: Mapping[str, Any] | None, dataset: str | Mapping[str, Any],
                  candidates: Sequence[Mapping[str, Any]], batch_size: int, source: str,
                  extra: Mapping[str, Any], columnar: bool = False) -> tuple[list[_Req], list[int]]:
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    candidates = list(candidates)
    if not candidates:
        raise ValueError("no candidates to predict")
    reqs, sizes = [], []
    for start in range(0, len(candidates), batch_size):
        chunk = candidates[start:start + batch_size]
        body = _task_body(task, dataset, source, extra) | (
            {"columns": as_columns(chunk)} if columnar else {"candidates": [dict(c) for c in chunk]})
        reqs.append(_Req("POST", "/v1/predict", lambda d: d, json=body))
        sizes.append(len(chunk))
    return reqs, sizes


def _recommend_req(task: Mapping[str, Any] | None, dataset: str | Mapping[str, Any], space: Mapping[str, Any],
                   budget: int, source: str, extra: Mapping[str, Any]) -> _Req:
    body = _task_body(task, dataset, source, extra) | {"space": dict(space), "budget": budget}
    return _Req("POST", "/v1/recommend", Recommendation.from_json, json=body)


def _decide_req(task: Mapping[str, Any] | None, dataset: str | Mapping[str, Any], candidate: Mapping[str, Any],
                incumbent: float, tolerance: float, unit: str, incumbent_config: Mapping[str, Any] | None,
                max_false_skip: float | None, source: str,
                history: Iterable[tuple[Mapping[str, Any], float | None]] | None) -> _Req:
    body = _task_body(task, dataset, source, {"incumbent_config": incumbent_config, "max_false_skip": max_false_skip})
    body |= {"candidate": dict(candidate), "incumbent": incumbent, "unit": unit, "tolerance": tolerance}
    if history:
        body["history"] = [{"config": dict(config), "score": score} for config, score in history]
    return _Req("POST", "/v1/decide", lambda d: Decision(**d), json=body)


#: One evaluated configuration of a search: a ``{"config", "score", "runtime_s"}`` mapping, or a
#: ``(config, score)`` / ``(config, score, runtime_s)`` tuple; ``score`` None for a failed run.
HistoryEntry = Mapping[str, Any] | tuple[Any, ...]


def _history_item(entry: HistoryEntry) -> dict[str, Any]:
    if isinstance(entry, Mapping):
        item = {"config": dict(entry["config"]), "score": entry.get("score")}
        runtime = entry.get("runtime_s")
    else:
        config, score, *rest = entry
        item, runtime = {"config": dict(config), "score": score}, (rest[0] if rest else None)
    if runtime is not None:
        item["runtime_s"] = runtime
    return item


def _suggest_req(task: Mapping[str, Any] | None, dataset: str | Mapping[str, Any],
                 candidates: Sequence[Mapping[str, Any]] | None, space: Mapping[str, Any] | None,
                 history: Iterable[HistoryEntry], k: int, unit: str, max_false_skip: float | None, source: str,
                 extra: Mapping[str, Any]) -> _Req:
    if (candidates is None) == (space is None):
        raise ValueError("give the candidates either as `candidates` (a list) or as a `space`, not both")
    body = _task_body(task, dataset, source, {"max_false_skip": max_false_skip, **extra})
    if candidates is not None:
        body["candidates"] = [dict(c) for c in candidates]
    else:
        body["space"] = dict(space or {})
    body |= {"history": [_history_item(h) for h in history], "k": k, "unit": unit}
    return _Req("POST", "/v1/suggest", SuggestResult.from_json, json=body)

def _curve_body(curve: CurveLike, total_steps: int | None, total_epochs: float | None, by: str) -> dict[str, Any]:
    if by not in ("step", "epoch"):
        raise ValueError(f"by must be 'step' or 'epoch', not {by!r}")
    if isinstance(curve, Mapping):
        points = [{by: (int(k) if by == "step" else float(k)), "value": float(v)} for k, v in sorted(curve.items())]
    else:
        points = [{k: v for k, v in dict(p).items() if v is not None} for p in curve]
    body: dict[str, Any] = {"points": points}
    if total_steps is not None:
        body["total_steps"] = int(total_steps)
    if total_epochs is not None:
        body["total_epochs"] = float(total_epochs)
    return body


def _decide_curve_req(task: Mapping[str, Any] | None, dataset: str | Mapping[str, Any], curve: CurveLike,
                      incumbent: float, total_steps: int | None, total_epochs: float | None, by: str,
                      config: Mapping[str, Any] | None, unit: str, tolerance: float,
                      history: Iterable[Mapping[str, Any]] | None, max_false_stop: float | None,
                      min_progress: float | None, min_history: int | None, source: str) -> _Req:
    body = _task_body(task, dataset, source, {"config": dict(config) if config is not None else None,
                                              "max_false_stop": max_false_stop, "min_progress": min_progress,
                                              "min_history": min_history})
    body |= {"curve": _curve_body(curve, total_steps, total_epochs, by), "incumbent": incumbent, "unit": unit,
             "tolerance": tolerance}
    if history:
        items = []
        for h in history:
            item: dict[str, Any] = {"curve": _curve_body(h["curve"], h.get("total_steps"), h.get("total_epochs"),
                                                         h.get("by", by)), "score": h["score"]}
            if h.get("config") is not None:
                item["config"] = dict(h["config"])
            items.append(item)
        body["history"] = items
    return _Req("POST", "/v1/decide/curve", lambda d: CurveDecision(**d), json=body)


def _sql_req(query: str, max_rows: int | None) -> _Req:
    body: dict[str, Any] = {"query": query}
    if max_rows is not None:
        body["max_rows"] = max_rows
    return _Req("POST", "/v1/sql", SqlResult.from_json, json=body)


def _models_req() -> _Req:
    return _Req("GET", "/v1/models", ModelList.from_json)


def _promote_req(version: int) -> _Req:
    return _Req("POST", f"/v1/models/{int(version)}/promote", lambda d: PromoteResult(**d))


def _health_req() -> _Req:
    return _Req("GET", "/healthz", lambda d: Health(status=d["status"], raw=dict(d)))


def _ready_req() -> _Req:
    def parse(d: Mapping[str, Any]) -> Health:
        return Health(status=d["status"], ready=d["status"] == "ready", model=d.get("model"),
                      model_version=d.get("model_version"), reason=d.get("reason"), raw=dict(d))

    return _Req("GET", "/readyz", parse, ok_statuses=frozenset({503}))


def _stats_req() -> _Req:
    return _Req("GET", "/v1/stats", dict)


def _retry_after(response: httpx.Response | None) -> float | None:
    """Seconds asked by a ``Retry-After`` header (delta-seconds or an HTTP date), if any."""
    value = response.headers.get("Retry-After") if response is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class _Base:
    def __init__(self, base_url: str, api_key: str | None, timeout: float, retries: int, backoff: float) -> None:
        if retries < 0 or backoff < 0:
            raise ValueError("retries and backoff must not be negative")
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self._headers = {"User-Agent": "metaml-client/0.1", "Accept": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._timeout = timeout

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        asked = _retry_after(response)
        delay = asked if asked is not None else self.backoff * (2 ** attempt)
        return min(delay, MAX_RETRY_SLEEP_S)

    def _should_retry(self, attempt: int, response: httpx.Response | None) -> bool:
        return attempt < self.retries and (response is None or response.status_code in RETRY_STATUSES)

    @staticmethod
    def _kwargs(req: _Req) -> dict[str, Any]:
        kw: dict[str, Any] = {"params": req.params, "headers": req.headers}
        if req.json is not None:
            kw["json"] = req.json
        if req.files is not None:
            kw["files"] = req.files
            kw["data"] = req.data
        if req.content is not None:
            kw["content"] = req.content
        return kw

    @staticmethod
    def _result(req: _Req, response: httpx.Response) -> Any:
        if response.is_success or response.status_code in req.ok_statuses:
            return req.parse(response.json())
        raise MetamlAPIError.from_response(response)


class Client(_Base):
    """A blocking client of the metaml API.

    Args:
        base_url: the server, e.g. ``http://127.0.0.1:8000``.
        api_key: sent as ``Authorization: Bearer <key>`` (reads need none unless the server requires it).
        timeout: seconds per request.
        retries: retries after a connection error or a 429/503 answer (never after another 4xx), with exponential
            backoff (``backoff * 2**attempt`` seconds), or the answer's ``Retry-After`` when it gives one.
        backoff: the first retry's delay in seconds.

    Every method raises :class:`MetamlAPIError` for an error answer.
    """

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 30, retries: int = 3,
                 backoff: float = 0.5, *, transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(base_url, api_key, timeout, retries, backoff)
        self._http = httpx.Client(base_url=self.base_url, headers=self._headers, timeout=timeout,
                                  transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, req: _Req) -> Any:
        attempt = 0
        while True:
            try:
                response = self._http.request(req.method, req.path, **self._kwargs(req))
            except httpx.TransportError:
                if not self._should_retry(attempt, None):
                    raise
                time.sleep(self._delay(attempt, None))
                attempt += 1
                continue
            if response.status_code in RETRY_STATUSES and response.status_code not in req.ok_statuses \
                    and self._should_retry(attempt, response):
                time.sleep(self._delay(attempt, response))
                attempt += 1
                continue
            return self._result(req, response)

    # runs
    def upload_runs(self, records: Iterable[Mapping[str, Any]] | Mapping[str, Any] | str | os.PathLike[str], *,
                    format: str | None = None) -> UploadResult:
        """Upload run records (a list of dicts in the nested record shape, or one), or a file (a path) in any format
        ``metaml ingest`` reads (``format`` names it when its name does not)."""
        return self._send(_upload_req(records, format))

    def list_runs(self, **filters: Any) -> RunPage:
        """One page of runs: filters ``dataset``, ``model``, ``method``, ``source``, ``task_type``, ``status``,
        ``min_score``, ``max_score``, ``limit``, ``cursor``."""
        return self._send(_list_req(filters))

    def iter_runs(self, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every run matching ``filters``, across all pages."""
        cursor = filters.pop("cursor", None)
        while True:
            page = self.list_runs(**filters, cursor=cursor)
            yield from page.runs
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def get_run(self, run_id: str) -> dict[str, Any]:
        """One run in its nested record shape (404 ``not_found`` when missing)."""
        return self._send(_Req("GET", f"/v1/runs/{run_id}", dict))

    def describe_dataset(self, texts: Sequence[str] | None = None, labels: Sequence[Any] | None = None, *,
                         path: str | os.PathLike[str] | None = None, **fields: Any) -> DescribeResult:
        """Dataset meta-features from texts (and labels), or from a file; ``name=..., store=True`` stores them."""
        return self._send(_describe_req(texts, labels, path, fields))

    def stats(self) -> dict[str, Any]:
        return self._send(_stats_req())

    def sql(self, query: str, max_rows: int | None = None) -> SqlResult:
        """One read-only query (the ``analyst`` scope)."""
        return self._send(_sql_req(query, max_rows))

    # the meta-learner
    def predict(self, task: Mapping[str, Any] | None, dataset: str | Mapping[str, Any],
                candidates: Sequence[Mapping[str, Any]], batch_size: int = 1000, *, source: str = "upload",
                columnar: bool = False, **extra: Any) -> PredictResult:
        """Score candidate configurations, ``batch_size`` per request (indices run over the whole list). ``task``
        is the record's task part (None: accuracy); ``dataset`` a name or a dataset spec dict; ``columnar``: send
        them as one array per field (the same answers, less work for the server on large batches; an invalid value
        is then reported at ``["body", "columns", "<part.field>", i]``); ``extra``: other request fields
        (``support``, ``outputs``)."""
        reqs, sizes = _predict_reqs(task, dataset, candidates, batch_size, source, extra, columnar)
        return PredictResult.merge([self._send(r) for r in reqs], sizes)

    def recommend(self, task: Mapping[str, Any] | None, dataset: str | Mapping[str, Any], space: Mapping[str, Any],
                  budget: int = 10, *, source: str = "upload", **extra: Any) -> Recommendation:
        """The ``budget`` configurations of ``space`` to try first, and priors (``extra``: ``enqueue``, ``seed``,
        ``temperature``, ``max_candidates``, ``samples_per_point``)."""
        return self._send(_recommend_req(task, dataset, space, budget, source, extra))

    def decide(self, task: Mapping[str, Any] | None, dataset: str | Mapping[str, Any], candidate: Mapping[str, Any],
               incumbent: float, tolerance: float = 0.0, *, unit: str = "score",
               incumbent_config: Mapping[str, Any] | None = None, max_false_skip: float | None = None,
               source: str = "upload",
               history: Iterable[tuple[Mapping[str, Any], float | None]] | None = None) -> Decision:
        """Evaluate or skip ``candidate`` given the best score so far (``unit``: ``score`` or ``points``).
        ``history``: the search's (configuration, score) pairs so far, score None for a failed run; with at least
        3 scored the server recalibrates its residuals to this task."""
        return self._send(_decide_req(task, dataset, candidate, incumbent, tolerance, unit, incumbent_config,
                                      max_false_skip, source, history))

    def suggest(self, task: Mapping[str, Any] | None, dataset: str | Mapping[str, Any], *,
                candidates: Sequence[Mapping[str, Any]] | None = None, space: Mapping[str, Any] | None = None,
                history: Iterable[HistoryEntry] = (), k: int = 1, unit: str = "score",
                max_false_skip: float | None = None, source: str = "upload", **extra: Any) -> SuggestResult:
        """The ``k`` configurations to evaluate next on a task, learning from what its search has shown so far.

        Args:
            task: the record's task part (None: accuracy).
            dataset: a dataset name or spec dict.
            candidates: the configurations to choose from; or
            space: a search space the server enumerates as ``recommend`` does. ``extra`` takes its
                ``max_candidates``, ``samples_per_point`` and ``seed``: keep them fixed during a search, so that the
                same candidates come back (each history entry must be one of them).
            history: every configuration evaluated so far, each ``{"config", "score", "runtime_s"}`` or a tuple
                ``(config, score[, runtime_s])``; ``score`` in ``unit`` (``score``: normalized, or ``points``),
                None for a failed run. The service is stateless: send the whole history every time.
            k: how many to propose (1 to 100).
            max_false_skip: the skip rule's budget per search (server default 0.05; 0 skips nothing).

        Returns:
            the suggestions, best first; ``done`` True when nothing is left to propose (stop the search).

        Raises:
            ValueError: both or neither of ``candidates`` and ``space``.
            MetamlAPIError: 422 for a history entry that is no candidate or a score outside the metric's scale
                (``details`` gives each place, ``["body", "history", j, "config"]``), too many candidates...
        """
        return self._send(_suggest_req(task, dataset, candidates, space, history, k, unit, max_false_skip, source,
                                       extra))
    def decide_curve(self, task: Mapping[str, Any] | None, dataset: str | Mapping[str, Any], curve: CurveLike,
                     incumbent: float, *, total_steps: int | None = None, total_epochs: float | None = None,
                     by: str = "step", config: Mapping[str, Any] | None = None, unit: str = "score",
                     tolerance: float = 0.0, history: Iterable[Mapping[str, Any]] | None = None,
                     max_false_stop: float | None = None, min_progress: float | None = None,
                     min_history: int | None = None, source: str = "upload") -> CurveDecision:
        """Continue or stop a training run from its partial learning curve (``POST /v1/decide/curve``).

        Args:
            curve: the run's evaluations so far: ``{step: value}`` (or ``{epoch: value}`` with ``by="epoch"``), or
                a list of ``{"step", "epoch", "value"}`` points; values in ``unit``.
            incumbent: the best final score so far on the task, in ``unit``.
            total_steps, total_epochs: how long the run is planned to train (progress is measured against it).
            config: the run's configuration (``model``, ``method``, ``hparams``), for the meta-model's prior.
            history: the search's finished runs: dicts with ``curve`` (as ``curve``), ``score`` (final, in
                ``unit``), optionally ``total_steps`` / ``total_epochs``, ``by`` and ``config``.
            max_false_stop: stop only when P(final > incumbent + tolerance) is below this (server default 0.05).
            min_progress, min_history: never stop before this share of the plan / with fewer finished runs.
        """
        return self._send(_decide_curve_req(task, dataset, curve, incumbent, total_steps, total_epochs, by, config,
                                            unit, tolerance, history, max_false_stop, min_progress, min_history,
                                            source))

    def models(self) -> ModelList:
        return self._send(_models_req())

    def promote(self, version: int) -> PromoteResult:
        """Promote a registered version and serve it (the ``admin`` scope)."""
        return self._send(_promote_req(version))

    def health(self) -> Health:
        """Liveness (``/healthz``)."""
        return self._send(_health_req())

    def ready(self) -> Health:
        """Readiness (``/readyz``): ``ready`` False instead of an error while the knowledge base cannot be read."""
        return self._send(_ready_req())


class AsyncClient(_Base):
    """The asynchronous twin of :class:`Client` (same arguments and methods, awaited; ``iter_runs`` is an async
    iterator)."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 30, retries: int = 3,
                 backoff: float = 0.5, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(base_url, api_key, timeout, retries, backoff)
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=self._headers, timeout=timeout,
                                       transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(self, req: _Req) -> Any:
        attempt = 0
        while True:
            try:
                response = await self._http.request(req.method, req.path, **self._kwargs(req))
            except httpx.TransportError:
                if not self._should_retry(attempt, None):
                    raise
                await asyncio.sleep(self._delay(attempt, None))
                attempt += 1
                continue
            if response.status_code in RETRY_STATUSES and response.status_code not in req.ok_statuses \
                    and self._should_retry(attempt, response):
                await asyncio.sleep(self._delay(attempt, response))
                attempt += 1
                continue
            return self._result(req, response)

    async def upload_runs(self, records: Iterable[Mapping[str, Any]] | Mapping[str, Any] | str | os.PathLike[str],
                          *, format: str | None = None) -> UploadResult:
        return await self._send(_upload_req(records, format))

    async def list_runs(self, **filters: Any) -> RunPage:
        return await self._send(_list_req(filters))

    async def iter_runs(self, **filters: Any) -> AsyncIterator[dict[str, Any]]:
        cursor = filters.pop("cursor", None)
        while True:
            page = await self.list_runs(**filters, cursor=cursor)
            for run in page.runs:
                yield run
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    async def get_run(self, run_id: str) -> dict[str, Any]:
        return await self._send(_Req("GET", f"/v1/runs/{run_id}", dict))

    async def describe_dataset(self, texts: Sequence[str] | None = None, labels: Sequence[Any] | None = None, *,
                               path: str | os.PathLike[str] | None = None, **fields: Any) -> DescribeResult:
        return await self._send(_describe_req(texts, labels, path, fields))

    async def stats(self) -> dict[str, Any]:
        return await self._send(_stats_req())

    async def sql(self, query: str, max_rows: int | None = None) -> SqlResult:
        return await self._send(_sql_req(query, max_rows))

    async def predict(self, task: Mapping[str, Any] | None, dataset: str | Mapping[str, Any],
                      candidates: Sequence[Mapping[str, Any]], batch_size: int = 1000, *, source: str = "upload",
                      columnar: bool = False, **extra: Any) -> PredictResult:
        reqs, sizes = _predict_reqs(task, dataset, candidates, batch_size, source, extra, columnar)
        gate = asyncio.Semaphore(4)  # a few batches in flight at once

        async def one(req: _Req) -> Any:
            async with gate:
                return await self._send(req)

        answers = await asyncio.gather(*(one(r) for r in reqs))
        return PredictResult.merge(answers, sizes)

    async def recommend(self, task: Mapping[str, Any] | None, dataset: str | Mapping[str, Any],
                        space: Mapping[str, Any], budget: int = 10, *, source: str = "upload",
                        **extra: Any) -> Recommendation:
        return await self._send(_recommend_req(task, dataset, space, budget, source, extra))

    async def decide(self, task: Mapping[str, Any] | None, dataset: str | Mapping[str, Any],
                     candidate: Mapping[str, Any], incumbent: float, tolerance: float = 0.0, *, unit: str = "score",
                     incumbent_config: Mapping[str, Any] | None = None, max_false_skip: float | None = None,
                     source: str = "upload",
                     history: Iterable[tuple[Mapping[str, Any], float | None]] | None = None) -> Decision:
        return await self._send(_decide_req(task, dataset, candidate, incumbent, tolerance, unit, incumbent_config,
                                            max_false_skip, source, history))

    async def suggest(self, task: Mapping[str, Any] | None, dataset: str | Mapping[str, Any], *,
                      candidates: Sequence[Mapping[str, Any]] | None = None, space: Mapping[str, Any] | None = None,
                      history: Iterable[HistoryEntry] = (), k: int = 1, unit: str = "score",
                      max_false_skip: float | None = None, source: str = "upload", **extra: Any) -> SuggestResult:
        return await self._send(_suggest_req(task, dataset, candidates, space, history, k, unit, max_false_skip,
                                             source, extra))
    async def decide_curve(self, task: Mapping[str, Any] | None, dataset: str | Mapping[str, Any],
                           curve: CurveLike, incumbent: float, *, total_steps: int | None = None,
                           total_epochs: float | None = None, by: str = "step",
                           config: Mapping[str, Any] | None = None, unit: str = "score", tolerance: float = 0.0,
                           history: Iterable[Mapping[str, Any]] | None = None, max_false_stop: float | None = None,
                           min_progress: float | None = None, min_history: int | None = None,
                           source: str = "upload") -> CurveDecision:
        """:meth:`Client.decide_curve`."""
        return await self._send(_decide_curve_req(task, dataset, curve, incumbent, total_steps, total_epochs, by,
                                                  config, unit, tolerance, history, max_false_stop, min_progress,
                                                  min_history, source))

    async def models(self) -> ModelList:
        return await self._send(_models_req())

    async def promote(self, version: int) -> PromoteResult:
        return await self._send(_promote_req(version))

    async def health(self) -> Health:
        return await self._send(_health_req())

    async def ready(self) -> Health:
        return await self._send(_ready_req())
