"""ASGI middleware: Prometheus request metrics, the request body size limit (413), UTF-8 JSON bodies (422)."""

from __future__ import annotations

import time
from collections.abc import Callable
from email.message import Message as MimeHeader

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class IndexSizeCollector(Collector):
    """Reports each collection's in-memory index size at scrape time."""

    def __init__(self, sizes: Callable[[], dict[str, int]]) -> None:
        self._sizes = sizes

    def collect(self) -> list[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "semhash_index_documents", "Documents in the in-memory index", labels=["collection"]
        )
        for name, size in sorted(self._sizes().items()):
            gauge.add_metric([name], size)
        return [gauge]


class RequestMetrics:
    """Request counts and latencies per method, route template and status."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "semhash_http_requests", "HTTP requests", ["method", "route", "status"], registry=registry
        )
        self.latency = Histogram(
            "semhash_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: RequestMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status_code = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            # The route template, not the raw path, so ids in URLs do not explode the label count.
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(scope["method"], template, str(status_code)).inc()
            self.metrics.latency.labels(scope["method"], template).observe(time.perf_counter() - started)


class BodySizeLimitMiddleware:
    """Answer 413 to bodies over `max_bytes`, declared (Content-Length) or streamed (chunked)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            # The server enforces that the body matches its declared length.
            await self.app(scope, receive, send)
            return
        # No length given: read the body up to the limit, then replay it to the app.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse(
            {"detail": f"request body is larger than {self.max_bytes} bytes"}, status_code=413
        )
        await response(scope, receive, send)


def is_json_content_type(content_type: str | None) -> bool:
    """application/json, application/*+json, or no content type (FastAPI reads that as JSON too)."""
    if not content_type:
        return True
    header = MimeHeader()
    header["content-type"] = content_type
    subtype = header.get_content_subtype()
    return header.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


class Utf8JsonBodyMiddleware:
    """Answer 422 to a JSON body that is not UTF-8 (RFC 8259), on every route, before any route reads it.

    Decoding is checked in C and costs about a millisecond per megabyte; the body is then replayed to the
    app. The message says where the first bad byte is and never echoes the bytes themselves.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        content_type = dict(scope["headers"]).get(b"content-type", b"").decode("latin-1")
        if not is_json_content_type(content_type):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay_then(message, receive), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as err:
            detail = [
                {
                    "loc": ["body"],
                    "msg": f"the body is not valid UTF-8 (byte 0x{body[err.start]:02x} at offset "
                    f"{err.start}): send JSON encoded as UTF-8",
                    "type": "json_invalid",
                }
            ]
            await JSONResponse({"detail": detail}, status_code=422)(scope, receive, send)
            return
        await self.app(
            scope, _replay_then({"type": "http.request", "body": body, "more_body": False}, receive), send
        )


def _replay_then(first: Message, receive: Receive) -> Receive:
    """A receive channel that returns `first`, then whatever `receive` returns (a disconnect)."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return first

    return replay
