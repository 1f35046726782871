"""`BitIndex`: the in-memory Hamming-ball index over one collection's addresses.

Documents are kept sorted by address. For address spaces up to 2**24 cells a dense offsets table
maps every address a to its run of documents, positions offsets[a] .. offsets[a + 1] - 1, so probing
one address is two array reads; above that the sorted addresses are binary-searched. The XOR masks
of every radius are precomputed in order of popcount, so the shortlist comes out ordered by address
distance and the lookup stops as soon as `limit` documents are found.

The probe loops are compiled with numba (`hamming_ball`, `probe_cells`): a lookup visits a few
hundred addresses and copies a few hundred positions, which is microseconds of work, and as
vectorised numpy it cost a dozen array calls whose fixed overheads were most of the time (23 us
against 5 us compiled at radius 2 on 1,000,000 documents; `benchmarks/search.py`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numba
import numpy as np

MAX_ADDRESS_BITS = 32
# The dense table costs 8 bytes per cell (an int64 offset): always worth it up to 2**20 cells
# (8 MiB); above that only when the collection is big enough to fill it reasonably, and never past
# 2**24 cells (128 MiB).
_DENSE_ALWAYS_BITS = 20
_DENSE_MAX_BITS = 24
_DENSE_CELLS_PER_DOCUMENT = 16


@dataclass(frozen=True)
class XorMasks:
    """Every mask of popcount <= radius over `address_bits` bits, sorted by popcount."""

    masks: np.ndarray  # (m,) int64 (addresses have at most 32 bits; the compiled lookup indexes with them)
    popcounts: np.ndarray  # (m,) uint8


@lru_cache(maxsize=64)
def xor_masks(address_bits: int, radius: int) -> XorMasks:
    """The precomputed masks for one (address_bits, radius); cached, as every query reuses them."""
    if not 1 <= address_bits <= MAX_ADDRESS_BITS:
        raise ValueError(f"address_bits must be in 1..{MAX_ADDRESS_BITS}, got {address_bits}")
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    masks: list[int] = []
    popcounts: list[int] = []
    for distance in range(radius + 1):
        for bits in itertools.combinations(range(address_bits), distance):
            masks.append(sum(1 << bit for bit in bits))
            popcounts.append(distance)
    return XorMasks(masks=np.array(masks, dtype=np.int64), popcounts=np.array(popcounts, dtype=np.uint8))


def long_codes_to_words(long_codes: np.ndarray) -> np.ndarray:
    """(n, bytes) uint8 packed codes -> (n, ceil(bytes / 8)) uint64 words for popcount distances."""
    codes = np.ascontiguousarray(long_codes, dtype=np.uint8)
    if codes.ndim != 2:
        raise ValueError(f"long codes must be a 2-D (n, bytes) array, got shape {codes.shape}")
    padding = (-codes.shape[1]) % 8
    if padding:
        codes = np.concatenate([codes, np.zeros((codes.shape[0], padding), dtype=np.uint8)], axis=1)
    return codes.view(np.uint64)


@numba.njit("UniTuple(int64, 2)(int64[::1], int64[::1], int64)", cache=True, nogil=True)
def _run(offsets: np.ndarray, sorted_addresses: np.ndarray, cell: int) -> tuple[int, int]:
    """First and one-past-last position of the documents at address `cell`."""
    if offsets.shape[0] > 0:
        return offsets[cell], offsets[cell + 1]
    return np.searchsorted(sorted_addresses, cell), np.searchsorted(sorted_addresses, cell, "right")


# Compiled when this module is imported (or read from numba's on-disk cache), not on the first query.
@numba.njit(
    "Tuple((int64[::1], uint8[::1], int64))(int64[::1], int64[::1], int64[::1], uint8[::1], int64, int64)",
    cache=True,
    nogil=True,
)
def hamming_ball(
    offsets: np.ndarray,
    sorted_addresses: np.ndarray,
    masks: np.ndarray,
    popcounts: np.ndarray,
    query: int,
    limit: int,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Positions and address distances of the first `limit` documents at addresses query ^ masks[i].

    offsets: (2**bits + 1,) int64 dense table, or empty to binary-search `sorted_addresses` (n,) int64.
    masks: (m,) int64 in popcount order; popcounts: (m,) uint8. Returns positions (k,) int64,
    distances (k,) uint8 with k <= limit, and how many masks were probed. Two passes: count the
    documents mask by mask until `limit` is reached, then allocate exactly and copy.
    """
    probed = masks.shape[0]
    found = 0
    for i in range(masks.shape[0]):
        first, stop = _run(offsets, sorted_addresses, masks[i] ^ query)
        found += stop - first
        if found >= limit:
            probed = i + 1
            break
    size = min(found, limit)
    positions = np.empty(size, dtype=np.int64)
    distances = np.empty(size, dtype=np.uint8)
    written = 0
    for i in range(probed):
        first, stop = _run(offsets, sorted_addresses, masks[i] ^ query)
        for position in range(first, min(stop, first + size - written)):
            positions[written] = position
            distances[written] = popcounts[i]
            written += 1
    return positions, distances, probed


@numba.njit(
    "Tuple((int64[::1], int64[::1], int64))(int64[::1], int64[::1], int64[::1], int64)",
    cache=True,
    nogil=True,
)
def probe_cells(
    offsets: np.ndarray, sorted_addresses: np.ndarray, probes: np.ndarray, limit: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Positions of the first `limit` documents at addresses probes[0], probes[1], ... in that order.

    offsets and sorted_addresses as in `hamming_ball`; probes: (m,) int64 addresses. Returns positions
    (k,) int64, the index into `probes` of the probe that found each (k,) int64, with k <= limit, and
    how many probes were looked up. One pass into arrays of `limit` (callers probe few addresses).
    """
    positions = np.empty(limit, dtype=np.int64)
    which = np.empty(limit, dtype=np.int64)
    found = 0
    for i in range(probes.shape[0]):
        first, stop = _run(offsets, sorted_addresses, probes[i])
        for position in range(first, stop):
            positions[found] = position
            which[found] = i
            found += 1
            if found == limit:
                return positions, which, i + 1
    return positions[:found], which[:found], probes.shape[0]


@dataclass(slots=True)  # not frozen: built once per query, and a frozen __init__ is slower
class Shortlist:
    """The result of one Hamming-ball lookup."""

    positions: np.ndarray  # (k,) int64 positions into the index, ordered by address distance
    distances: np.ndarray  # (k,) uint8 Hamming distance of each document's address to the query
    probed: int  # how many addresses were looked up


@dataclass(slots=True)
class Probes:
    """The result of looking up an ordered list of addresses (`BitIndex.probe`)."""

    positions: np.ndarray  # (k,) int64 positions into the index, in probe order
    probe_indices: np.ndarray  # (k,) int64: addresses[probe_indices[j]] is where positions[j] was found
    probed: int  # how many of the addresses were looked up (a prefix of the list)


class BitIndex:
    """Immutable sorted arrays over one collection; `with_changes` returns an updated copy."""

    def __init__(
        self,
        address_bits: int,
        row_ids: Sequence[int] | np.ndarray,
        external_ids: Sequence[str] | np.ndarray,
        addresses: Sequence[int] | np.ndarray,
        long_words: np.ndarray,
    ) -> None:
        """Build from unsorted parallel arrays: row ids (int64), external ids, addresses, long-code words."""
        if not 1 <= address_bits <= MAX_ADDRESS_BITS:
            raise ValueError(f"address_bits must be in 1..{MAX_ADDRESS_BITS}, got {address_bits}")
        addresses = np.asarray(addresses, dtype=np.uint64)
        if addresses.size and int(addresses.max()) >> address_bits:
            raise ValueError(f"an address does not fit in {address_bits} bits")
        long_words = np.asarray(long_words, dtype=np.uint64)
        if long_words.ndim != 2 or len(long_words) != len(addresses):
            raise ValueError(f"long_words must be (n={len(addresses)}, words), got shape {long_words.shape}")
        order = np.argsort(addresses, kind="stable")
        self.address_bits = address_bits
        self.addresses = addresses[order]
        self.row_ids = np.asarray(row_ids, dtype=np.int64)[order]
        self.external_ids = np.asarray(external_ids, dtype=object)[order]
        self.long_words = long_words[order]
        # What the compiled lookup reads: addresses fit in 32 bits, so the int64 view is the same values.
        self._sorted_addresses = self.addresses.view(np.int64)
        # Dense table: the documents at address a are positions offsets[a] .. offsets[a + 1] - 1.
        # Empty when the index binary-searches instead.
        self._offsets = np.zeros(0, dtype=np.int64)
        if self._use_dense_table():
            counts = np.bincount(self._sorted_addresses, minlength=1 << address_bits)
            self._offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    @property
    def has_dense_table(self) -> bool:
        return len(self._offsets) > 0

    @classmethod
    def empty(cls, address_bits: int, long_bits: int) -> BitIndex:
        """An index with no documents."""
        words = (long_bits + 63) // 64
        return cls(
            address_bits,
            np.empty(0, np.int64),
            np.empty(0, object),
            np.empty(0, np.uint64),
            np.empty((0, words), np.uint64),
        )

    def __len__(self) -> int:
        return len(self.addresses)

    def _use_dense_table(self) -> bool:
        if self.address_bits <= _DENSE_ALWAYS_BITS:
            return True
        cells = 1 << self.address_bits
        return self.address_bits <= _DENSE_MAX_BITS and cells <= _DENSE_CELLS_PER_DOCUMENT * len(self)

    def with_changes(
        self,
        drop_row_ids: Sequence[int] | np.ndarray,
        row_ids: Sequence[int] | np.ndarray,
        external_ids: Sequence[str] | np.ndarray,
        addresses: Sequence[int] | np.ndarray,
        long_words: np.ndarray,
    ) -> BitIndex:
        """A new index without `drop_row_ids` and with the given documents added (or replaced)."""
        replaced = np.concatenate([np.asarray(drop_row_ids, np.int64), np.asarray(row_ids, np.int64)])
        dropped = np.isin(self.row_ids, replaced)
        # Views when nothing is dropped (the common case while documents are being added).
        keep: np.ndarray | slice = ~dropped if dropped.any() else slice(None)
        return BitIndex(
            self.address_bits,
            np.concatenate([self.row_ids[keep], np.asarray(row_ids, np.int64)]),
            np.concatenate([self.external_ids[keep], np.asarray(external_ids, object)]),
            np.concatenate([self.addresses[keep], np.asarray(addresses, np.uint64)]),
            np.concatenate([self.long_words[keep], np.asarray(long_words, np.uint64)]),
        )

    def lookup(self, address: int, radius: int, limit: int) -> Shortlist:
        """Documents whose address is within `radius` of `address`, nearest first, at most `limit`."""
        if not 0 <= address < (1 << self.address_bits):
            raise ValueError(f"address must be in 0..2**{self.address_bits}-1, got {address}")
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        table = xor_masks(self.address_bits, radius)
        positions, distances, probed = hamming_ball(
            self._offsets, self._sorted_addresses, table.masks, table.popcounts, address, limit
        )
        return Shortlist(positions=positions, distances=distances, probed=int(probed))

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
        positions, which, probed = probe_cells(self._offsets, self._sorted_addresses, probes, limit)
        return Probes(positions=positions, probe_indices=which, probed=int(probed))

    def row_ids_at(self, positions: np.ndarray) -> np.ndarray:
        """(k,) int64 SQL row ids of the documents at `positions`."""
        return self.row_ids[positions]

    def external_ids_at(self, positions: np.ndarray) -> list[str]:
        """The external ids of the documents at `positions`, in that order."""
        return self.external_ids[positions].tolist()

    def addresses_at(self, positions: np.ndarray) -> np.ndarray:
        """(k,) uint64 addresses of the documents at `positions`."""
        return self.addresses[positions]

    def long_words_at(self, positions: np.ndarray) -> np.ndarray:
        """(k, words) uint64 long codes of the documents at `positions`."""
        return self.long_words[positions]

    def long_code_distances(self, positions: np.ndarray, query_words: np.ndarray) -> np.ndarray:
        """Hamming distances between the long codes at `positions` and one query code (as uint64 words)."""
        return np.bitwise_count(self.long_words_at(positions) ^ query_words).sum(axis=1, dtype=np.int64)

    def brute_force_ball(self, address: int, radius: int) -> np.ndarray:
        """Positions of every document within `radius`, by scanning all addresses (a reference path)."""
        distances = np.bitwise_count(self.addresses ^ np.uint64(address))
        return np.flatnonzero(distances <= radius)
