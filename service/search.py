"""Search: Hamming-ball shortlist from the in-memory index, then a rerank of that shortlist."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from service.db import Document
from service.index_sync import CollectionIndex

if TYPE_CHECKING:
    from training.text_bundle import TextBundle

Rerank = Literal["hamming", "tfidf", "none"]


@dataclass(frozen=True)
class SearchQuery:
    """What to search for: an address, plus what the reranks need when the caller has it."""

    address: int
    long_words: np.ndarray | None = None  # (words,) uint64, for the Hamming rerank
    text: str | None = None  # for the TF-IDF rerank


@dataclass(frozen=True)
class SearchHit:
    external_id: str
    distance: int  # Hamming distance between the query's and the document's address
    score: float  # higher is better; its meaning depends on the rerank


@dataclass(frozen=True)
class SearchOutcome:
    hits: list[SearchHit]
    rerank: Rerank  # the rerank that was applied
    shortlist_size: int
    probed: int


def _tfidf_scores(session: Session, bundle: TextBundle, row_ids: np.ndarray, text: str) -> np.ndarray:
    # Document texts live in SQL only (keeping them in memory would double the footprint).
    rows = session.execute(select(Document.id, Document.text).where(Document.id.in_(row_ids.tolist())))
    texts_by_row = dict(rows.all())
    texts = [texts_by_row.get(int(row_id), "") for row_id in row_ids]
    vectors = bundle.tfidf(texts + [text])
    # Rows are L2-normalised, so the dot product is the cosine similarity.
    return np.asarray((vectors[:-1] @ vectors[-1].T).todense()).ravel()


def search(
    entry: CollectionIndex,
    query: SearchQuery,
    radius: int,
    limit: int,
    shortlist_size: int,
    rerank: Rerank,
    bundle: TextBundle,
    session_factory: sessionmaker[Session],
) -> SearchOutcome:
    """The best `limit` of the `shortlist_size` nearest documents within `radius` of the query
    address, ranked as asked (`shortlist_size` >= `limit`).

    A Hamming rerank needs the query's long code; when the caller gave only an address the
    shortlist keeps its address order and the outcome says `rerank="none"`.
    """
    index = entry.index
    shortlist = index.lookup(query.address, radius, shortlist_size)
    positions, distances = shortlist.positions, shortlist.distances
    if rerank == "hamming" and query.long_words is None:
        rerank = "none"
    if rerank == "hamming":
        long_distances = index.long_code_distances(positions, query.long_words)
        # Stable sort: ties keep the address-distance order of the shortlist.
        order = np.argsort(long_distances, kind="stable")
        scores = 1.0 - long_distances[order] / entry.long_bits
    elif rerank == "tfidf":
        assert query.text is not None, "the API only allows a TF-IDF rerank for text queries"
        with session_factory() as session:
            similarities = _tfidf_scores(session, bundle, index.row_ids_at(positions), query.text)
        order = np.argsort(-similarities, kind="stable")
        scores = similarities[order]
    else:
        order = np.arange(len(positions))
        scores = 1.0 - distances / index.address_bits
    order, scores = order[:limit], scores[:limit]
    hits = [
        SearchHit(external_id=external_id, distance=int(distance), score=float(score))
        for external_id, distance, score in zip(
            index.external_ids_at(positions[order]),
            distances[order].tolist(),
            scores.tolist(),
            strict=True,
        )
    ]
    return SearchOutcome(
        hits=hits,
        rerank=rerank,
        shortlist_size=len(positions),
        probed=shortlist.probed,
    )
