"""Collections and documents in SQL: create, read, delete, and the Hamming-ball lookup by `address IN`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import numpy as np
from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.codes import xor_masks
from service.db import Collection, Document
from service.errors import ConflictError, NotFoundError
from service.index_writer import ChangeBatch, Changes


class CodingBundle(Protocol):
    """What a collection records of the model that codes its documents (a text or sparse bundle)."""

    @property
    def bundle_id(self) -> str: ...
    @property
    def fingerprint(self) -> str: ...
    @property
    def address_bits(self) -> int: ...
    @property
    def long_bits(self) -> int: ...


class HashedCollection(Protocol):
    """What identifies the model a collection was hashed with (a `Collection` row or its index)."""

    @property
    def name(self) -> str: ...
    @property
    def bundle_id(self) -> str: ...
    @property
    def bundle_fingerprint(self) -> str: ...


class CollectionRef(HashedCollection, Protocol):
    """What a write needs to know of its collection: a `Collection` row, or the in-memory index's
    description of it (`service.index_sync.CollectionIndex`), which spares a read per request."""

    @property
    def id(self) -> int: ...
    @property
    def long_bits(self) -> int: ...


@dataclass(frozen=True)
class Written:
    """What one write transaction changed, for the writing process's own indexes once it has committed
    (`IndexRegistry.apply_written`): they take it without reading it back."""

    collection_id: int
    collection_name: str
    batch: ChangeBatch  # every row the transaction stamped, all with `batch.newest_seq`

    def __len__(self) -> int:
        return len(self.batch)


# Keep each IN list well under SQLite's limit on bound parameters (32766).
_IN_CHUNK = 10_000


@dataclass(frozen=True)
class BallMatch:
    """A document found by the SQL lookup."""

    external_id: str
    address: int
    distance: int


_COLLECTIONS = Collection.__table__.c
_DOCUMENTS = Document.__table__.c
# Core statements with bound parameters, built once: every API write runs them.
_NEXT_CHANGE_SEQ = (
    update(Collection.__table__)
    .where(_COLLECTIONS.id == bindparam("collection"))
    .values(change_seq=_COLLECTIONS.change_seq + 1)
    .returning(_COLLECTIONS.change_seq)
)
_TOMBSTONE = (
    update(Document.__table__)
    .where(
        _DOCUMENTS.collection_id == bindparam("collection"),
        _DOCUMENTS.external_id == bindparam("external"),
        _DOCUMENTS.deleted.is_(False),
    )
    .values(deleted=True, text="", metadata=None, change_seq=bindparam("seq"), updated_at=func.now())
    .returning(_DOCUMENTS.id)
)


def _counted_tombstone_postgres() -> Any:
    """One PostgreSQL statement for a delete: a CTE bumps the collection's counter (locking its row
    until commit, as `next_change_seq` does) when the document is live, and the row becomes a
    tombstone stamped with it; returns the row id, no row when there is no such live document. One
    round trip where the two statements and the commit took three."""
    live = select(_DOCUMENTS.id).where(
        _DOCUMENTS.collection_id == bindparam("collection"),
        _DOCUMENTS.external_id == bindparam("external"),
        _DOCUMENTS.deleted.is_(False),
    )
    seq = (
        update(Collection.__table__)
        .where(_COLLECTIONS.id == bindparam("collection"), live.exists())
        .values(change_seq=_COLLECTIONS.change_seq + 1)
        .returning(_COLLECTIONS.change_seq)
        .cte("seq")
    )
    bumped = select(seq.c.change_seq)
    return (
        update(Document.__table__)
        .where(
            _DOCUMENTS.collection_id == bindparam("collection"),
            _DOCUMENTS.external_id == bindparam("external"),
            _DOCUMENTS.deleted.is_(False),
            bumped.exists(),
        )
        .values(
            deleted=True, text="", metadata=None, change_seq=bumped.scalar_subquery(), updated_at=func.now()
        )
        .returning(_DOCUMENTS.id, _DOCUMENTS.change_seq)
    )


_COUNTED_TOMBSTONE_POSTGRES = _counted_tombstone_postgres()


def autocommit_if_not_begun(session: Session) -> None:
    """Run the session's statements in autocommit mode if it has not begun a transaction (the API's
    single-document writes). A write that is one statement is then the whole transaction, atomic and
    durable as one with BEGIN and COMMIT around it (its commit still waits for the WAL flush), without
    their two round trips; the caller's commit is a no-op."""
    if not session.in_transaction():
        session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})


def collection_deleted_meanwhile(collection_id: int) -> NotFoundError:
    """The 404 of a write whose collection another process deleted since this one looked it up."""
    return NotFoundError(f"collection {collection_id} was deleted meanwhile")


def next_change_seq(session: Session, collection_id: int) -> int:
    """Bump the collection's change counter in this transaction (locking its row until commit)."""
    change_seq = session.connection().execute(_NEXT_CHANGE_SEQ, {"collection": collection_id}).scalar()
    if change_seq is None:
        raise collection_deleted_meanwhile(collection_id)
    return int(change_seq)


def create_collection(session: Session, name: str, bundle: CodingBundle) -> Collection:
    """Add a collection hashed by `bundle`; 409 if the name is taken."""
    collection = Collection(
        name=name,
        bundle_id=bundle.bundle_id,
        bundle_fingerprint=bundle.fingerprint,
        address_bits=bundle.address_bits,
        long_bits=bundle.long_bits,
        change_seq=0,
    )
    session.add(collection)
    try:
        session.flush()
    except IntegrityError as err:
        raise ConflictError(f"collection {name!r} already exists") from err
    return collection


def find_collection(session: Session, name: str) -> Collection:
    """The collection called `name`; 404 if there is none."""
    collection = session.scalar(select(Collection).where(Collection.name == name))
    if collection is None:
        raise NotFoundError(f"collection {name!r} not found")
    return collection


def list_collections(session: Session) -> list[Collection]:
    """All collections, by name."""
    return list(session.scalars(select(Collection).order_by(Collection.name)))


def document_counts(session: Session) -> dict[int, int]:
    """Live document count per collection id."""
    rows = session.execute(
        select(Document.collection_id, func.count())
        .where(Document.deleted.is_(False))
        .group_by(Document.collection_id)
    )
    return dict(rows.all())


def delete_collection(session: Session, collection: Collection) -> None:
    """Remove a collection and its documents."""
    session.delete(collection)


def find_document(session: Session, collection: Collection, external_id: str) -> Document:
    """A live document by external id; 404 if absent or deleted."""
    document = session.scalar(
        select(Document).where(
            Document.collection_id == collection.id,
            Document.external_id == external_id,
            Document.deleted.is_(False),
        )
    )
    if document is None:
        raise NotFoundError(f"document {external_id!r} not found in collection {collection.name!r}")
    return document


def delete_document(session: Session, collection: CollectionRef, external_id: str) -> Written:
    """Turn a document into a tombstone (text and metadata dropped) so every index sees it go.

    On PostgreSQL one statement (`_counted_tombstone_postgres`), autocommitted when the session has not
    begun a transaction; elsewhere the counter is bumped, then the row changed."""
    parameters = {"collection": collection.id, "external": external_id}
    if session.get_bind().dialect.name == "postgresql":
        autocommit_if_not_begun(session)
        row = session.connection().execute(_COUNTED_TOMBSTONE_POSTGRES, parameters).first()
        row_id, change_seq = (None, 0) if row is None else row
    else:
        change_seq = next_change_seq(session, collection.id)
        row_id = session.connection().execute(_TOMBSTONE, {**parameters, "seq": change_seq}).scalar()
    if row_id is None:
        raise NotFoundError(f"document {external_id!r} not found in collection {collection.name!r}")
    tombstone = Changes.deletes(np.array([row_id], np.int64), (collection.long_bits + 63) // 64)
    return Written(collection.id, collection.name, ChangeBatch(tombstone, [""], change_seq))


def purge_tombstones(session: Session, older_than: datetime) -> int:
    """Delete the tombstones last changed before `older_than`; returns how many.

    Each collection's `tombstones_purged_seq` is raised to the newest purged sequence in the same
    transaction, so an index that had not yet seen those deletes reloads instead of missing them.
    """
    purged = session.execute(
        delete(Document)
        .where(Document.deleted.is_(True), Document.updated_at < older_than)
        .returning(Document.collection_id, Document.change_seq)
        .execution_options(synchronize_session=False)
    ).all()
    newest: dict[int, int] = {}
    for collection_id, change_seq in purged:
        newest[collection_id] = max(change_seq, newest.get(collection_id, 0))
    for collection_id, change_seq in newest.items():
        session.execute(
            update(Collection)
            .where(Collection.id == collection_id, Collection.tombstones_purged_seq < change_seq)
            .values(tombstones_purged_seq=change_seq)
            .execution_options(synchronize_session=False)
        )
    return len(purged)


def sql_ball(
    session: Session, collection: Collection, address: int, radius: int, limit: int
) -> list[BallMatch]:
    """Documents within `radius` of `address` straight from the table, nearest first, at most `limit`."""
    masks = xor_masks(collection.address_bits, radius)
    probes = [int(mask) ^ address for mask in masks.masks]
    matches: list[BallMatch] = []
    for start in range(0, len(probes), _IN_CHUNK):
        rows = session.execute(
            select(Document.external_id, Document.address).where(
                Document.collection_id == collection.id,
                Document.deleted.is_(False),
                Document.address.in_(probes[start : start + _IN_CHUNK]),
            )
        )
        matches.extend(
            BallMatch(external_id, found, (found ^ address).bit_count()) for external_id, found in rows
        )
    matches.sort(key=lambda match: (match.distance, match.address, match.external_id))
    return matches[:limit]
