"""Keeps a collection's `LexicalIndex` in step with the SQL table, alongside its bit index.

`service.index_sync.IndexRegistry` loads it with the bit index (every live document's text) and then
hands it the same `ChangeBatch`es (rows stamped with a newer change sequence, read back by a poll or
taken straight from a write of this process), which it applies in O(rows changed).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db import Document
from service.index_writer import ChangeBatch
from service.lexical import LexicalIndex


def load_lexical(session: Session, collection_id: int) -> LexicalIndex:
    """The lexical index of the collection's live documents."""
    rows = session.execute(
        select(Document.id, Document.text).where(
            Document.collection_id == collection_id, Document.deleted.is_(False)
        )
    ).all()
    return LexicalIndex.build([row_id for row_id, _ in rows], [text for _, text in rows])


def apply_lexical(lexical: LexicalIndex, batch: ChangeBatch) -> LexicalIndex:
    """`lexical` with the batch's rows upserted or deleted (rebuilt once dead slots pile up)."""
    if not len(batch):
        return lexical
    lexical.apply(batch.changes.row_ids.tolist(), batch.texts, batch.changes.deleted.tolist())
    return lexical.compacted() if lexical.needs_compaction() else lexical
