"""A bounded pool of worker processes for decoding and normalising images, off the event loop.

Image requests (uploads and JSON pixels; service/vision.py keeps only small JSON bodies that need no
preprocessing on the event loop) decode in a few dedicated worker processes, not threads: a
decoding thread would share the server's GIL (Pillow's and NumPy's Python-level work holds it), and
every `/healthz` answered meanwhile would wait for it. The workers run at a lower CPU priority
(`WORKER_NICENESS`), so on a busy machine the event loop gets a core as soon as it has work; by default
there is one worker fewer than the cores this process may use, leaving one for the loop.

The pool admits at most `workers + queue` jobs at once; a request beyond that gets 429 with Retry-After
instead of waiting in an unbounded queue (which would hold its body in memory and time out anyway).
A job's slot is released when its worker finishes, not when its client goes away, so the bound holds.
A worker that dies (killed, out of memory) breaks only the jobs it was running: the pool starts fresh
workers and those requests get 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import ParamSpec, TypeVar

from fastapi import Request, status

from service.errors import ServiceError
from service.parent_watch import exit_with

P = ParamSpec("P")
R = TypeVar("R")

RETRY_AFTER_SECONDS = 1
WORKER_NICENESS = 10  # added to the server's nice value: a decoding worker yields the CPU to the loop
# Imported once by the fork server, so a new worker starts without importing Pillow, NumPy, the service.
_PRELOAD = ["service.vision"]


class DecodeQueueFullError(ServiceError):
    """Every decoding slot is taken: retry shortly."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS

    def __init__(self, capacity: int) -> None:
        super().__init__(
            f"the server is decoding as many images as it takes at once ({capacity} requests); "
            f"retry after {RETRY_AFTER_SECONDS} s"
        )
        self.headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}


class DecoderStoppedError(ServiceError):
    """The worker decoding this request's images stopped (killed, out of memory); fresh ones replace it."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE

    def __init__(self) -> None:
        super().__init__(
            "the process decoding these images stopped unexpectedly; a new one has started, "
            f"retry after {RETRY_AFTER_SECONDS} s"
        )
        self.headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}


def default_workers() -> int:
    """One worker fewer than the cores this process may run on (at least one): a core stays free for the
    event loop."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores - 1)


def _start_worker(niceness: int, server_pid: int) -> None:
    """Each worker's initializer: a lower CPU priority, and an exit when the server process ends, however
    it ends (even killed), so that no worker decodes, or waits, for a server that is gone (a worker's
    parent is the fork server, which itself lives as long as its workers)."""
    os.nice(niceness)
    exit_with(server_pid)


class DecodePool:
    """`workers` processes and room for `queue` more jobs waiting; more than that is refused (429).

    Jobs and their arguments cross to a worker by pickling: functions defined at module level (or
    `functools.partial` of them), with picklable arguments; errors they raise come back as they were.
    """

    def __init__(self, workers: int, queue: int, niceness: int = WORKER_NICENESS) -> None:
        self.workers = workers
        self.capacity = workers + queue
        self.niceness = niceness
        self._context = multiprocessing.get_context("forkserver")  # workers never fork a threaded server
        self._context.set_forkserver_preload(_PRELOAD)
        self._lock = threading.Lock()
        self._admitted = 0
        self._executor = self._start_executor()

    def _start_executor(self) -> ProcessPoolExecutor:
        # Workers start on the first jobs, so a server that never decodes an image never starts them.
        return ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=self._context,
            initializer=_start_worker,
            initargs=(self.niceness, os.getpid()),
        )

    def _replace_executor(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._executor is broken:  # once, however many of its jobs report it
                self._executor = self._start_executor()
        broken.shutdown(wait=False, cancel_futures=True)

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

    def _submit_to_executor(
        self, fn: Callable[..., R], *args: object, **kwargs: object
    ) -> tuple[ProcessPoolExecutor, Future[R]]:
        executor = self._executor
        try:
            return executor, executor.submit(fn, *args, **kwargs)
        except BrokenProcessPool:  # a worker died since the last job: start fresh ones and retry once
            self._replace_executor(executor)
            executor = self._executor
            return executor, executor.submit(fn, *args, **kwargs)

    def submit(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> Future[R]:
        """Start `fn` in a worker, or raise `DecodeQueueFullError` when the pool is full."""
        self._admit()
        try:
            executor, inner = self._submit_to_executor(fn, *args, **kwargs)
        except BaseException:
            self._release()
            raise
        # The caller's future: already running, so a client that goes away cannot cancel it (the job
        # runs to its end either way), and completed only once the job's slot is free again.
        outer: Future[R] = Future()
        outer.set_running_or_notify_cancel()

        def relay(done: Future[R]) -> None:
            self._release()
            error = None if done.cancelled() else done.exception()
            if isinstance(error, BrokenProcessPool):
                self._replace_executor(executor)
                outer.set_exception(DecoderStoppedError())
            elif done.cancelled():  # the server is shutting down
                outer.set_exception(DecoderStoppedError())
            elif error is not None:
                outer.set_exception(error)
            else:
                outer.set_result(done.result())

        inner.add_done_callback(relay)
        return outer

    async def run(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """`fn(*args, **kwargs)` in a worker, awaited (for async routes)."""
        return await asyncio.wrap_future(self.submit(fn, *args, **kwargs))

    def call(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """`fn(*args, **kwargs)` in a worker, waited for (for sync routes, already in a worker thread)."""
        return self.submit(fn, *args, **kwargs).result()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def decode_pool(request: Request) -> DecodePool:
    """The app's pool (made by the lifespan)."""
    pool: DecodePool = request.app.state.decode_pool
    return pool
