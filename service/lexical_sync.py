"""Keeps a collection's `LexicalIndex` in step with the SQL table, as the registry does its BitIndex.

Called by `service.index_sync.IndexRegistry` under the collection's lock, right after the bit index
caught up. A first sync (or one behind a purge of tombstones, which may have removed deletes it never
read) loads every live document's text; later syncs read only the rows stamped with a newer change
sequence (upserts and tombstones) and apply them in O(rows changed).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db import Collection, Document
from service.lexical import LexicalIndex


def _purged_seq(session: Session, collection_id: int) -> int:
    return session.scalar(select(Collection.tombstones_purged_seq).where(Collection.id == collection_id)) or 0


def _load(session: Session, collection_id: int, change_seq: int) -> tuple[LexicalIndex, int]:
    rows = session.execute(
        select(Document.id, Document.text).where(
            Document.collection_id == collection_id, Document.deleted.is_(False)
        )
    ).all()
    index = LexicalIndex.build([row_id for row_id, _ in rows], [text for _, text in rows])
    # Rows committed after `change_seq` may be in the load too; reading them again later is harmless.
    return index, change_seq


def sync_lexical(
    session: Session, collection_id: int, change_seq: int, lexical: LexicalIndex | None, lexical_seq: int
) -> tuple[LexicalIndex, int]:
    """The lexical index brought up to at least `change_seq` (the collection's sequence read at the
    start of this sync), and the sequence it now reflects."""
    if lexical is None or _purged_seq(session, collection_id) > lexical_seq:
        lexical, lexical_seq = _load(session, collection_id, change_seq)
    rows = session.execute(
        select(Document.id, Document.text, Document.deleted, Document.change_seq).where(
            Document.collection_id == collection_id, Document.change_seq > lexical_seq
        )
    ).all()
    if _purged_seq(session, collection_id) > lexical_seq:  # a purge committed between the reads
        return _load(session, collection_id, change_seq)
    if rows:
        row_ids, texts, deleted, seqs = zip(*rows, strict=True)
        lexical.apply(list(row_ids), list(texts), list(deleted))
        lexical_seq = max(lexical_seq, *seqs)
        if lexical.needs_compaction():
            lexical = lexical.compacted()
    return lexical, max(lexical_seq, change_seq)
