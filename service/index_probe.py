"""The compiled Hamming-ball probe loop behind `service.index.BitIndex.lookup` and `probe`.

It reads one version of a segmented index (`service.index_segments`): the base segment's cell table,
addresses and death stamps, and the delta's chain heads and entries, as arrays, so that a lookup
costs one call into compiled code (numba) and hands one array back.
"""

from __future__ import annotations

import numba
import numpy as np

from service.index_segments import DIRTY_CELL, HASH_MULTIPLIER, NO_ENTRY, OFFSET_MASK

# The scalars of a version, in one int64 array (fewer arguments make a cheaper numba call).
_DENSE, _SHIFT, _HEAD_SHIFT, _DELTA_COUNT, _VERSION = range(5)
Int = int | np.int64  # what the compiled kernels' integers are in Python terms (numba ignores annotations)


@numba.njit(cache=True, nogil=True)
def _scalars(scalars: np.ndarray) -> tuple[bool, np.uint64, np.uint64, Int, Int]:
    """A version's scalars (see `probe_index`): dense, shift, head shift, delta count, version."""
    return (
        scalars[_DENSE] != 0,
        np.uint64(scalars[_SHIFT]),
        np.uint64(scalars[_HEAD_SHIFT]),
        scalars[_DELTA_COUNT],
        scalars[_VERSION],
    )


@numba.njit(cache=True, nogil=True)
def _cell(address: int, dense: bool, shift: np.uint64) -> Int:
    return address if dense else np.int64((np.uint64(address) * HASH_MULTIPLIER) >> shift)


@numba.njit(cache=True, nogil=True)
def _live_in_run(
    out: np.ndarray,
    size: Int,
    written: Int,
    begin: Int,
    stop: Int,
    address: int,
    addresses: np.ndarray,
    dead: np.ndarray,
    dense: bool,
    check_dead: bool,
    version: Int,
) -> Int:
    """Write the positions of the live documents at `address` of a base run into out[written:size];
    the new count. With out empty, only count them (up to `size`)."""
    for position in range(begin, stop):
        if (dense or addresses[position] == address) and (not check_dead or dead[position] > version):
            if written == size:
                return written
            if out.shape[0]:
                out[written] = position
            written += 1
    return written


@numba.njit(cache=True, nogil=True)
def _live_in_delta(
    out: np.ndarray,
    size: Int,
    written: Int,
    entry: int,
    n: int,
    address: int,
    entries: np.ndarray,
    delta_count: Int,
    version: Int,
) -> Int:
    """Like `_live_in_run`, for the delta chain starting at `entry` (delta entry e is position n + e)."""
    while entry != NO_ENTRY:
        if entry < delta_count and entries[entry, 0] == address and entries[entry, 1] > version:
            if written == size:
                return written
            if out.shape[0]:
                out[written] = n + entry
            written += 1
        entry = entries[entry, 2]
    return written


# Runs of at most this many documents are copied with a fixed number of stores (see `probe_index`).
_SHORT_RUN = 4


@numba.njit(cache=True, nogil=True)
def _count_dense(
    table: np.ndarray,
    addresses: np.ndarray,
    dead: np.ndarray,
    probes: np.ndarray,
    query: int,
    version: Int,
    limit: int,
    runs: np.ndarray,
    counts: np.ndarray,
) -> tuple[int, Int]:
    """Pass 1 of `probe_index` on a dense table and no delta: (probes looked up, documents found)."""
    none = np.empty(0, dtype=np.int64)
    found: Int = 0
    for i in range(probes.shape[0]):
        address = probes[i] ^ query
        start = table[address]
        begin, stop = np.int64(start & OFFSET_MASK), np.int64(table[address + 1] & OFFSET_MASK)
        if start & DIRTY_CELL:
            runs[i] = -1
            count = _live_in_run(none, limit, 0, begin, stop, address, addresses, dead, True, True, version)
        else:
            runs[i] = begin
            count = stop - begin
        counts[i] = count
        found += count
        if found >= limit:
            return i + 1, found
    return probes.shape[0], found


@numba.njit(cache=True, nogil=True)
def _count_any(
    index: tuple[np.ndarray, ...],
    probes: np.ndarray,
    query: int,
    limit: int,
    runs: np.ndarray,
    counts: np.ndarray,
) -> tuple[int, Int]:
    """Pass 1 of `probe_index`, any table, with or without a delta; `index` is probe_index's first
    six arguments."""
    table, addresses, dead, head, entries, scalars = index
    dense, shift, head_shift, delta_count, version = _scalars(scalars)
    n = addresses.shape[0]
    has_delta = head.shape[0] > 0
    none = np.empty(0, dtype=np.int64)
    found: Int = 0
    for i in range(probes.shape[0]):
        address = probes[i] ^ query
        cell = _cell(address, dense, shift)
        start = table[cell]
        begin, stop = np.int64(start & OFFSET_MASK), np.int64(table[cell + 1] & OFFSET_MASK)
        if dense and not start & DIRTY_CELL:
            runs[i] = begin
            count: Int = stop - begin
        else:
            runs[i] = -1
            count = _live_in_run(
                none, limit, 0, begin, stop, address, addresses, dead, dense, start >= DIRTY_CELL, version
            )
        if has_delta:
            entry = head[_cell(address, False, head_shift)]
            in_delta = _live_in_delta(none, limit, 0, entry, n, address, entries, delta_count, version)
            if in_delta:
                runs[i] = -1
                count += in_delta
        counts[i] = count
        found += count
        if found >= limit:
            return i + 1, found
    return probes.shape[0], found


# Compiled when this module is imported (or read from numba's on-disk cache), not on the first query.
@numba.njit(
    "Tuple((int64[::1], int64))(uint32[::1], uint32[::1], uint32[::1], "
    "uint32[::1], uint32[:, ::1], int64[::1], int64[::1], int64, uint8[::1], int64)",
    cache=True,
    nogil=True,
)
def probe_index(
    table: np.ndarray,
    addresses: np.ndarray,
    dead: np.ndarray,
    head: np.ndarray,
    entries: np.ndarray,
    scalars: np.ndarray,
    probes: np.ndarray,
    query: int,
    labels: np.ndarray,
    limit: int,
) -> tuple[np.ndarray, int]:
    """The first `limit` live documents at addresses probes[0] ^ query, probes[1] ^ query, ...

    Base: cell table (cells + 1,) uint32, dense (cell = address) or hashed (cell = address *
    HASH_MULTIPLIER >> shift, keeping matching addresses), addresses and death stamps (n,) uint32.
    Delta: chain heads (buckets,) uint32 (empty for none) and entries (capacity, 3) uint32 of
    (address, death stamp, next entry), below delta_count only; delta entry e is position n + e.
    scalars: dense, shift, head shift, delta count, version. An entry is live when its stamp >
    version. probes: (m,) int64 in lookup order (XOR masks by popcount with the query address, or
    addresses with query 0); labels: (m,) uint8 to report per probe (popcounts), or empty to report
    the probe's index. Returns out (2(k + 4),) int64 with k <= limit, and how many probes were looked
    up: out[:k] the positions found, out[k + 4 : 2k + 4] the label of the probe that found each (4
    slots of padding after each half).

    Two passes over the probes, so that the table is read once and no loop's trip count depends on
    what it read:
    1. count: c_i documents at probe i, until sum c_i >= limit. A clean dense cell is two table
       reads, its run table[a] .. table[a + 1] - 1 all live; hashed cells, cells flagged dirty and
       the delta take the slow path of checking addresses and death stamps.
    2. copy: a clean run of c <= 4 documents is written with 4 stores whatever c is (the excess
       lands past the written prefix, where what follows overwrites it, or in the padding), a longer
       run or a slow-path probe by a loop.
    A loop per run would cost one mispredicted branch per probe (a few hundred probes at radius 2,
    runs of Poisson size): the two passes made a radius-2 lookup on 10M documents (23-bit addresses)
    1.8x as fast, and radius 3 2.4x. One array comes back (handing each array to Python costs
    ~0.3-0.8 us).
    """
    dense, shift, head_shift, delta_count, version = _scalars(scalars)
    n = addresses.shape[0]
    has_delta = head.shape[0] > 0
    m = probes.shape[0]
    runs = np.empty(m, dtype=np.int64)  # first position of a clean dense run, -1 for the slow path
    counts = np.empty(m, dtype=np.int64)  # documents found at each probe
    if dense and not has_delta:  # the common case in a loop of its own: ~20% faster at radius 2
        probed, found = _count_dense(table, addresses, dead, probes, query, version, limit, runs, counts)
    else:
        index = (table, addresses, dead, head, entries, scalars)
        probed, found = _count_any(index, probes, query, limit, runs, counts)
    size = min(found, limit)
    out = np.empty(2 * (size + _SHORT_RUN), dtype=np.int64)
    labels_at = size + _SHORT_RUN
    written: Int = 0
    for i in range(probed):
        label = np.int64(labels[i]) if labels.shape[0] else np.int64(i)
        begin = runs[i]
        if begin >= 0:
            count = min(counts[i], size - written)
            if count <= _SHORT_RUN:
                for j in range(_SHORT_RUN):
                    out[written + j] = begin + j
                    out[labels_at + written + j] = label
            else:
                for j in range(count):
                    out[written + j] = begin + j
                    out[labels_at + written + j] = label
            written += count
        elif counts[i]:  # the slow path, again, only where pass 1 found something
            before = written
            address = probes[i] ^ query
            cell = _cell(address, dense, shift)
            start = table[cell]
            begin, stop = np.int64(start & OFFSET_MASK), np.int64(table[cell + 1] & OFFSET_MASK)
            written = _live_in_run(
                out, size, written, begin, stop, address, addresses, dead, dense, start >= DIRTY_CELL, version
            )
            if has_delta:
                entry = head[_cell(address, False, head_shift)]
                written = _live_in_delta(out, size, written, entry, n, address, entries, delta_count, version)
            out[labels_at + before : labels_at + written] = label
    return out, probed


def version_scalars(dense: bool, shift: int, head_shift: int, delta_count: int, version: int) -> np.ndarray:
    """The scalars argument of `probe_index` for one version."""
    return np.array([dense, shift, head_shift, delta_count, version], np.int64)


def split_found(out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions, labels) of what `probe_index` returned, both (k,) int64 views."""
    found = len(out) // 2 - _SHORT_RUN
    return out[:found], out[found + _SHORT_RUN : 2 * found + _SHORT_RUN]
