"""service.write_priority: which requests are short writes, and searches waiting for them (no timing:
every wait here either ends because the write ended or is bounded far below the joins' timeouts)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from service.write_priority import SHORT_WRITE_BYTES, WritePriority, WritePriorityMiddleware, is_short_write


def scope(method: str, path: str, length: int | None = None, chunked: bool = False) -> dict:
    headers = [(b"host", b"x")]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    if chunked:
        headers.append((b"transfer-encoding", b"chunked"))
    return {"type": "http", "method": method, "path": path, "headers": headers}


@pytest.mark.parametrize(
    ("request_scope", "short"),
    [
        (scope("POST", "/v1/collections/c/documents", 300), True),
        (scope("DELETE", "/v1/collections/c/documents/d1"), True),
        (scope("POST", "/v1/collections/c/documents", SHORT_WRITE_BYTES + 1), False),  # a big batch
        (scope("POST", "/v1/collections/c/documents", chunked=True), False),  # size unknown
        (scope("GET", "/v1/collections/c/documents/d1"), False),
        (scope("POST", "/v1/collections/c/search", 100), False),
        (scope("POST", "/v1/collections", 100), False),
        (scope("POST", "/v1/image-collections/c/images", 100), False),
    ],
)
def test_short_writes_are_small_document_writes(request_scope: dict, short: bool) -> None:
    assert is_short_write(request_scope) is short


def test_a_search_waits_until_the_write_ends() -> None:
    priority = WritePriority(max_wait_seconds=600)  # only the write's end can release it
    priority.begin_write()
    waited = threading.Event()

    def search() -> None:
        priority.wait_for_writes()
        waited.set()

    thread = threading.Thread(target=search)
    thread.start()
    assert not waited.wait(0.05)  # still held (a lower bound only: never flaky)
    priority.end_write()
    thread.join(60)
    assert waited.is_set()


def test_a_search_waits_no_longer_than_the_bound_and_not_at_all_without_writes() -> None:
    priority = WritePriority(max_wait_seconds=0.01)
    priority.wait_for_writes()  # nothing in flight
    priority.begin_write()  # never ended
    thread = threading.Thread(target=priority.wait_for_writes)
    thread.start()
    thread.join(60)
    assert not thread.is_alive()
    assert priority.writes_in_flight == 1
    WritePriority(max_wait_seconds=0).wait_for_writes()


def test_the_middleware_marks_a_short_write_in_flight_until_its_answer_failed_or_not() -> None:
    priority = WritePriority(max_wait_seconds=1)
    seen: list[int] = []

    async def app(scope: dict, receive: object, send: object) -> None:
        seen.append(priority.writes_in_flight)
        if scope["path"].endswith("/boom"):
            raise RuntimeError("boom")

    middleware = WritePriorityMiddleware(app, priority)

    async def requests() -> None:
        await middleware(scope("DELETE", "/v1/collections/c/documents/d"), None, None)
        await middleware(scope("POST", "/v1/collections/c/search", 10), None, None)
        with pytest.raises(RuntimeError):
            await middleware(scope("DELETE", "/v1/collections/c/documents/boom"), None, None)

    asyncio.run(requests())
    assert seen == [1, 0, 1]
    assert priority.writes_in_flight == 0
