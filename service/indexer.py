"""Writing documents: the one upsert path shared by the API and the bulk job (`semhash index`).

A batch is encoded, then written in one transaction: the collection's change counter is bumped
(see `service.db`) and every row is inserted or, when its external id exists, replaced. The caller
commits, so a batch is all or nothing; re-running a batch changes nothing but timestamps.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from sqlalchemy import func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from service.db import Collection, Document
from service.errors import ConflictError, NotFoundError
from service.store import create_collection, find_collection, next_change_seq
from training.text_bundle import EmptyDocumentError, TextBundle, TextCodes

if TYPE_CHECKING:
    from training.corpus import Corpus

logger = logging.getLogger(__name__)


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


class HashedCollection(Protocol):
    """What identifies the model a collection was hashed with (a `Collection` row or its index)."""

    name: str
    bundle_id: str
    bundle_fingerprint: str


def ensure_bundle_matches(collection: HashedCollection, bundle: TextBundle) -> None:
    """Refuse to mix codes of two different models in one collection."""
    if collection.bundle_fingerprint != bundle.fingerprint:
        raise ConflictError(
            f"collection {collection.name!r} was indexed with bundle {collection.bundle_id} "
            f"(fingerprint {collection.bundle_fingerprint}) but the loaded text bundle is {bundle.bundle_id} "
            f"(fingerprint {bundle.fingerprint}); index into a new collection or load the original bundle"
        )


def _upsert_statement(session: Session) -> Any:
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(Document.__table__)
    replaced = ("text", "metadata", "address", "long_code", "deleted", "change_seq")
    return statement.on_conflict_do_update(
        index_elements=["collection_id", "external_id"],
        set_={**{column: statement.excluded[column] for column in replaced}, "updated_at": func.now()},
    )


def check_batch(collection: Collection, bundle: TextBundle, documents: Sequence[IncomingDocument]) -> None:
    """Raise `DuplicateIdsError` or `ConflictError` (wrong bundle) before anything is encoded or written."""
    duplicates = duplicate_positions(documents)
    if duplicates:
        raise DuplicateIdsError(duplicates)
    ensure_bundle_matches(collection, bundle)


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
    check_batch(collection, bundle, documents)
    codes = bundle.encode([document.text for document in documents])
    return write_encoded(session, collection, documents, codes.addresses, codes.long_codes)


@dataclass
class IndexingReport:
    """What one run of the bulk job did."""

    documents: int = 0  # read from the input
    written: int = 0  # inserted or replaced
    skipped_empty: int = 0  # empty or without a vocabulary word, so they have no code
    seconds: float = 0.0

    @property
    def documents_per_second(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0


def _collection_for(
    session_factory: sessionmaker[Session], name: str, bundle: TextBundle, create: bool
) -> Collection:
    with session_factory() as session:
        try:
            collection = find_collection(session, name)
        except NotFoundError:
            if not create:
                raise
            collection = create_collection(session, name, bundle)
            session.commit()
            logger.info("created collection %r for bundle %s", name, bundle.bundle_id)
        ensure_bundle_matches(collection, bundle)
        return collection


def encode_skipping_empty(bundle: TextBundle, texts: Sequence[str]) -> tuple[TextCodes, list[int]]:
    """Codes of the texts the model can encode, and the positions of those it cannot (left out)."""
    try:
        return bundle.encode(texts), []
    except EmptyDocumentError as err:
        unencodable = set(err.indices)
        kept = [text for position, text in enumerate(texts) if position not in unencodable]
        return bundle.encode(kept), sorted(unencodable)


def index_corpus(
    session_factory: sessionmaker[Session],
    collection_name: str,
    corpus: Corpus,
    bundle: TextBundle,
    batch_size: int = 1000,
    create: bool = True,
    progress: bool = True,
) -> IndexingReport:
    """Encode and upsert `corpus` into the collection, one transaction per batch.

    Documents the model cannot encode (empty, no vocabulary word) are skipped and counted. Safe to
    stop at any moment and run again: a batch is committed whole or not at all, and documents are
    upserted by id, so a re-run finishes the job without duplicates.
    """
    collection = _collection_for(session_factory, collection_name, bundle, create)
    report = IndexingReport(documents=len(corpus))
    labels = corpus.labels or [None] * len(corpus)
    started = time.perf_counter()
    with (
        tqdm(total=len(corpus), unit="doc", disable=not progress, desc=collection_name) as bar,
        logging_redirect_tqdm(),
    ):
        for start in range(0, len(corpus), batch_size):
            stop = start + batch_size
            codes, unencodable = encode_skipping_empty(bundle, corpus.texts[start:stop])
            skipped = set(unencodable)
            batch = [
                IncomingDocument(external_id, text, None if label is None else {"label": label})
                for position, (external_id, text, label) in enumerate(
                    zip(corpus.ids[start:stop], corpus.texts[start:stop], labels[start:stop], strict=True)
                )
                if position not in skipped
            ]
            with session_factory() as session:
                check_batch(collection, bundle, batch)
                report.written += write_encoded(session, collection, batch, codes.addresses, codes.long_codes)
                session.commit()
            report.skipped_empty += len(skipped)
            report.seconds = time.perf_counter() - started
            bar.update(min(stop, len(corpus)) - start)  # tqdm shows the rate in docs/s
    return report
