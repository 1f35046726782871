"""Keeps one `BitIndex` per collection in step with the SQL table, whichever process wrote to it.

`IndexRegistry.sync()` reads every collection's `change_seq` and, for those that moved, the rows
stamped with a newer sequence (upserts and tombstones), then swaps in an updated index. The swap is a
single reference assignment, so searches never see a half-built index and need no lock. A background
thread calls `sync()` every `index_poll_seconds`; API writes call it right after their commit so a
client reads its own writes at once. The same thread purges old tombstones now and then.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from service.db import Collection, Document
from service.index import BitIndex, long_codes_to_words
from service.store import purge_tombstones

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CollectionIndex:
    """A collection's in-memory index as of `change_seq`, with what searching it needs to know."""

    collection_id: int
    name: str
    bundle_id: str
    bundle_fingerprint: str
    address_bits: int
    long_bits: int
    change_seq: int
    index: BitIndex


def _long_words(codes: list[bytes], long_bits: int) -> np.ndarray:
    width = (long_bits + 7) // 8
    packed = np.frombuffer(b"".join(codes), dtype=np.uint8).reshape(len(codes), width)
    return long_codes_to_words(packed)


class IndexRegistry:
    """The in-memory indexes of every collection, and the poller that keeps them current."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._session_factory = session_factory
        self._indexes: dict[str, CollectionIndex] = {}
        self._sync_lock = threading.Lock()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    def get(self, name: str) -> CollectionIndex | None:
        """The current index of collection `name`, if it exists."""
        return self._indexes.get(name)

    def sizes(self) -> dict[str, int]:
        """Number of documents in each collection's index."""
        return {name: len(entry.index) for name, entry in self._indexes.items()}

    def sync(self) -> None:
        """Bring every collection's index in step with the table."""
        with self._sync_lock, self._session_factory() as session:
            collections = session.scalars(select(Collection)).all()
            updated: dict[str, CollectionIndex] = {}
            for collection in collections:
                current = self._indexes.get(collection.name)
                if current is not None and current.collection_id == collection.id:
                    if current.change_seq == collection.change_seq:
                        updated[collection.name] = current
                        continue
                    index = self._changed_index(session, current, collection.tombstones_purged_seq)
                else:
                    index = None
                if index is None:
                    index = self._load(session, collection.id, collection.address_bits, collection.long_bits)
                updated[collection.name] = CollectionIndex(
                    collection_id=collection.id,
                    name=collection.name,
                    bundle_id=collection.bundle_id,
                    bundle_fingerprint=collection.bundle_fingerprint,
                    address_bits=collection.address_bits,
                    long_bits=collection.long_bits,
                    change_seq=collection.change_seq,
                    index=index,
                )
            self._indexes = updated

    @staticmethod
    def _load(session: Session, collection_id: int, address_bits: int, long_bits: int) -> BitIndex:
        rows = session.execute(
            select(Document.id, Document.external_id, Document.address, Document.long_code).where(
                Document.collection_id == collection_id, Document.deleted.is_(False)
            )
        ).all()
        if not rows:
            return BitIndex.empty(address_bits, long_bits)
        row_ids, external_ids, addresses, codes = zip(*rows, strict=True)
        return BitIndex(address_bits, row_ids, external_ids, addresses, _long_words(codes, long_bits))

    @classmethod
    def _changed_index(cls, session: Session, current: CollectionIndex, purged_seq: int) -> BitIndex | None:
        """`current` with the rows changed since it was built, or None when it must be reloaded.

        Reload when tombstones newer than `current` were purged (see `purge_tombstones`): some of its
        documents may have been deleted without a trace left to read. The watermark is read again
        after the changes, as a purge may have committed between the two reads.
        """
        if purged_seq > current.change_seq:
            return None
        index = cls._apply_changes(session, current)
        watermark = select(Collection.tombstones_purged_seq).where(Collection.id == current.collection_id)
        if (session.scalar(watermark) or 0) > current.change_seq:
            return None
        return index

    @staticmethod
    def _apply_changes(session: Session, current: CollectionIndex) -> BitIndex:
        # Rows newer than the change_seq read above may show up too; applying them twice is harmless.
        rows = session.execute(
            select(
                Document.id, Document.external_id, Document.address, Document.long_code, Document.deleted
            ).where(Document.collection_id == current.collection_id, Document.change_seq > current.change_seq)
        ).all()
        live = [row for row in rows if not row.deleted]
        return current.index.with_changes(
            [row.id for row in rows if row.deleted],
            [row.id for row in live],
            [row.external_id for row in live],
            [row.address for row in live],
            _long_words([row.long_code for row in live], current.long_bits),
        )

    def sync_after_write(self) -> None:
        """Catch up right after this process committed a write, so its client reads it at once.

        The write is already committed, so a failure here must not fail the request: the poller retries.
        """
        try:
            self.sync()
        except SQLAlchemyError:
            logger.warning("index sync after a write failed; the poller will retry", exc_info=True)

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
        """Sync in a background thread every `interval_seconds` until `stop_polling()`, and purge
        tombstones older than `tombstone_retention_seconds` every quarter of that period."""
        self._stop.clear()
        self._poller = threading.Thread(
            target=self._poll,
            args=(interval_seconds, tombstone_retention_seconds),
            name="semhash-index-sync",
            daemon=True,
        )
        self._poller.start()

    def stop_polling(self) -> None:
        """Stop the background thread and wait for it."""
        self._stop.set()
        if self._poller is not None:
            self._poller.join()
            self._poller = None

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
