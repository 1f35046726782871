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
compiled with numba (`service.index_probe`): a lookup visits a few hundred addresses and copies a
few hundred positions, which is microseconds of work, and as vectorised numpy it cost a dozen array
calls whose fixed overheads were most of the time (23 us against 5 us compiled at radius 2 on
1,000,000 documents; `benchmarks/search.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.codes import MAX_ADDRESS_BITS, xor_masks
from service.index_probe import probe_index, split_found, version_scalars
from service.index_segments import ALIVE, Delta, DeltaView, IdStore, Segment

_NO_LABELS = np.zeros(0, np.uint8)


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
        scalars = version_scalars(base.dense, base.shift, delta.shift, delta.count, version)
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
        positions, distances = split_found(out)
        return Shortlist(positions, distances, probed)

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
        positions, probe_indices = split_found(out)
        return Probes(positions, probe_indices, probed)

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
