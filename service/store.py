"""Collections and documents in SQL: create, read, delete, and the Hamming-ball lookup by `address IN`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError, NoResultFound
from sqlalchemy.orm import Session

from service.codes import xor_masks
from service.db import Collection, Document
from service.errors import ConflictError, NotFoundError


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


# Keep each IN list well under SQLite's limit on bound parameters (32766).
_IN_CHUNK = 10_000


@dataclass(frozen=True)
class BallMatch:
    """A document found by the SQL lookup."""

    external_id: str
    address: int
    distance: int


def next_change_seq(session: Session, collection_id: int) -> int:
    """Bump the collection's change counter in this transaction (locking its row until commit)."""
    statement = (
        update(Collection)
        .where(Collection.id == collection_id)
        .values(change_seq=Collection.change_seq + 1)
        .returning(Collection.change_seq)
        .execution_options(synchronize_session=False)
    )
    try:
        return session.execute(statement).scalar_one()
    except NoResultFound as err:
        raise NotFoundError(f"collection {collection_id} was deleted meanwhile") from err


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


def delete_document(session: Session, collection: Collection, external_id: str) -> None:
    """Turn a document into a tombstone (text and metadata dropped) so every index sees it go."""
    change_seq = next_change_seq(session, collection.id)
    result = session.execute(
        update(Document)
        .where(
            Document.collection_id == collection.id,
            Document.external_id == external_id,
            Document.deleted.is_(False),
        )
        .values(deleted=True, text="", metadata_=None, change_seq=change_seq, updated_at=func.now())
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 0:
        raise NotFoundError(f"document {external_id!r} not found in collection {collection.name!r}")


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
