"""Prometheus metrics of one server process: requests and latencies per route and status, uploaded runs by outcome,
and the knowledge base's run count (read when scraped).

Each app has its own registry (several apps in one process, as in tests, do not collide). With ``--workers N`` each
process exposes its own counters; scrape each, or run one process per replica.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "MetricsMiddleware"]

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """The service's metrics, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("metaml_http_requests", "HTTP requests answered.", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("metaml_http_request_duration_seconds", "Time to answer an HTTP request.",
                                 ["method", "route", "status"], buckets=_BUCKETS, registry=self.registry)
        self.runs = Counter("metaml_runs_uploaded", "Uploaded records by outcome (accepted, duplicate, rejected).",
                            ["outcome"], registry=self.registry)
        self.commits = Histogram("metaml_kb_commit_uploads", "Uploads stored per knowledge-base transaction "
                                 "(group commit).", buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry)
        self.commit_seconds = Histogram("metaml_kb_commit_duration_seconds", "Time of one knowledge-base write "
                                        "transaction.", buckets=_BUCKETS, registry=self.registry)
        self.kb_runs = Gauge("metaml_kb_runs", "Runs in the knowledge base (read at scrape time).",
                             registry=self.registry)
        for outcome in ("accepted", "duplicate", "rejected"):
            self.runs.labels(outcome)

    def count_upload(self, accepted: int, duplicates: int, rejected: int) -> None:
        self.runs.labels("accepted").inc(accepted)
        self.runs.labels("duplicate").inc(duplicates)
        self.runs.labels("rejected").inc(rejected)

    def count_commit(self, uploads: int, rows: int, seconds: float) -> None:
        self.commits.observe(uploads)
        self.commit_seconds.observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI middleware counting every HTTP answer by method, route template and status, and telling the client
    the server's time to its answer's start (a ``Server-Timing: app;dur=<ms>`` header: from the request reaching the
    app, before authentication and the body are read, to the answer's status and headers, its body rendered)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                timing = f"app;dur={(time.perf_counter() - started) * 1000.0:.3f}".encode()
                message = {**message, "headers": [*message.get("headers", ()), (b"server-timing", timing)]}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or ("(too large)" if status == 413 else "(unmatched)")
            labels = (scope["method"], template, str(status))
            self.metrics.requests.labels(*labels).inc()
            self.metrics.latency.labels(*labels).observe(time.perf_counter() - started)
