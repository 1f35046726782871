"""Writing documents: the one upsert path shared by the API and the bulk job (`semhash index`).

A batch is encoded, then written in one transaction: the collection's change counter is bumped
(see `service.db`) and every row is inserted or, when its external id exists, replaced. The caller
commits, so a batch is all or nothing; re-running a batch changes nothing but timestamps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import func, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import NoResultFound
from sqlalchemy.orm import Session

from service.db import Collection, Document
from service.errors import ConflictError, NotFoundError

if TYPE_CHECKING:
    from training.text_bundle import TextBundle


@dataclass(frozen=True)
class IncomingDocument:
    """A document to index: its id in the caller's world, its text and optional metadata."""

    external_id: str
    text: str
    metadata: dict[str, Any] | None = None


class DuplicateIdsError(ValueError):
    """One batch names the same external id more than once (so which one wins would be arbitrary)."""

    def __init__(self, indices: list[int]) -> None:
        super().__init__(f"duplicate document ids at positions {indices}")
        self.indices = indices


def duplicate_positions(documents: Sequence[IncomingDocument]) -> list[int]:
    """Positions of documents whose id already appeared earlier in the batch."""
    seen: set[str] = set()
    duplicates = []
    for position, document in enumerate(documents):
        if document.external_id in seen:
            duplicates.append(position)
        seen.add(document.external_id)
    return duplicates


def ensure_bundle_matches(collection: Collection, bundle: TextBundle) -> None:
    """Refuse to mix codes of two different models in one collection."""
    if collection.bundle_fingerprint != bundle.fingerprint:
        raise ConflictError(
            f"collection {collection.name!r} was indexed with bundle {collection.bundle_id} "
            f"(fingerprint {collection.bundle_fingerprint}) but the loaded text bundle is {bundle.bundle_id} "
            f"(fingerprint {bundle.fingerprint}); index into a new collection or load the original bundle"
        )


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


def _upsert_statement(session: Session) -> Any:
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(Document.__table__)
    replaced = ("text", "metadata", "address", "long_code", "deleted", "change_seq")
    return statement.on_conflict_do_update(
        index_elements=["collection_id", "external_id"],
        set_={**{column: statement.excluded[column] for column in replaced}, "updated_at": func.now()},
    )


def write_encoded(
    session: Session,
    collection: Collection,
    documents: Sequence[IncomingDocument],
    addresses: np.ndarray,
    long_codes: np.ndarray,
) -> int:
    """Insert or replace already-encoded documents by external id in the session's transaction."""
    if not documents:
        return 0
    change_seq = next_change_seq(session, collection.id)
    rows = [
        {
            "collection_id": collection.id,
            "external_id": document.external_id,
            "text": document.text,
            "metadata": document.metadata,
            "address": int(address),
            "long_code": long_code.tobytes(),
            "deleted": False,
            "change_seq": change_seq,
        }
        for document, address, long_code in zip(documents, addresses, long_codes, strict=True)
    ]
    session.execute(_upsert_statement(session), rows)
    return len(rows)


def upsert_documents(
    session: Session, collection: Collection, bundle: TextBundle, documents: Sequence[IncomingDocument]
) -> int:
    """Encode `documents` and insert or replace them by external id; returns how many were written.

    Raises `DuplicateIdsError`, `EmptyDocumentError` (from the bundle) or `ConflictError` before
    anything is written. The caller commits (or rolls back) the transaction.
    """
    if not documents:
        return 0
    duplicates = duplicate_positions(documents)
    if duplicates:
        raise DuplicateIdsError(duplicates)
    ensure_bundle_matches(collection, bundle)
    codes = bundle.encode([document.text for document in documents])
    return write_encoded(session, collection, documents, codes.addresses, codes.long_codes)
