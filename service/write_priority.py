"""Short writes ahead of searches in one server process.

A search is CPU work in a worker thread; a single-document write is a little CPU work between
database round trips, each of which gives up the GIL. With searches running flat out, every time the
write's thread wants the GIL back it waits for a searching thread to give it up: up to the switch
interval (5 ms) per round trip, so one write took 14 ms at the p50 of `benchmarks/scale.py`'s mixed
run and one writer managed ~50 upserts/s while 8 searchers kept both cores busy.

So a short write is marked in flight from the moment its request arrives until its response is sent
(`WritePriorityMiddleware`), and a search about to start waits while any is (`WritePriority.
wait_for_writes`), at most `search_yield_to_writes_ms`: searches already running finish, new ones
queue behind the write for as long as it takes, never longer than that bound. A write is short when
it is a document write (`POST .../documents`, `DELETE .../documents/{id}`) whose body is at most
SHORT_WRITE_BYTES: a batch of thousands would hold searches back for seconds, and it is not served
first. Searches in other processes are not held back; the write only competes with them for the CPU.
"""

from __future__ import annotations

import threading

from starlette.types import ASGIApp, Receive, Scope, Send

SHORT_WRITE_BYTES = 64 * 1024
_WRITE_METHODS = (b"POST", b"DELETE")


class WritePriority:
    """How many short writes are in flight, and a wait for none to be."""

    def __init__(self, max_wait_seconds: float) -> None:
        self.max_wait_seconds = max_wait_seconds
        self._writes = 0
        self._changed = threading.Condition()

    @property
    def writes_in_flight(self) -> int:
        return self._writes

    def begin_write(self) -> None:
        with self._changed:
            self._writes += 1

    def end_write(self) -> None:
        with self._changed:
            self._writes -= 1
            if not self._writes:
                self._changed.notify_all()

    def wait_for_writes(self) -> None:
        """Block (GIL released) while a short write is in flight, at most max_wait_seconds."""
        if not self._writes or self.max_wait_seconds <= 0:  # no lock on the common path
            return
        with self._changed:
            self._changed.wait_for(lambda: not self._writes, timeout=self.max_wait_seconds)


def is_short_write(scope: Scope) -> bool:
    """A document write of at most SHORT_WRITE_BYTES (by its Content-Length; none: a DELETE)."""
    path = scope["path"]
    if scope["method"].encode() not in _WRITE_METHODS or not path.startswith("/v1/collections/"):
        return False
    if "/documents" not in path:
        return False
    for name, value in scope["headers"]:
        if name == b"content-length":
            return value.isdigit() and int(value) <= SHORT_WRITE_BYTES
        if name == b"transfer-encoding":
            return False  # a chunked body of unknown size
    return True


class WritePriorityMiddleware:
    """Marks short writes in flight (see the module docstring) from arrival to the end of the response."""

    def __init__(self, app: ASGIApp, priority: WritePriority) -> None:
        self.app = app
        self.priority = priority

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_short_write(scope):
            await self.app(scope, receive, send)
            return
        self.priority.begin_write()
        try:
            await self.app(scope, receive, send)
        finally:
            self.priority.end_write()
