"""`SegmentedIndex`: the writable index of one collection, publishing an immutable `BitIndex` per change.

A change costs what it changes: each changed row's current entry gets a death stamp (found through
a dict for the delta and a binary search of the base's row-id order), each live row is appended to
the delta, and the new version is published as a `BitIndex` (one copy of the delta's chain heads).
When the delta or the dead part of the base grows past a share of the base, `merge` builds a new base
from a published version without any lock (searches and writes go on), and `rebased` replays on it,
from memory, whatever changed after that version.

One writer at a time: the caller holds a lock around `apply` and `rebased` (`service.index_sync`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from service.index import BitIndex
from service.index_segments import ADDRESS, ALIVE, Delta, IdStore, Segment

# Merge when the delta holds more than this share of the base (or MIN_MERGE_ENTRIES), or when this
# share of the base is dead: lookups then probe a small delta, and merges cost O(n) rarely enough.
DELTA_SHARE = 1 / 64
DEAD_SHARE = 1 / 8
MIN_MERGE_ENTRIES = 16_384
# A collection's address width is fixed when it is created (its bundle's); past this many documents
# per address on average it has outgrown it (README, "Choosing address_bits").
CROWDED_DOCUMENTS_PER_ADDRESS = 16


def occupancy_warning(name: str, documents: int, address_bits: int) -> str | None:
    """A warning when a collection holds far more documents than its addresses (None if it does not)."""
    addresses = 1 << address_bits
    if documents <= CROWDED_DOCUMENTS_PER_ADDRESS * addresses:
        return None
    return (
        f"collection {name!r} holds {documents} documents in {addresses} addresses "
        f"({documents / addresses:.0f} per address): it has outgrown its {address_bits}-bit addresses, so "
        f"every radius returns about that many times more candidates; a bundle with about "
        f'{max(1, documents - 1).bit_length()} address bits fits it (README, "Choosing address_bits")'
    )


@dataclass(frozen=True)
class Changes:
    """Rows changed since the index's version, as read from SQL: live rows and tombstones."""

    row_ids: np.ndarray  # (m,) int64 SQL row ids, each at most once
    deleted: np.ndarray  # (m,) bool: a tombstone (the document is gone)
    external_ids: list[str]  # (m,)
    addresses: np.ndarray  # (m,) uint64
    long_words: np.ndarray  # (m, words) uint64

    def __len__(self) -> int:
        return len(self.row_ids)

    @classmethod
    def deletes(cls, row_ids: np.ndarray, words: int) -> Changes:
        count = len(row_ids)
        return cls(
            np.asarray(row_ids, np.int64),
            np.ones(count, bool),
            [""] * count,
            np.zeros(count, np.uint64),
            np.zeros((count, words), np.uint64),
        )

    @classmethod
    def concat(cls, first: Changes, second: Changes) -> Changes:
        """Both, `second` winning where both hold a row."""
        keep = ~np.isin(first.row_ids, second.row_ids)
        return cls(
            np.concatenate([first.row_ids[keep], second.row_ids]),
            np.concatenate([first.deleted[keep], second.deleted]),
            [first.external_ids[i] for i in np.flatnonzero(keep)] + second.external_ids,
            np.concatenate([first.addresses[keep], second.addresses]),
            np.concatenate([first.long_words[keep], second.long_words]),
        )


@dataclass(frozen=True)
class ChangeBatch:
    """Rows changed by one or more committed writes of a collection, for both in-memory indexes: read
    back from SQL by a poll, or taken straight from the write by the process that made it."""

    changes: Changes  # for the bit index
    texts: list[str]  # (m,) each row's text ("" for a tombstone), for the lexical index
    newest_seq: int  # the highest change sequence among the rows

    def __len__(self) -> int:
        return len(self.changes)


@numba.njit(cache=True, nogil=True)
def _stamped_between(dead: np.ndarray, count: int, after: int, before: int) -> np.ndarray:
    """Entries below `count` whose death stamp is in (after, before]: removed by those versions."""
    hits = np.empty(count, dtype=np.int64)
    found = 0
    for entry in range(count):
        if after < dead[entry] <= before:
            hits[found] = entry
            found += 1
    return hits[:found].copy()


class SegmentedIndex:
    """One collection's writable index (see the module docstring); `snapshot` is what searches read."""

    def __init__(self, base: Segment) -> None:
        self.base = base
        self._base_dead = np.full(len(base), ALIVE, np.uint32)
        self._dead_in_base = 0
        self._delta = Delta(base.long_words.shape[1])
        self._delta_entries: dict[int, int] = {}  # row id -> its live delta entry
        self._version = 0
        self._live = len(base)
        self.snapshot = BitIndex(base, self._base_dead, self._delta.view(), 0, self._live)

    @property
    def delta_size(self) -> int:
        """Entries in the delta, live or not."""
        return self._delta.count

    @property
    def dead_in_base(self) -> int:
        return self._dead_in_base

    def apply(self, changes: Changes) -> BitIndex:
        """Take the changed rows (remove each one's current entry, append the live ones) and publish
        the new version, which is returned. O(rows changed), plus one copy of the delta's chain heads."""
        if not len(changes):
            return self.snapshot
        if self._version + 1 >= ALIVE:
            raise OverflowError("the index took 2**32 versions without a merge; merge it")
        version = self._version + 1
        in_base = []
        delta_dead = self._delta.dead
        for row_id in changes.row_ids.tolist():
            entry = self._delta_entries.pop(row_id, -1)
            if entry >= 0:
                delta_dead[entry] = version
                self._live -= 1
            else:
                in_base.append(row_id)
        if in_base:
            positions = self.base.find_rows(np.array(in_base, np.int64))
            positions = positions[positions >= 0]
            positions = positions[self._base_dead[positions] == ALIVE]
            self._base_dead[positions] = version
            self.base.mark_dirty(positions)
            self._dead_in_base += len(positions)
            self._live -= len(positions)
        live = np.flatnonzero(~changes.deleted)
        if len(live):
            entries = self._delta.append(
                changes.row_ids[live],
                [changes.external_ids[i] for i in live.tolist()],
                changes.addresses[live],
                changes.long_words[live],
            )
            self._delta_entries.update(zip(changes.row_ids[live].tolist(), entries.tolist(), strict=True))
            self._live += len(live)
        self._version = version
        self.snapshot = BitIndex(self.base, self._base_dead, self._delta.view(), version, self._live)
        return self.snapshot

    def needs_merge(self) -> bool:
        """Whether the delta or the dead part of the base has grown enough to fold into a new base."""
        n = len(self.base)
        return (
            self._delta.count >= max(MIN_MERGE_ENTRIES, int(n * DELTA_SHARE))
            or self._dead_in_base >= max(MIN_MERGE_ENTRIES, int(n * DEAD_SHARE))
            or self._version >= ALIVE // 2
        )

    @staticmethod
    def merge(snapshot: BitIndex) -> Segment:
        """A new base segment holding exactly the live documents of `snapshot`: O(n), no lock needed
        (it reads one published version, which nothing changes). Feed it to `rebased`."""
        base, delta, version = snapshot.base, snapshot.delta, snapshot.version
        # Base documents in row-id order, then the delta's: two sorted runs, which Segment.build's
        # stable sort by row id merges in linear time.
        in_row_order = base.row_order[snapshot.base_dead[base.row_order] > version].astype(np.int64)
        entries = np.flatnonzero(delta.dead[: delta.count] > version)
        entries = entries[np.argsort(delta.row_ids[entries], kind="stable")]
        ids = IdStore.concat(
            [base.ids.take(in_row_order), IdStore.from_strings([delta.ids[e] for e in entries.tolist()])]
        )
        return Segment.build(
            base.address_bits,
            np.concatenate([base.row_ids[in_row_order], delta.row_ids[entries]]),
            ids,
            np.concatenate([base.addresses[in_row_order], delta.addresses[entries]]),
            np.concatenate([base.long_words[in_row_order], delta.long_words[entries]]),
        )

    def rebased(self, base: Segment, since: BitIndex) -> SegmentedIndex:
        """A new index on `base` (= `merge(since)`) with every change this one took after `since`.

        O(n) over the death stamps (a few ms for 10M documents) plus O(changes since); the caller
        holds the writer lock, so nothing changes meanwhile.
        """
        delta = self._delta
        # Rows `since` held that a later version removed (deleted, or replaced by a newer entry).
        removed_base = _stamped_between(self._base_dead, len(self._base_dead), since.version, self._version)
        removed_delta = _stamped_between(delta.dead, since.delta.count, since.version, self._version)
        removed = np.concatenate([self.base.row_ids[removed_base], delta.row_ids[removed_delta]])
        # Entries appended after `since` that are still live.
        added = np.arange(since.delta.count, delta.count)
        added = added[delta.dead[added] == ALIVE]
        changes = Changes.concat(
            Changes.deletes(removed, base.long_words.shape[1]),
            Changes(
                delta.row_ids[added],
                np.zeros(len(added), bool),
                [delta.ids[e] for e in added.tolist()],
                delta.entries[added, ADDRESS].astype(np.uint64),
                delta.long_words[added],
            ),
        )
        rebased = SegmentedIndex(base)
        rebased.apply(changes)
        return rebased
