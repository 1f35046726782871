"""`BitIndex`: the in-memory Hamming-ball index over one collection's addresses.

Documents are kept sorted by address. For address spaces up to 2**24 cells a dense table of a start
and a count per address maps every address to its run of documents, so probing one address is two
array reads; above that the sorted addresses are binary-searched. The XOR masks of every radius
are precomputed in order of popcount, so the shortlist comes out ordered by address distance and the
lookup stops as soon as `limit` documents are found. Everything is vectorised numpy: one lookup is a
handful of array operations, whatever the radius.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

MAX_ADDRESS_BITS = 32
# The dense table costs 16 bytes per cell (a start and a count, int64 so probing needs no casts):
# always worth it up to 2**20 cells (16 MiB); above that only when the collection is big enough to
# fill it reasonably, and never past 2**24 cells (256 MiB).
_DENSE_ALWAYS_BITS = 20
_DENSE_MAX_BITS = 24
_DENSE_CELLS_PER_DOCUMENT = 16
# Radii up to this are probed in one vectorised step: their balls are small, so splitting them would
# cost more in per-call overhead than it saves; larger radii are probed one shell at a time.
_FIRST_STEP_RADIUS = 2


@dataclass(frozen=True)
class XorMasks:
    """Every mask of popcount <= radius over `address_bits` bits, sorted by popcount."""

    masks: np.ndarray  # (m,) uint64
    popcounts: np.ndarray  # (m,) uint8
    shell_ends: tuple[int, ...]  # masks[:shell_ends[r]] are those of popcount <= r


@lru_cache(maxsize=64)
def xor_masks(address_bits: int, radius: int) -> XorMasks:
    """The precomputed masks for one (address_bits, radius); cached, as every query reuses them."""
    if not 1 <= address_bits <= MAX_ADDRESS_BITS:
        raise ValueError(f"address_bits must be in 1..{MAX_ADDRESS_BITS}, got {address_bits}")
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    masks: list[int] = []
    popcounts: list[int] = []
    shell_ends: list[int] = []
    for distance in range(radius + 1):
        for bits in itertools.combinations(range(address_bits), distance):
            masks.append(sum(1 << bit for bit in bits))
            popcounts.append(distance)
        shell_ends.append(len(masks))
    return XorMasks(
        masks=np.array(masks, dtype=np.uint64),
        popcounts=np.array(popcounts, dtype=np.uint8),
        shell_ends=tuple(shell_ends),
    )


def long_codes_to_words(long_codes: np.ndarray) -> np.ndarray:
    """(n, bytes) uint8 packed codes -> (n, ceil(bytes / 8)) uint64 words for popcount distances."""
    codes = np.ascontiguousarray(long_codes, dtype=np.uint8)
    if codes.ndim != 2:
        raise ValueError(f"long codes must be a 2-D (n, bytes) array, got shape {codes.shape}")
    padding = (-codes.shape[1]) % 8
    if padding:
        codes = np.concatenate([codes, np.zeros((codes.shape[0], padding), dtype=np.uint8)], axis=1)
    return codes.view(np.uint64)


@dataclass(slots=True)  # not frozen: built once per query, and a frozen __init__ is slower
class Shortlist:
    """The result of one Hamming-ball lookup."""

    positions: np.ndarray  # (k,) int64 positions into the index, ordered by address distance
    distances: np.ndarray  # (k,) uint8 Hamming distance of each document's address to the query
    probed: int  # how many addresses were looked up


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
        # Dense table: the documents at address a are positions starts[a] .. starts[a] + counts[a] - 1.
        self.starts: np.ndarray | None = None
        self.counts: np.ndarray | None = None
        if self._use_dense_table():
            self.counts = np.bincount(self.addresses.astype(np.int64), minlength=1 << address_bits)
            self.starts = np.cumsum(self.counts) - self.counts

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

    def _runs(self, probes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Start position and number of the documents stored at each probed address."""
        if self.starts is not None and self.counts is not None:
            return self.starts.take(probes), self.counts.take(probes)
        starts = np.searchsorted(self.addresses, probes, side="left")
        return starts, np.searchsorted(self.addresses, probes, side="right") - starts

    def lookup(self, address: int, radius: int, limit: int) -> Shortlist:
        """Documents whose address is within `radius` of `address`, nearest first, at most `limit`."""
        if not 0 <= address < (1 << self.address_bits):
            raise ValueError(f"address must be in 0..2**{self.address_bits}-1, got {address}")
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        table = xor_masks(self.address_bits, radius)
        query = np.uint64(address)
        # Probe the small shells in one step, then one shell at a time until the shortlist is full.
        shell_end = table.shell_ends[min(radius, _FIRST_STEP_RADIUS)]
        starts, sizes = self._runs(table.masks[:shell_end] ^ query)
        ends = sizes.cumsum()
        for shell in range(_FIRST_STEP_RADIUS + 1, radius + 1):
            if ends[-1] >= limit:
                break
            shell_start, shell_end = shell_end, table.shell_ends[shell]
            more_starts, more_sizes = self._runs(table.masks[shell_start:shell_end] ^ query)
            starts = np.concatenate([starts, more_starts])
            sizes = np.concatenate([sizes, more_sizes])
            ends = np.concatenate([ends, ends[-1] + more_sizes.cumsum()])
        # Document i of a run sits at shift + i, where i counts across all runs: no Python loop needed.
        shift = starts - ends + sizes
        probed = len(starts)
        if ends[-1] > limit:
            # Keep only the probes needed to fill the shortlist, and only part of the last run.
            probed = int(np.searchsorted(ends, limit, side="left")) + 1
            shift, sizes = shift[:probed], sizes[:probed].copy()
            sizes[-1] -= int(ends[probed - 1]) - limit
        positions = np.repeat(shift, sizes)
        positions += np.arange(len(positions))
        distances = table.popcounts[:probed].repeat(sizes)
        return Shortlist(positions=positions, distances=distances, probed=probed)

    def long_code_distances(self, positions: np.ndarray, query_words: np.ndarray) -> np.ndarray:
        """Hamming distances between the long codes at `positions` and one query code (as uint64 words)."""
        return np.bitwise_count(self.long_words[positions] ^ query_words).sum(axis=1, dtype=np.int64)

    def brute_force_ball(self, address: int, radius: int) -> np.ndarray:
        """Positions of every document within `radius`, by scanning all addresses (a reference path)."""
        distances = np.bitwise_count(self.addresses ^ np.uint64(address))
        return np.flatnonzero(distances <= radius)
