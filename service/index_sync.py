"""Keeps one index per collection in step with the SQL table, whichever process wrote to it.

`IndexRegistry.sync()` reads every collection's `change_seq` (one small query) and, for each one that
moved, only the rows stamped with a newer sequence (upserts and tombstones; one more query), which its
`SegmentedIndex` and `LexicalIndex` take in O(rows changed). A collection is synced under its own
lock, so one busy or reloading collection holds up no other. Searches read the published
`CollectionIndex`, an immutable version swapped in by one reference assignment, so they never wait
for a write, a load or a merge.

A background thread calls `sync()` every `index_poll_seconds` (other processes' writes show up within
that) and purges old tombstones now and then. An API write hands what it committed to
`apply_written()`, so its client reads it at once: when the write's change sequence is the next one
the index expects, the rows go straight in without any SQL; otherwise (another process wrote in
between) one catch-up read takes them with the other process's. Another thread merges a collection's
delta into a new base when it has grown (`SegmentedIndex.merge`), without holding the collection's
lock but for the final replay of what changed meanwhile.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from service.db import Collection
from service.index import BitIndex
from service.index_load import load_segment, read_changes, release_free_memory
from service.index_writer import ChangeBatch, SegmentedIndex, occupancy_warning
from service.lexical import LexicalIndex
from service.lexical_sync import apply_lexical, load_lexical
from service.store import Written, purge_tombstones

logger = logging.getLogger(__name__)

_RELOAD_ATTEMPTS = 3
_COLLECTION_COLUMNS = (
    Collection.id,
    Collection.name,
    Collection.bundle_id,
    Collection.bundle_fingerprint,
    Collection.address_bits,
    Collection.long_bits,
    Collection.change_seq,
    Collection.tombstones_purged_seq,
)

# Built once, run through Core: this runs after every write.
_COLLECTION_BY_NAME = select(*(Collection.__table__.c[column.key] for column in _COLLECTION_COLUMNS)).where(
    Collection.__table__.c.name == bindparam("name")
)


@dataclass(frozen=True)
class CollectionIndex:
    """A collection's in-memory index as of `change_seq`, with what searching it needs to know."""

    id: int
    name: str
    bundle_id: str
    bundle_fingerprint: str
    address_bits: int
    long_bits: int
    change_seq: int
    index: BitIndex
    lexical: LexicalIndex | None = None  # full-vocabulary BM25 statistics (`service.lexical`)


@dataclass
class _Tracked:
    """One collection's writable indexes and the change sequence they are in step with (under `lock`)."""

    collection_id: int
    name: str
    lock: threading.Lock
    writer: SegmentedIndex | None = None
    lexical: LexicalIndex | None = None
    change_seq: int = 0
    merging: bool = False
    crowded_warned: bool = False

    def take(self, batch: ChangeBatch) -> None:
        """Apply a batch of changed rows to both indexes (under `lock`, once they are loaded)."""
        assert self.writer is not None and self.lexical is not None
        self.writer.apply(batch.changes)
        self.lexical = apply_lexical(self.lexical, batch)


class IndexRegistry:
    """The in-memory indexes of every collection, the poller that keeps them current and the merger."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._session_factory = session_factory
        self._published: dict[str, CollectionIndex] = {}  # replaced whole, never changed in place
        self._tracked: dict[int, _Tracked] = {}
        self._lock = threading.Lock()  # guards _tracked and the replacement of _published
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._merges: queue.SimpleQueue[int | None] | None = None
        self._failing: dict[int, str] = {}  # collection id -> the error its last sync failed with

    def get(self, name: str) -> CollectionIndex | None:
        """The current index of collection `name`, if it exists."""
        return self._published.get(name)

    def sizes(self) -> dict[str, int]:
        """Number of live documents in each collection's index."""
        return {name: len(entry.index) for name, entry in self._published.items()}

    def sync(self) -> None:
        """Bring every collection's index in step with the table. A database error stops the sync (the
        poller retries); any other failure of one collection (a row its index cannot hold, say) is
        logged and retried at the next sync, and holds up no other collection, new ones included."""
        session = self._session_factory()
        try:
            rows = session.execute(select(*_COLLECTION_COLUMNS)).all()
            for row in rows:
                try:
                    self._sync_one(session, row)
                except SQLAlchemyError:
                    raise
                except Exception as err:
                    self._report_failure(row, err)
                    # The failure may have left the connection mid-statement (a COPY): go on afresh.
                    session.close()
                    session = self._session_factory()
                else:
                    self._failing.pop(row.id, None)
        finally:
            session.close()
        self._forget_all_but({row.id for row in rows})
        self._failing = {key: value for key, value in self._failing.items() if key in self._tracked}

    def _report_failure(self, row: Any, err: Exception) -> None:
        """Log a collection's failed sync with its traceback once, not at every poll while it lasts."""
        message = f"{type(err).__name__}: {err}"
        if self._failing.get(row.id) != message:
            logger.error(
                "could not sync the index of collection %r; retrying at every sync", row.name, exc_info=err
            )
        self._failing[row.id] = message

    def sync_collection(self, name: str) -> None:
        """Bring one collection's index in step with the table (or drop it if the collection is gone)."""
        with self._session_factory() as session:
            row = session.connection().execute(_COLLECTION_BY_NAME, {"name": name}).first()
            if row is not None:
                self._sync_one(session, row)
        if row is None:
            with self._lock:
                self._published = {key: value for key, value in self._published.items() if key != name}
                self._tracked = {key: value for key, value in self._tracked.items() if value.name != name}

    def sync_after_write(self, name: str | None = None) -> None:
        """Catch up right after this process committed a write (to collection `name`, or to the list of
        collections), so its client reads it at once. The write is already committed, so a failure
        here must not fail the request: the poller retries."""
        try:
            if name is None:
                self.sync()
            else:
                self.sync_collection(name)
        except SQLAlchemyError:
            logger.warning("index sync after a write failed; the poller will retry", exc_info=True)

    def apply_written(self, written: Written) -> None:
        """Take a write this process has just committed, so its client reads it at once. O(rows
        written) and no SQL when the index is at the sequence just before the write's; else one
        catch-up read (another process's write came in between, or the collection is not loaded)."""
        tracked = self._tracked.get(written.collection_id)
        if tracked is not None:
            with tracked.lock:
                entry = self._published.get(tracked.name)
                if tracked.writer is not None and entry is not None and entry.id == written.collection_id:
                    if written.batch.newest_seq <= tracked.change_seq:
                        return  # a sync read it already
                    if written.batch.newest_seq == tracked.change_seq + 1:
                        tracked.take(written.batch)
                        tracked.change_seq = written.batch.newest_seq
                        self._publish(entry, tracked)
                        return
        self.sync_after_write(written.collection_name)

    def _track(self, row: Any) -> _Tracked:
        with self._lock:
            tracked = self._tracked.get(row.id)
            if tracked is None:
                tracked = _Tracked(row.id, row.name, threading.Lock())
                self._tracked = {**self._tracked, row.id: tracked}
            return tracked

    def _forget_all_but(self, collection_ids: set[int]) -> None:
        with self._lock:
            self._tracked = {key: value for key, value in self._tracked.items() if key in collection_ids}
            names = {tracked.name for tracked in self._tracked.values()}
            self._published = {key: value for key, value in self._published.items() if key in names}

    def _sync_one(self, session: Session, row: Any) -> None:
        tracked = self._track(row)
        with tracked.lock:
            caught_up = False
            if tracked.writer is not None and row.tombstones_purged_seq <= tracked.change_seq:
                if row.change_seq == tracked.change_seq:
                    return
                caught_up = self._catch_up(session, row, tracked)
            if not caught_up:
                # New to this process, or behind a purge of tombstones: some of its documents may have
                # been deleted without a trace left to read.
                self._load(session, row, tracked)
            self._publish(row, tracked)

    @staticmethod
    def _catch_up(session: Session, row: Any, tracked: _Tracked) -> bool:
        """Apply the rows changed after the tracked sequence; False (nothing applied) when a purge may
        have removed a tombstone that was not read (the watermark is read with the changes, in one
        snapshot, so a purge cannot commit unseen between the two)."""
        batch, watermark = read_changes(session, row.id, tracked.change_seq, row.long_bits)
        if watermark > tracked.change_seq:
            return False
        tracked.take(batch)
        # Writers to one collection commit in sequence order (see service.db), so every row up to the
        # newest one read was visible to that read.
        tracked.change_seq = max(batch.newest_seq, row.change_seq)
        return True

    def _load(self, session: Session, row: Any, tracked: _Tracked) -> None:
        for _ in range(_RELOAD_ATTEMPTS):
            # Every row committed up to row.change_seq is live in the loads or a tombstone they skip;
            # rows committed after it may be in them too, and taking them again is harmless. The
            # loaded indexes replace the tracked ones only once they have caught up.
            loaded = _Tracked(row.id, row.name, tracked.lock, change_seq=row.change_seq)
            loaded.writer = SegmentedIndex(
                load_segment(session, row.id, row.name, row.address_bits, row.long_bits)
            )
            loaded.lexical = load_lexical(session, row.id)
            if self._catch_up(session, row, loaded):
                tracked.writer, tracked.lexical, tracked.change_seq = (
                    loaded.writer,
                    loaded.lexical,
                    loaded.change_seq,
                )
                return
            row = session.execute(select(*_COLLECTION_COLUMNS).where(Collection.id == row.id)).one()
        raise RuntimeError(f"collection {row.name!r} kept being purged while it loaded")

    def _publish(self, row: Any, tracked: _Tracked) -> None:
        """Publish the tracked indexes (under `tracked.lock`) with what `row` (a collection row, or the
        entry published before) says of the collection; schedule a merge when the delta has grown."""
        writer = tracked.writer
        assert writer is not None
        warning = occupancy_warning(row.name, len(writer.snapshot), row.address_bits)
        if warning is not None and not tracked.crowded_warned:
            logger.warning("%s", warning)
        tracked.crowded_warned = warning is not None
        entry = CollectionIndex(
            id=row.id,
            name=row.name,
            bundle_id=row.bundle_id,
            bundle_fingerprint=row.bundle_fingerprint,
            address_bits=row.address_bits,
            long_bits=row.long_bits,
            change_seq=tracked.change_seq,
            index=writer.snapshot,
            lexical=tracked.lexical,
        )
        with self._lock:
            if self._tracked.get(row.id) is tracked:  # not deleted meanwhile
                self._published = {**self._published, row.name: entry}
        if writer.needs_merge():
            self._schedule_merge(tracked)

    def _schedule_merge(self, tracked: _Tracked) -> None:
        if self._merges is not None and not tracked.merging:
            tracked.merging = True
            self._merges.put(tracked.collection_id)

    def merge(self, collection_id: int) -> None:
        """Fold a collection's delta and dead documents into a new base. The O(n) build runs on a
        published version without any lock; only the replay of what changed meanwhile holds the
        collection's lock (O(changes), plus a scan of the death stamps)."""
        tracked = self._tracked.get(collection_id)
        if tracked is None or tracked.writer is None:
            return
        writer = tracked.writer
        since = writer.snapshot
        started = time.monotonic()
        base = SegmentedIndex.merge(since)
        with tracked.lock:
            if tracked.writer is writer:  # else it was reloaded meanwhile: drop this merge
                tracked.writer = writer.rebased(base, since)
                entry = self._published.get(tracked.name)
                if entry is not None:
                    fresh = replace(entry, index=tracked.writer.snapshot)
                    with self._lock:
                        if self._tracked.get(collection_id) is tracked:
                            self._published = {**self._published, tracked.name: fresh}
            tracked.merging = False
        del base, since, writer
        release_free_memory()
        logger.info(
            "merged the index of collection %r: %d documents in %.2f s",
            tracked.name,
            len(tracked.writer.snapshot) if tracked.writer else 0,
            time.monotonic() - started,
        )

    def purge_tombstones(self, retention_seconds: float) -> int:
        """Delete tombstones older than `retention_seconds` (every index has long seen them)."""
        older_than = datetime.now(UTC) - timedelta(seconds=retention_seconds)
        with self._session_factory() as session:
            purged = purge_tombstones(session, older_than)
            session.commit()
        if purged:
            logger.info("purged %d tombstones older than %.0f s", purged, retention_seconds)
        return purged

    def start_polling(self, interval_seconds: float, tombstone_retention_seconds: float) -> None:
        """Sync in a background thread every `interval_seconds` until `stop_polling()`, purge tombstones
        older than `tombstone_retention_seconds` every quarter of that period, and merge in another."""
        self._stop.clear()
        self._merges = queue.SimpleQueue()
        self._threads = [
            threading.Thread(
                target=self._poll,
                args=(interval_seconds, tombstone_retention_seconds),
                name="semhash-index-sync",
                daemon=True,
            ),
            threading.Thread(target=self._merge_loop, name="semhash-index-merge", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop_polling(self) -> None:
        """Stop the background threads and wait for them."""
        self._stop.set()
        if self._merges is not None:
            self._merges.put(None)
        for thread in self._threads:
            thread.join()
        self._threads = []
        self._merges = None

    def _poll(self, interval_seconds: float, tombstone_retention_seconds: float) -> None:
        next_purge = time.monotonic()
        while not self._stop.wait(interval_seconds):
            try:
                self.sync()
                if time.monotonic() >= next_purge:
                    self.purge_tombstones(tombstone_retention_seconds)
                    next_purge = time.monotonic() + tombstone_retention_seconds / 4
            except SQLAlchemyError:
                # A database outage must not kill the poller: keep serving the last index and retry.
                logger.warning("index sync failed; retrying in %.1f s", interval_seconds, exc_info=True)
            except Exception:
                # Nor anything else: a dead poller would never see another process's change again.
                logger.exception("index sync failed; retrying in %.1f s", interval_seconds)

    def _merge_loop(self) -> None:
        merges = self._merges
        assert merges is not None
        while (collection_id := merges.get()) is not None:
            try:
                self.merge(collection_id)
            except Exception:  # a failed merge leaves the current index serving; the next write retries
                logger.exception("merging the index of collection %d failed", collection_id)
                tracked = self._tracked.get(collection_id)
                if tracked is not None:
                    tracked.merging = False
