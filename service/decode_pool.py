"""A bounded pool for decoding and normalising images, off the event loop.

Image requests (uploads and JSON pixels) do their decoding in a few dedicated threads: Pillow's decoders
and NumPy release the GIL, so the event loop keeps answering (/healthz, searches) while images decode.
The pool admits at most `workers + queue` jobs at once; a request beyond that gets 429 with Retry-After
instead of waiting in an unbounded queue (which would hold its body in memory and time out anyway).
A job's slot is released when its thread finishes, not when its client goes away, so the bound holds.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from fastapi import Request, status

from service.errors import ServiceError

P = ParamSpec("P")
R = TypeVar("R")

RETRY_AFTER_SECONDS = 1


class DecodeQueueFullError(ServiceError):
    """Every decoding slot is taken: retry shortly."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS

    def __init__(self, capacity: int) -> None:
        super().__init__(
            f"the server is decoding as many images as it takes at once ({capacity} requests); "
            f"retry after {RETRY_AFTER_SECONDS} s"
        )
        self.headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}


class DecodePool:
    """`workers` threads and room for `queue` more jobs waiting; more than that is refused (429)."""

    def __init__(self, workers: int, queue: int) -> None:
        self.workers = workers
        self.capacity = workers + queue
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="semhash-decode")
        self._lock = threading.Lock()
        self._admitted = 0

    @property
    def admitted(self) -> int:
        """Jobs running or waiting now."""
        return self._admitted

    def check_room(self) -> None:
        """Raise `DecodeQueueFullError` now if a job would be refused (before reading a request body)."""
        if self._admitted >= self.capacity:
            raise DecodeQueueFullError(self.capacity)

    def _admit(self) -> None:
        with self._lock:
            if self._admitted >= self.capacity:
                raise DecodeQueueFullError(self.capacity)
            self._admitted += 1

    def _release(self) -> None:
        with self._lock:
            self._admitted -= 1

    def submit(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> Future[R]:
        """Start `fn` in the pool, or raise `DecodeQueueFullError` when it is full."""

        def job() -> R:
            try:
                return fn(*args, **kwargs)
            finally:
                self._release()  # before the result is set, so whoever waits for it finds the slot free

        self._admit()
        try:
            future = self._executor.submit(job)
        except BaseException:
            self._release()
            raise
        # A job cancelled before it started (shutdown) never runs `job`: release its slot here.
        future.add_done_callback(lambda done: self._release() if done.cancelled() else None)
        return future

    async def run(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """`fn(*args, **kwargs)` in the pool, awaited (for async routes)."""
        return await asyncio.wrap_future(self.submit(fn, *args, **kwargs))

    def call(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """`fn(*args, **kwargs)` in the pool, waited for (for sync routes, already in a worker thread)."""
        return self.submit(fn, *args, **kwargs).result()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def decode_pool(request: Request) -> DecodePool:
    """The app's pool (made by the lifespan)."""
    return request.app.state.decode_pool
