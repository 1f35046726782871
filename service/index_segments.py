"""The storage of the segmented index: flat external ids, the immutable base segment, the delta.

Nothing here holds one Python object per document. A collection's index is a *base segment*
(immutable, built in one pass when the collection is loaded or merged) and a *delta* (append-only,
the documents written since). Deletes and replacements do not touch either: they stamp the old
entry's `dead` slot with the version that removed it, so a reader of an older version still sees
it (see `service.index.BitIndex`).

Per document the base holds its address (uint32), SQL row id (int64), its rank in row-id order
(uint32), long code (uint64 words), death stamp (uint32) and the offset of its external id in one
UTF-8 buffer (int64): 44 bytes for a 128-bit code, plus the cell table (4 bytes per cell).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np

ALIVE = 0xFFFF_FFFF  # the death stamp of a live entry: no version reaches it
# Fibonacci hashing (Knuth): multiply by 2**64 / golden ratio, keep the top bits. Spreads the
# addresses of clustered codes, which share their bits, evenly over the cells.
HASH_MULTIPLIER = np.uint64(0x9E37_79B9_7F4A_7C15)
# A dense table (one cell per address) costs 4 bytes per cell: used when the collection fills it
# (at most DENSE_CELLS_PER_DOCUMENT cells per document) and never past 2**24 cells (64 MiB).
DENSE_MAX_BITS = 24
DENSE_MIN_CELLS = 1 << 16
DENSE_CELLS_PER_DOCUMENT = 16
MIN_HASHED_CELL_BITS = 10
# A cell's offset in the table has its top bit set once a document of the cell has died (its readers
# must then check death stamps), so offsets take 31 bits and a segment at most 2**31 - 1 documents.
DIRTY_CELL = np.uint32(0x8000_0000)
OFFSET_MASK = np.uint32(0x7FFF_FFFF)
ID_SEPARATOR = 0x1F  # ids never hold control characters (service.validation)
# Any str round-trips, lone surrogates included (a database would not have stored them, but the
# index does not depend on that).


@numba.njit(cache=True, nogil=True)
def _gather_bytes(
    data: np.ndarray, offsets: np.ndarray, positions: np.ndarray, separator: int
) -> tuple[np.ndarray, np.ndarray]:
    """The byte strings at `positions` back to back (each followed by `separator` when >= 0)."""
    sizes = np.empty(positions.shape[0] + 1, dtype=np.int64)
    sizes[0] = 0
    extra = 1 if separator >= 0 else 0
    for i in range(positions.shape[0]):
        p = positions[i]
        sizes[i + 1] = sizes[i] + offsets[p + 1] - offsets[p] + extra
    out = np.empty(sizes[-1], dtype=np.uint8)
    for i in range(positions.shape[0]):
        p = positions[i]
        start = sizes[i]
        length = offsets[p + 1] - offsets[p]
        out[start : start + length] = data[offsets[p] : offsets[p + 1]]
        if extra:
            out[start + length] = separator
    return out, sizes


@dataclass(frozen=True)
class IdStore:
    """External ids as UTF-8 in one flat buffer: id i is data[offsets[i]:offsets[i + 1]]."""

    data: np.ndarray  # (total bytes,) uint8
    offsets: np.ndarray  # (n + 1,) int64

    @classmethod
    def from_strings(cls, ids: Sequence[str]) -> IdStore:
        encoded = [external_id.encode(errors="surrogatepass") for external_id in ids]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(item) for item in encoded], out=offsets[1:])
        return cls(np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets)

    @classmethod
    def concat(cls, stores: Sequence[IdStore]) -> IdStore:
        shifts = np.cumsum([0] + [len(store.data) for store in stores[:-1]])
        offsets = [stores[0].offsets[:1]] + [
            store.offsets[1:] + shift for store, shift in zip(stores, shifts, strict=True)
        ]
        return cls(np.concatenate([store.data for store in stores]), np.concatenate(offsets))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def take(self, positions: np.ndarray) -> IdStore:
        """The ids at `positions`, as a new store."""
        data, offsets = _gather_bytes(self.data, self.offsets, np.asarray(positions, np.int64), -1)
        return IdStore(data, offsets)

    def strings(self, positions: np.ndarray) -> list[str]:
        """The ids at `positions` as str: one gather, one decode and one split for all of them."""
        positions = np.asarray(positions, np.int64)
        data, sizes = _gather_bytes(self.data, self.offsets, positions, ID_SEPARATOR)
        parts = data.tobytes().decode(errors="surrogatepass").split(chr(ID_SEPARATOR))
        if len(parts) == len(positions) + 1:
            return parts[:-1]
        # An id holding the separator was written around the API's checks: cut by offsets instead.
        raw = data.tobytes()
        return [
            raw[sizes[i] : sizes[i + 1] - 1].decode(errors="surrogatepass") for i in range(len(positions))
        ]


def hashed_cells(addresses: np.ndarray, shift: int) -> np.ndarray:
    """(n,) int64 cell of each address in a table of 2**(64 - shift) cells (Fibonacci hashing)."""
    with np.errstate(over="ignore"):
        return ((addresses.astype(np.uint64) * HASH_MULTIPLIER) >> np.uint64(shift)).astype(np.int64)


@numba.njit(cache=True, nogil=True)
def _counting_order(cells: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Positions that put `cells` in cell order, stable (`table` is the cells' exclusive prefix sum)."""
    cursor = table[:-1].astype(np.int64)
    order = np.empty(cells.shape[0], dtype=np.int64)
    for i in range(cells.shape[0]):
        cell = cells[i]
        order[cursor[cell]] = i
        cursor[cell] += 1
    return order


@numba.njit(cache=True, nogil=True)
def _find_rows(row_ids: np.ndarray, row_order: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Position of each wanted row id (-1 if absent): binary search through the row-id order."""
    found = np.full(wanted.shape[0], -1, dtype=np.int64)
    for i in range(wanted.shape[0]):
        low, high = 0, row_order.shape[0]
        while low < high:
            middle = (low + high) // 2
            if row_ids[row_order[middle]] < wanted[i]:
                low = middle + 1
            else:
                high = middle
        if low < row_order.shape[0] and row_ids[row_order[low]] == wanted[i]:
            found[i] = row_order[low]
    return found


def _cell_layout(address_bits: int, n: int) -> tuple[bool, int, int]:
    """(dense, cell bits, hash shift) for a segment of n documents."""
    cells = 1 << address_bits
    if address_bits <= DENSE_MAX_BITS and cells <= max(DENSE_MIN_CELLS, DENSE_CELLS_PER_DOCUMENT * n):
        return True, address_bits, 0
    cell_bits = max(MIN_HASHED_CELL_BITS, int(n - 1).bit_length())  # about one document per cell
    return False, cell_bits, 64 - cell_bits


@dataclass(frozen=True)
class Segment:
    """Immutable documents grouped by cell: cell c holds positions table[c] .. table[c + 1] - 1
    (offsets masked by OFFSET_MASK: the top bit flags cells holding a dead document).

    Dense: a cell per address, so a probe reads two offsets and every document in the run matches.
    Hashed (wide addresses, or small collections): about one document per cell, and a probe keeps
    the documents of its cell whose address is the probed one.
    """

    address_bits: int
    dense: bool
    shift: int  # hashed: cell = (address * HASH_MULTIPLIER mod 2**64) >> shift
    table: np.ndarray  # (cells + 1,) uint32
    addresses: np.ndarray  # (n,) uint32
    row_ids: np.ndarray  # (n,) int64 SQL row ids
    row_order: np.ndarray  # (n,) uint32: positions sorted by row id, to find a row in O(log n)
    long_words: np.ndarray  # (n, words) uint64
    ids: IdStore

    @classmethod
    def build(
        cls,
        address_bits: int,
        row_ids: np.ndarray,
        ids: IdStore,
        addresses: np.ndarray,
        long_words: np.ndarray,
    ) -> Segment:
        """Group unsorted parallel arrays by cell in O(n): a counting sort, then one gather each.

        Cheapest when the input comes in row-id order or close to it (a load or a merge gives it),
        as the row-id order is then a near-linear timsort.
        """
        n = len(row_ids)
        if n > OFFSET_MASK:
            raise ValueError(f"a segment holds at most {int(OFFSET_MASK)} documents, got {n}")
        addresses = np.asarray(addresses)
        if n and int(addresses.max()) >> address_bits:
            raise ValueError(f"an address does not fit in {address_bits} bits")
        dense, cell_bits, shift = _cell_layout(address_bits, n)
        cells = addresses.astype(np.int64) if dense else hashed_cells(addresses, shift)
        table = np.zeros((1 << cell_bits) + 1, dtype=np.uint32)
        np.cumsum(np.bincount(cells, minlength=1 << cell_bits), out=table[1:])
        order = _counting_order(cells, table)
        del cells
        # Rank in row-id order, through the inverse of `order` rather than a second sort.
        inverse = np.empty(n, dtype=np.uint32)
        inverse[order] = np.arange(n, dtype=np.uint32)
        row_order = inverse[np.argsort(row_ids, kind="stable")]
        del inverse
        return cls(
            address_bits=address_bits,
            dense=dense,
            shift=shift,
            table=table,
            addresses=np.ascontiguousarray(addresses[order], dtype=np.uint32),
            row_ids=np.ascontiguousarray(np.asarray(row_ids, np.int64)[order]),
            row_order=row_order,
            long_words=np.ascontiguousarray(long_words[order]),
            ids=ids.take(order),
        )

    @classmethod
    def empty(cls, address_bits: int, words: int) -> Segment:
        none = np.zeros(0, np.int64)
        return cls.build(address_bits, none, IdStore.from_strings([]), none, np.zeros((0, words), np.uint64))

    def __len__(self) -> int:
        return len(self.row_ids)

    def cells_of(self, positions: np.ndarray) -> np.ndarray:
        """(k,) int64 cell of the documents at `positions`."""
        addresses = self.addresses[positions]
        return addresses.astype(np.int64) if self.dense else hashed_cells(addresses, self.shift)

    def mark_dirty(self, positions: np.ndarray) -> None:
        """Flag the cells of dying documents, so lookups check their death stamps (see DIRTY_CELL).
        The one change a segment takes after it is built: a hint readers of any version may see."""
        self.table[self.cells_of(positions)] |= DIRTY_CELL

    def find_rows(self, row_ids: np.ndarray) -> np.ndarray:
        """(m,) int64 position of each row id, -1 where the segment does not hold it."""
        return _find_rows(self.row_ids, self.row_order, np.asarray(row_ids, np.int64))

    @property
    def nbytes(self) -> int:
        arrays = (self.table, self.addresses, self.row_ids, self.row_order, self.long_words)
        return sum(array.nbytes for array in arrays) + self.ids.data.nbytes + self.ids.offsets.nbytes


# The columns of a delta entry (one uint32 row each, read together by a probe).
ADDRESS, DEAD, NEXT = 0, 1, 2
NO_ENTRY = 0xFFFF_FFFF  # the end of a chain


@numba.njit(cache=True, nogil=True)
def _link(head: np.ndarray, entries: np.ndarray, start: int, stop: int, shift: int) -> None:
    """Push entries start..stop-1 onto the chains of their address's bucket (newest first)."""
    for entry in range(start, stop):
        bucket = (np.uint64(entries[entry, 0]) * HASH_MULTIPLIER) >> np.uint64(shift)
        entries[entry, 2] = head[bucket]
        head[bucket] = entry


@dataclass(frozen=True)
class DeltaView:
    """The delta as one version sees it: entries 0..count-1, reached through its own copy of the
    chain heads. Entries below `count` never change but for their death stamp, so a reader needs no
    lock however the writer appends (an empty `head` means an empty delta)."""

    head: np.ndarray  # (buckets,) uint32 newest entry of each bucket, NO_ENTRY for none
    shift: int  # bucket = (address * HASH_MULTIPLIER mod 2**64) >> shift
    entries: np.ndarray  # (capacity, 3) uint32: address, death stamp, next older entry of the bucket
    row_ids: np.ndarray  # (capacity,) int64
    long_words: np.ndarray  # (capacity, words) uint64
    ids: list[str]  # append-only: the first `count` belong to this view
    count: int

    @property
    def addresses(self) -> np.ndarray:
        return self.entries[:, ADDRESS]

    @property
    def dead(self) -> np.ndarray:
        return self.entries[:, DEAD]


class Delta:
    """Documents written since the base was built: append-only arrays, chained by address hash.

    Appending costs O(documents appended); the arrays double when full (re-chaining what they hold),
    and a view costs one copy of the chain heads (4 bytes per bucket, two buckets per entry).
    """

    def __init__(self, words: int, capacity: int = 1024) -> None:
        self.count = 0
        self.ids: list[str] = []
        self.entries = np.zeros((0, 3), np.uint32)
        self.row_ids = np.zeros(0, np.int64)
        self.long_words = np.zeros((0, words), np.uint64)
        self._allocate(capacity)

    def _allocate(self, capacity: int) -> None:
        """Fresh arrays of `capacity` holding the current entries, so views taken before keep theirs."""
        count = self.count
        entries = np.zeros((capacity, 3), np.uint32)
        entries[:, DEAD] = ALIVE
        entries[:count] = self.entries[:count]
        row_ids = np.zeros(capacity, np.int64)
        row_ids[:count] = self.row_ids[:count]
        long_words = np.zeros((capacity, self.long_words.shape[1]), np.uint64)
        long_words[:count] = self.long_words[:count]
        self.entries, self.row_ids, self.long_words = entries, row_ids, long_words
        buckets = 2 * capacity
        self.shift = 64 - (buckets.bit_length() - 1)
        self.head = np.full(buckets, NO_ENTRY, np.uint32)
        _link(self.head, self.entries, 0, count, self.shift)

    @property
    def capacity(self) -> int:
        return len(self.row_ids)

    @property
    def dead(self) -> np.ndarray:
        """(capacity,) uint32 death stamps, writable."""
        return self.entries[:, DEAD]

    def append(
        self, row_ids: np.ndarray, ids: list[str], addresses: np.ndarray, long_words: np.ndarray
    ) -> np.ndarray:
        """Add documents; returns their entry numbers."""
        start, stop = self.count, self.count + len(row_ids)
        if stop > self.capacity:
            self._allocate(1 << (stop - 1).bit_length())
        self.entries[start:stop, ADDRESS] = addresses
        self.row_ids[start:stop] = row_ids
        self.long_words[start:stop] = long_words
        self.ids.extend(ids)
        _link(self.head, self.entries, start, stop, self.shift)
        self.count = stop
        return np.arange(start, stop, dtype=np.int64)

    def view(self) -> DeltaView:
        head = self.head.copy() if self.count else np.zeros(0, np.uint32)
        return DeltaView(
            head=head,
            shift=self.shift,
            entries=self.entries,
            row_ids=self.row_ids,
            long_words=self.long_words,
            ids=self.ids,
            count=self.count,
        )
