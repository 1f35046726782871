"""Structured logs: one JSON object per line, and a request id that every line of a request carries.

The id comes from the caller's `X-Request-ID` header when it is a sane token (so a proxy's id follows
the request through), otherwise a fresh one; it is echoed in the response's `X-Request-ID` header.
A context variable carries it, so log lines written anywhere while serving the request (routes run
in the thread pool, which copies the context) are tagged with it.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime

from starlette.types import ASGIApp, Message, Receive, Scope, Send

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
request_logger = logging.getLogger("semhash.request")


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record (the current request's, or '-' outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """time, level, logger, message, request_id, plus the record's `fields` dict when given."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def escape_controls(text: str) -> str:
    """Control characters (newlines included) as escapes, so user input cannot forge a log line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class TextFormatter(logging.Formatter):
    """Plain text lines, UTC ISO 8601 times with their zone; the message's control characters escaped
    (a `%0A` in a URL stays on its line). Tracebacks keep their own lines."""

    def converter(self, timestamp: float | None) -> time.struct_time:  # UTC, not the local time
        return time.gmtime(timestamp)

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s", datefmt="%Y-%m-%dT%H:%M:%S%z"
        )

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        record.message = escape_controls(record.message)
        return super().formatMessage(record)


def configure_logging(level: int = logging.INFO, json_lines: bool = True) -> None:
    """Send every logger (uvicorn's included) through one stderr handler, as JSON lines or plain text."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    # Our middleware logs each request with its id; uvicorn's own access lines would repeat them.
    logging.getLogger("uvicorn.access").disabled = True
    # Alembic logs each of its built-in plugins at INFO when first imported: a dozen lines of noise.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


class RequestLogMiddleware:
    """Assigns the request id, echoes it in `X-Request-ID`, and logs method, path, status and duration."""

    def __init__(self, app: ASGIApp, *, log_requests: bool = True) -> None:
        self.app = app
        self.log_requests = log_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _VALID_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status_code = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if self.log_requests:
                request_logger.info(
                    "%s %s %d",
                    scope["method"],
                    scope["path"],
                    status_code,
                    extra={
                        "fields": {
                            "method": scope["method"],
                            "path": scope["path"],
                            "status": status_code,
                            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                        }
                    },
                )
            request_id_var.reset(token)
