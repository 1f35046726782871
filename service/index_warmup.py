"""Compile every index kernel before the server is ready, not during its first collection load.

The index's numba kernels (`service.index*`) compile lazily, on their first call, and a cold compile
takes seconds of CPU: 5-9 s on an idle core here, tens of seconds on a loaded machine. Whichever
thread called first paid it: the poller's first load of a collection created by another process
(the bulk job), so a server started on an empty database found a new collection that much later
than the `index_poll_seconds` it promises (the compose stack's first search waited past two minutes).

`warm_up()` runs each kernel once, with the argument types the loader, the writer, a search and a
merge give it, on a tiny in-memory index: it compiles them, or reads them from numba's on-disk cache
(`NUMBA_CACHE_DIR`; the Docker image fills it at build time), in well under a second when cached. The
server calls it in its lifespan, before the first sync. `tests/service/test_index_warmup.py` checks,
in a fresh process, that a real load, write, search and merge compile nothing more.
"""

from __future__ import annotations

import logging
import struct
import time

import numpy as np

from service.index_load import _COPY_SIGNATURE, _Blocks, parse_copy_data
from service.index_segments import IdStore
from service.index_writer import Changes, SegmentedIndex

logger = logging.getLogger(__name__)

_ADDRESS_BITS = 8
_LONG_BITS = 64


def _copy_block(rows: list[tuple[int, str, int, bytes]]) -> bytes:
    """A binary COPY stream (header, tuples, trailer) of (row id, external id, address, long code)."""
    out = [_COPY_SIGNATURE, struct.pack(">ii", 0, 0)]
    for row_id, external_id, address, code in rows:
        encoded = external_id.encode()
        out.append(struct.pack(">hiq", 4, 8, row_id))
        out.append(struct.pack(">i", len(encoded)) + encoded)
        out.append(struct.pack(">iq", 8, address))
        out.append(struct.pack(">i", len(code)) + code)
    out.append(struct.pack(">h", -1))
    return b"".join(out)


def _parse_as_postgres_loads(code_bytes: int) -> None:
    """The PostgreSQL loader's parse of one block (`service.index_load._load_postgres`)."""
    data = _copy_block([(1, "warm-a", 3, bytes(code_bytes)), (2, "warm-b", 5, bytes(code_bytes))])
    _, status, parsed = parse_copy_data(data, len(_COPY_SIGNATURE) + 8, code_bytes)
    rows = -1 if parsed is None else len(parsed[0])
    if (rows, status) != (2, 1):
        raise RuntimeError(f"index warm-up: the COPY parser read {rows} rows, status {status}")


def warm_up() -> float:
    """Run every index kernel once (see the module docstring); returns the seconds it took."""
    started = time.monotonic()
    code_bytes = _LONG_BITS // 8
    _parse_as_postgres_loads(code_bytes)
    # A load: blocks as both loaders make them, then one base segment (`service.index_load`).
    blocks = _Blocks()
    blocks.add(
        np.array([1, 2, 3], np.int64),
        np.array([3, 5, 5], np.int64),
        np.frombuffer(bytes(3 * code_bytes), np.uint8).reshape(3, code_bytes),
        IdStore.from_strings(["warm-a", "warm-b", "warm-c"]),
    )
    writer = SegmentedIndex(blocks.segment(_ADDRESS_BITS, code_bytes))
    # Writes from SQL (`service.index_load.read_changes`): a replacement, a new row, a delete.
    words = (_LONG_BITS + 63) // 64
    writer.apply(
        Changes(
            np.array([2, 4], np.int64),
            np.array([False, False]),
            ["warm-b", "warm-d"],
            np.array([7, 5], np.uint64),
            np.zeros((2, words), np.uint64),
        )
    )
    writer.apply(Changes.deletes(np.array([1], np.int64), words))
    # Searches: a ball, probes, and the ids of what they found (base and delta).
    snapshot = writer.snapshot
    found = snapshot.lookup(5, 2, 10).positions
    snapshot.probe([5, 7], 10)
    snapshot.external_ids_at(found)
    snapshot.external_ids_at(snapshot.live_positions())
    # A merge, then the replay of a write that came after it (`service.index_sync.IndexRegistry.merge`).
    since = writer.snapshot
    base = SegmentedIndex.merge(since)
    writer.apply(Changes.deletes(np.array([3], np.int64), words))
    rebased = writer.rebased(base, since)
    if sorted(rebased.snapshot.external_ids_at(rebased.snapshot.live_positions())) != ["warm-b", "warm-d"]:
        raise RuntimeError("index warm-up: the merged index does not hold what it should")
    seconds = time.monotonic() - started
    logger.info("index kernels ready in %.2f s", seconds)
    return seconds
