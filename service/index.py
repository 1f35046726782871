"""`BitIndex`: what a search reads of one collection, a Hamming-ball lookup over a segmented index.

A collection's documents live in an immutable *base segment*, grouped by address cell (a dense table
of one cell per address up to 2**24 addresses, Fibonacci-hashed cells above), plus a *delta* of the
documents written since, chained by address hash (`service.index_segments`). Deleting or replacing a
document writes the version that removed it into the old entry's death stamp; a `BitIndex` is one
version of the collection, immutable: it reads an entry as live when its stamp is later than its own
version, and the delta's first `count` entries only. So the writer (`service.index_writer`) changes a
document in O(1) while searches read on without locks, and a background merge folds the delta into
a new base (`SegmentedIndex.merge`).

The XOR masks of every radius are precomputed in order of popcount, so the shortlist comes out ordered
by address distance and the lookup stops as soon as `limit` documents are found. The probe loop is
compiled with numba (`probe_index`): a lookup visits a few hundred addresses and copies a few hundred
positions, which is microseconds of work, and as vectorised numpy it cost a dozen array calls whose
fixed overheads were most of the time (23 us against 5 us compiled at radius 2 on 1,000,000
documents; `benchmarks/search.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np

from service.codes import MAX_ADDRESS_BITS, xor_masks
from service.index_segments import (
    ALIVE,
    DIRTY_CELL,
    HASH_MULTIPLIER,
    NO_ENTRY,
    OFFSET_MASK,
    Delta,
    DeltaView,
    IdStore,
    Segment,
)

# The scalars of a version, in one int64 array (fewer arguments make a cheaper numba call).
_DENSE, _SHIFT, _HEAD_SHIFT, _DELTA_COUNT, _VERSION = range(5)
_NO_LABELS = np.zeros(0, np.uint8)
Int = int | np.int64  # what the compiled kernels' integers are in Python terms (numba ignores annotations)


@numba.njit(cache=True, nogil=True)
def _cell(address: int, dense: bool, shift: np.uint64) -> Int:
    return address if dense else np.int64((np.uint64(address) * HASH_MULTIPLIER) >> shift)


@numba.njit(cache=True, nogil=True)
def _write_live(
    out: np.ndarray,
    size: Int,
    written: Int,
    begin: Int,
    stop: Int,
    address: int,
    label: Int,
    addresses: np.ndarray,
    dead: np.ndarray,
    dense: bool,
    check_dead: bool,
    version: int,
) -> Int:
    """Write the live documents at `address` of a base run into out (up to `size`); the new count.
    With out empty, only count them."""
    for position in range(begin, stop):
        if (dense or addresses[position] == address) and (not check_dead or dead[position] > version):
            if written == size:
                return written
            if out.shape[0]:
                out[written] = position
                out[size + written] = label
            written += 1
    return written


@numba.njit(cache=True, nogil=True)
def _write_delta(
    out: np.ndarray,
    size: Int,
    written: Int,
    entry: int,
    n: int,
    address: int,
    label: Int,
    entries: np.ndarray,
    delta_count: int,
    version: int,
) -> Int:
    """Like `_write_live`, for the delta chain starting at `entry` (delta entry e is position n + e)."""
    while entry != NO_ENTRY:
        if entry < delta_count and entries[entry, 0] == address and entries[entry, 1] > version:
            if written == size:
                return written
            if out.shape[0]:
                out[written] = n + entry
                out[size + written] = label
            written += 1
        entry = entries[entry, 2]
    return written


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
    the probe's index. Returns out (2k,) int64 with k <= limit, and how many probes were looked up:
    out[:k] the positions found, out[k:] the label of the probe that found each.

    Two passes, counting then copying into an array of the exact size, as one array (handing each
    array to Python costs ~0.8 us of a ~5 us lookup). The top bit of a cell's offset says one of
    its documents died: only then are death stamps read, so a clean dense cell costs two reads.
    """
    dense = scalars[_DENSE] != 0
    shift = np.uint64(scalars[_SHIFT])
    head_shift = np.uint64(scalars[_HEAD_SHIFT])
    delta_count = scalars[_DELTA_COUNT]
    version = scalars[_VERSION]
    n = addresses.shape[0]
    has_delta = head.shape[0] > 0
    none = np.empty(0, dtype=np.int64)
    probed = probes.shape[0]
    found: Int = 0
    for i in range(probes.shape[0]):
        address = probes[i] ^ query
        cell = _cell(address, dense, shift)
        start = table[cell]
        begin, stop = np.int64(start & OFFSET_MASK), np.int64(table[cell + 1] & OFFSET_MASK)
        if dense and not start & DIRTY_CELL:
            found += stop - begin
        elif begin < stop:
            found = _write_live(
                none,
                limit,
                found,
                begin,
                stop,
                address,
                0,
                addresses,
                dead,
                dense,
                start >= DIRTY_CELL,
                version,
            )
        if has_delta:
            entry = head[_cell(address, False, head_shift)]
            found = _write_delta(none, limit, found, entry, n, address, 0, entries, delta_count, version)
        if found >= limit:
            probed = i + 1
            break
    size = min(found, limit)
    out = np.empty(2 * size, dtype=np.int64)
    written: Int = 0
    for i in range(probed):
        address = probes[i] ^ query
        label = np.int64(labels[i]) if labels.shape[0] else np.int64(i)
        cell = _cell(address, dense, shift)
        start = table[cell]
        begin, stop = np.int64(start & OFFSET_MASK), np.int64(table[cell + 1] & OFFSET_MASK)
        if dense and not start & DIRTY_CELL:
            for position in range(begin, min(stop, begin + size - written)):
                out[written] = position
                out[size + written] = label
                written += 1
        elif begin < stop:
            written = _write_live(
                out,
                size,
                written,
                begin,
                stop,
                address,
                label,
                addresses,
                dead,
                dense,
                start >= DIRTY_CELL,
                version,
            )
        if has_delta:
            entry = head[_cell(address, False, head_shift)]
            written = _write_delta(
                out, size, written, entry, n, address, label, entries, delta_count, version
            )
    return out, probed


@dataclass(slots=True)  # not frozen: built once per query, and a frozen __init__ is slower
class Shortlist:
    """The result of one Hamming-ball lookup."""

    positions: np.ndarray  # (k,) int64 positions into the index, ordered by address distance
    distances: np.ndarray  # (k,) int64 Hamming distance of each document's address to the query
    probed: int  # how many addresses were looked up


@dataclass(slots=True)
class Probes:
    """The result of looking up an ordered list of addresses (`BitIndex.probe`)."""

    positions: np.ndarray  # (k,) int64 positions into the index, in probe order
    probe_indices: np.ndarray  # (k,) int64: addresses[probe_indices[j]] is where positions[j] was found
    probed: int  # how many of the addresses were looked up (a prefix of the list)


class BitIndex:
    """One version of a collection's documents: a base segment, its death stamps and a delta view.

    Immutable as far as its reader can tell (see the module docstring). Positions below `len(base)`
    are base documents, the others delta entries; they mean something only to the index they came from.
    """

    __slots__ = ("address_bits", "base", "base_dead", "delta", "version", "_live", "_n", "_kernel_arrays")

    def __init__(
        self, base: Segment, base_dead: np.ndarray, delta: DeltaView, version: int, live: int
    ) -> None:
        self.address_bits = base.address_bits
        self.base = base
        self.base_dead = base_dead  # (n,) uint32, shared with the writer (it only stamps later versions)
        self.delta = delta
        self.version = version
        self._live = live
        self._n = len(base)
        scalars = np.array([base.dense, base.shift, delta.shift, delta.count, version], np.int64)
        # What every lookup hands the compiled probe loop, gathered once per version.
        self._kernel_arrays = (base.table, base.addresses, base_dead, delta.head, delta.entries, scalars)

    @classmethod
    def build(
        cls,
        address_bits: int,
        row_ids: Sequence[int] | np.ndarray,
        external_ids: Sequence[str],
        addresses: Sequence[int] | np.ndarray,
        long_words: np.ndarray,
    ) -> BitIndex:
        """An index of these documents (unsorted parallel arrays) in one base segment, all live."""
        if not 1 <= address_bits <= MAX_ADDRESS_BITS:
            raise ValueError(f"address_bits must be in 1..{MAX_ADDRESS_BITS}, got {address_bits}")
        long_words = np.asarray(long_words, dtype=np.uint64)
        if long_words.ndim != 2 or len(long_words) != len(row_ids):
            raise ValueError(f"long_words must be (n={len(row_ids)}, words), got shape {long_words.shape}")
        base = Segment.build(
            address_bits,
            np.asarray(row_ids, np.int64),
            IdStore.from_strings(list(external_ids)),
            np.asarray(addresses, np.uint64),
            long_words,
        )
        return cls.of(base)

    @classmethod
    def of(cls, base: Segment) -> BitIndex:
        """Every document of `base` live, no delta."""
        empty = Delta(base.long_words.shape[1], capacity=1).view()
        return cls(base, np.full(len(base), ALIVE, np.uint32), empty, 0, len(base))

    @classmethod
    def empty(cls, address_bits: int, long_bits: int) -> BitIndex:
        """An index with no documents."""
        return cls.of(Segment.empty(address_bits, (long_bits + 63) // 64))

    def __len__(self) -> int:
        """The number of live documents."""
        return self._live

    @property
    def has_dense_table(self) -> bool:
        return self.base.dense

    def lookup(self, address: int, radius: int, limit: int) -> Shortlist:
        """Documents whose address is within `radius` of `address`, nearest first, at most `limit`."""
        if not 0 <= address < (1 << self.address_bits):
            raise ValueError(f"address must be in 0..2**{self.address_bits}-1, got {address}")
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        table = xor_masks(self.address_bits, radius)
        out, probed = probe_index(*self._kernel_arrays, table.masks, address, table.popcounts, limit)
        found = len(out) // 2
        return Shortlist(out[:found], out[found:], probed)

    def probe(self, addresses: Sequence[int] | np.ndarray, limit: int) -> Probes:
        """The documents stored at `addresses[0]`, `addresses[1]`, ... in that order, until `limit` are
        found: the lookup behind multi-probe search, which orders its probes by likelihood itself."""
        probes = np.ascontiguousarray(addresses, dtype=np.int64)
        if probes.ndim != 1:
            raise ValueError(f"addresses must be a 1-D list, got shape {probes.shape}")
        if probes.size and (int(probes.min()) < 0 or int(probes.max()) >> self.address_bits):
            raise ValueError(f"every address must be in 0..2**{self.address_bits}-1")
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        out, probed = probe_index(*self._kernel_arrays, probes, 0, _NO_LABELS, limit)
        found = len(out) // 2
        return Probes(out[:found], out[found:], probed)

    def _gather(self, base_values: np.ndarray, delta_values: np.ndarray, positions: np.ndarray) -> np.ndarray:
        positions = np.asarray(positions, np.int64)
        if not self.delta.count or not positions.size or int(positions.max()) < self._n:
            values: np.ndarray = base_values[positions]
            return values
        in_delta = positions >= self._n
        values = np.empty((len(positions), *base_values.shape[1:]), base_values.dtype)
        values[~in_delta] = base_values[positions[~in_delta]]
        values[in_delta] = delta_values[positions[in_delta] - self._n]
        return values

    def row_ids_at(self, positions: np.ndarray) -> np.ndarray:
        """(k,) int64 SQL row ids of the documents at `positions`."""
        return self._gather(self.base.row_ids, self.delta.row_ids, positions)

    def addresses_at(self, positions: np.ndarray) -> np.ndarray:
        """(k,) uint32 addresses of the documents at `positions`."""
        return self._gather(self.base.addresses, self.delta.addresses, positions)

    def long_words_at(self, positions: np.ndarray) -> np.ndarray:
        """(k, words) uint64 long codes of the documents at `positions`."""
        return self._gather(self.base.long_words, self.delta.long_words, positions)

    def external_ids_at(self, positions: np.ndarray) -> list[str]:
        """The external ids of the documents at `positions`, in that order."""
        positions = np.asarray(positions, np.int64)
        in_delta = positions >= self._n
        if not in_delta.any():
            return self.base.ids.strings(positions)
        ids = self.delta.ids
        from_base = iter(self.base.ids.strings(positions[~in_delta]))
        return [
            ids[position - self._n] if is_delta else next(from_base)
            for position, is_delta in zip(positions.tolist(), in_delta.tolist(), strict=True)
        ]

    def long_code_distances(self, positions: np.ndarray, query_words: np.ndarray) -> np.ndarray:
        """Hamming distances between the long codes at `positions` and one query code (as uint64 words)."""
        distances: np.ndarray = np.bitwise_count(self.long_words_at(positions) ^ query_words).sum(
            axis=1, dtype=np.int64
        )
        return distances

    def live_positions(self) -> np.ndarray:
        """(len(self),) int64 positions of every live document: base ones first, then the delta's."""
        delta = self.delta
        entries = np.flatnonzero(delta.dead[: delta.count] > self.version)
        return np.concatenate([np.flatnonzero(self.base_dead > self.version), entries + self._n])

    def brute_force_ball(self, address: int, radius: int) -> np.ndarray:
        """Positions of every live document within `radius`, by scanning all addresses (a reference path)."""
        positions = self.live_positions()
        distances = np.bitwise_count(self.addresses_at(positions) ^ np.uint32(address))
        inside: np.ndarray = positions[distances <= radius]
        return inside
