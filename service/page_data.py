"""What the web page shows beside the search API's answers: result snippets and the 2-D code map.

* Snippets: a window of each document's text around the first word of the query it contains, with
  its metadata and codes, for a page of search results in one round trip.
* Code map: a sample of a collection's documents placed in 2-D by the principal components of their
  long codes (bits as +-1). The projection (mean and two components) comes with the points, so the
  page places any other long code (the query's) on the same map without asking again.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.codes import address_to_code
from service.db import Collection, Document
from service.index_sync import CollectionIndex

SNIPPET_CHARS = 240
SNIPPET_LEAD = 60  # characters of context kept before the first query word
_WORD = re.compile(r"[^\W_]{2,}")  # words of two or more letters/digits, as the page highlights them
_SQL_CHUNK = 500  # ids per IN (...) clause


@dataclass(frozen=True)
class Snippet:
    id: str
    snippet: str
    metadata: dict[str, Any] | None
    address_code: str
    long_code: str


def query_words(query: str | None) -> list[str]:
    """The lower-cased distinct words of a query, longest first (so a window favours rarer words)."""
    if not query:
        return []
    words = {word.lower() for word in _WORD.findall(query)}
    return sorted(words, key=lambda word: (-len(word), word))


def make_snippet(text: str, words: Sequence[str], chars: int = SNIPPET_CHARS) -> str:
    """`chars` characters of `text` (whitespace collapsed) around the first of `words` it contains."""
    flat = " ".join(text.split())
    start = 0
    if words:
        pattern = re.compile(r"\b(" + "|".join(re.escape(word) for word in words) + r")\b", re.IGNORECASE)
        match = pattern.search(flat)
        if match is not None:
            start = max(0, match.start() - SNIPPET_LEAD)
            if start > 0:  # begin at a word boundary
                space = flat.find(" ", start)
                start = space + 1 if 0 <= space < match.start() else start
    end = min(len(flat), start + chars)
    if end < len(flat):
        space = flat.rfind(" ", start, end)
        end = space if space > start + chars // 2 else end
    return ("… " if start > 0 else "") + flat[start:end] + (" …" if end < len(flat) else "")


def _chunks(items: Sequence[Any]) -> list[Sequence[Any]]:
    return [items[i : i + _SQL_CHUNK] for i in range(0, len(items), _SQL_CHUNK)]


def snippets(
    session: Session, collection: Collection, ids: Sequence[str], query: str | None, chars: int
) -> tuple[list[Snippet], list[str]]:
    """(snippets of the live documents among `ids`, in the order asked; ids not found)."""
    found: dict[str, Document] = {}
    for chunk in _chunks(list(dict.fromkeys(ids))):
        rows = session.scalars(
            select(Document).where(
                Document.collection_id == collection.id,
                Document.external_id.in_(chunk),
                Document.deleted.is_(False),
            )
        )
        found.update((row.external_id, row) for row in rows)
    words = query_words(query)
    out = [
        Snippet(
            id=doc.external_id,
            snippet=make_snippet(doc.text, words, chars),
            metadata=doc.metadata_,
            address_code=address_to_code(doc.address, collection.address_bits),
            long_code=doc.long_code.hex(),
        )
        for doc in (found[i] for i in dict.fromkeys(ids) if i in found)
    ]
    return out, [i for i in dict.fromkeys(ids) if i not in found]


@dataclass(frozen=True)
class CodeMap:
    ids: list[str]
    xy: np.ndarray  # (k, 2) map coordinates
    values: list[Any]  # the colour field's value per point (None where a document lacks it)
    fields: list[str]  # metadata keys seen in the sample
    mean: np.ndarray  # (long_bits,) mean of the sample's +-1 bits
    components: np.ndarray  # (2, long_bits) the projection
    total: int  # live documents in the collection


def long_code_signs(long_words: np.ndarray, long_bits: int) -> np.ndarray:
    """(n, words) uint64 long codes -> (n, long_bits) float32 bits as -1/+1 (np.packbits order)."""
    words = np.ascontiguousarray(long_words, dtype=np.uint64)
    packed = words.view(np.uint8).reshape(len(words), 8 * words.shape[1])
    bits = np.unpackbits(packed, axis=1)[:, :long_bits]
    return bits.astype(np.float32) * 2.0 - 1.0


def principal_plane(signs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, (2, d) components) of the rows of `signs`, each component's largest loading positive."""
    mean = signs.mean(axis=0) if len(signs) else np.zeros(signs.shape[1], np.float32)
    centred = signs - mean
    components = np.zeros((2, signs.shape[1]), np.float32)
    if len(signs) > 1:
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        top = vt[:2]
        signs_of = np.sign(top[np.arange(len(top)), np.abs(top).argmax(axis=1)])
        components[: len(top)] = top * signs_of[:, None]
    return mean, components


def sample_positions(live: np.ndarray, sample: int) -> np.ndarray:
    """Up to `sample` of the live positions, evenly spread (the same ones while the collection is)."""
    if len(live) <= sample:
        return live
    return live[np.linspace(0, len(live) - 1, sample).round().astype(np.int64)]


def code_map(session: Session, entry: CollectionIndex, sample: int, field: str | None) -> CodeMap:
    """A sample of the collection on the principal plane of its long codes, with `field` per point."""
    index = entry.index
    live = index.live_positions()
    positions = sample_positions(live, sample)
    ids = index.external_ids_at(positions)
    signs = long_code_signs(index.long_words_at(positions), entry.long_bits)
    mean, components = principal_plane(signs)
    xy = (signs - mean) @ components.T if len(signs) else np.zeros((0, 2), np.float32)
    metadata: dict[int, dict[str, Any] | None] = {}
    row_ids = index.row_ids_at(positions).tolist()
    for chunk in _chunks(row_ids):
        rows = session.execute(select(Document.id, Document.metadata_).where(Document.id.in_(chunk)))
        metadata.update((row_id, meta) for row_id, meta in rows)
    fields: set[str] = set()
    values = []
    for row_id in row_ids:
        meta = metadata.get(row_id) or {}
        fields.update(meta)
        value = meta.get(field) if field else None
        values.append(value if isinstance(value, str | int | float | bool) or value is None else str(value))
    return CodeMap(ids, xy, values, sorted(fields), mean, components, int(len(live)))
