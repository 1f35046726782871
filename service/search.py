"""Search: candidates from the in-memory index and, for text queries, from the postings of the query's
rarest words; then a rerank of those candidates.

Code candidates: the documents at the addresses of a Hamming ball of fixed radius around the query's
address, nearest first, or (multi-probe, `SearchOptions.probes` > 0, for a query whose address bit
probabilities are known) at the `probes` most likely addresses under those probabilities, most likely
first (`bundles.probes`): the uncertain bits of a short query flip first. Either stops at
`shortlist_size` documents.

Reranks:

* ``hamming``: 1 - d_H(long code of query, of document) / long_bits.
* ``tfidf``: cosine of the bundle-vocabulary TF-IDF vectors (texts read from SQL).
* ``bm25``: full-vocabulary BM25 (`service.lexical`), ties broken by the Hamming score.
* ``fused``: bm25(q, d) / max_d' bm25(q, d') + w * (1 - d_H / long_bits), the lexical evidence
  (rare words the encoder never saw) plus the semantic one (the codes), w = `code_weight`.
* ``none``: the shortlist's address order.

"Touched" counts what a query reads of the collection: the documents of the code shortlist plus every
postings entry of the lexical candidate source (an upper bound on the distinct documents read).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bundles.probes import probe_addresses
from service.db import Document
from service.index import BitIndex
from service.index_sync import CollectionIndex
from service.lexical import LexicalIndex, QueryTerms

if TYPE_CHECKING:
    from bundles.text import TextBundle

Rerank = Literal["fused", "bm25", "hamming", "tfidf", "none"]
LEXICAL_RERANKS = ("fused", "bm25")


@dataclass(frozen=True)
class SearchQuery:
    """What to search for: an address (None when the encoder cannot code the text), plus what the
    reranks need when the caller has it."""

    address: int | None
    long_words: np.ndarray | None = None  # (words,) uint64, for the Hamming rerank
    text: str | None = None  # for the TF-IDF and BM25 reranks and the lexical candidates
    exclude_row: int | None = None  # a document left out of the results (query by example)
    address_probabilities: np.ndarray | None = None  # (address_bits,) P(bit = 1), for multi-probe


@dataclass(frozen=True)
class SearchOptions:
    radius: int  # of the Hamming ball (when not probing)
    limit: int
    shortlist_size: int  # documents of the code candidates to rerank
    rerank: Rerank
    lexical_candidates: int = 0  # budget of postings entries for the lexical candidate source
    code_weight: float = 1.0  # w of the fused score
    probes: int = 0  # multi-probe budget (addresses); 0: the Hamming ball of `radius`


@dataclass(frozen=True)
class SearchHit:
    external_id: str
    distance: int | None  # Hamming distance between the query's and the document's address
    score: float  # higher is better; its meaning depends on the rerank


@dataclass(frozen=True)
class SearchOutcome:
    hits: list[SearchHit]
    rerank: Rerank  # the rerank that was applied
    shortlist_size: int  # documents of the code shortlist
    probed: int
    lexical_size: int = 0  # documents found by the lexical candidate source
    touched: int = 0  # documents and postings entries read (see the module docstring)


def positions_of_rows(index: BitIndex, row_ids: np.ndarray) -> np.ndarray:
    """(k,) int64 position in `index` of each SQL row id, -1 where it has no live document."""
    row_ids = np.asarray(row_ids, np.int64)
    positions = index.base.find_rows(row_ids)
    found = np.flatnonzero(positions >= 0)
    positions[found[index.base_dead[positions[found]] <= index.version]] = -1
    delta, missing = index.delta, positions < 0
    if delta.count and missing.any():
        entries = np.flatnonzero(delta.dead[: delta.count] > index.version)
        if len(entries):
            order = np.argsort(delta.row_ids[entries])
            rows, entries = delta.row_ids[entries][order], entries[order]
            spot = np.minimum(np.searchsorted(rows, row_ids), len(rows) - 1)
            hit = missing & (rows[spot] == row_ids)
            positions[hit] = len(index.base) + entries[spot[hit]]
    return positions


def _tfidf_scores(session: Session, bundle: TextBundle, row_ids: np.ndarray, text: str) -> np.ndarray:
    # Document texts live in SQL only (keeping them in memory would double the footprint).
    rows = session.execute(select(Document.id, Document.text).where(Document.id.in_(row_ids.tolist())))
    texts_by_row = dict(rows.all())
    texts = [texts_by_row.get(int(row_id), "") for row_id in row_ids]
    vectors = bundle.tfidf(texts + [text])
    # Rows are L2-normalised, so the dot product is the cosine similarity.
    return np.asarray((vectors[:-1] @ vectors[-1].T).todense()).ravel()


def _bm25(lexical: LexicalIndex, terms: QueryTerms, index: BitIndex, positions: np.ndarray) -> np.ndarray:
    slots = lexical.slots_of_rows(index.row_ids_at(positions))
    scores = np.zeros(len(positions), np.float32)
    held = slots >= 0
    scores[held] = lexical.scores(terms, slots[held])
    return scores


def _lexical_candidates(
    lexical: LexicalIndex, terms: QueryTerms, index: BitIndex, budget: int
) -> tuple[np.ndarray, int]:
    """Positions of the documents holding the query's rarest words, and the postings entries read."""
    slots, read = lexical.candidates(terms, budget)
    positions = positions_of_rows(index, lexical.rows_of_slots(slots))
    return positions[positions >= 0], read


def _address_distances(index: BitIndex, positions: np.ndarray, address: int | None) -> list[int | None]:
    if address is None:
        return [None] * len(positions)
    return np.bitwise_count(index.addresses_at(positions).astype(np.uint64) ^ np.uint64(address)).tolist()


def code_candidates(index: BitIndex, query: SearchQuery, options: SearchOptions) -> tuple[np.ndarray, int]:
    """Positions of the code shortlist (multi-probe or Hamming ball), and the addresses looked up."""
    if query.address is None:
        return np.zeros(0, np.int64), 0
    if options.probes and query.address_probabilities is not None:
        addresses = probe_addresses(query.address_probabilities, options.probes)
        found = index.probe(addresses, options.shortlist_size)
        return found.positions, found.probed
    shortlist = index.lookup(query.address, options.radius, options.shortlist_size)
    return shortlist.positions, shortlist.probed


def search(
    entry: CollectionIndex,
    query: SearchQuery,
    options: SearchOptions,
    bundle: TextBundle,
    session_factory: sessionmaker[Session],
) -> SearchOutcome:
    """The best `limit` of the candidates (the first `shortlist_size` documents of the code candidates,
    plus the lexical candidates of a BM25 or fused rerank), ranked as asked.

    A Hamming rerank needs the query's long code; when the caller gave only an address the
    shortlist keeps its address order and the outcome says `rerank="none"`.
    """
    index = entry.index
    rerank = options.rerank
    positions, probed = code_candidates(index, query, options)
    shortlist_size = len(positions)
    lexical_size = read = 0
    lexical, terms = entry.lexical, None
    if rerank in LEXICAL_RERANKS:
        assert query.text is not None, "the API only allows a BM25 rerank for text queries"
        if lexical is None:
            lexical = LexicalIndex()  # a collection synced before it had a lexical index: nothing known
        terms = lexical.query(query.text)
        if options.lexical_candidates:
            found, read = _lexical_candidates(lexical, terms, index, options.lexical_candidates)
            extra = np.setdiff1d(found, positions)
            lexical_size = len(found)
            positions = np.concatenate([positions, extra])
    if query.exclude_row is not None:
        positions = positions[index.row_ids_at(positions) != query.exclude_row]
    if rerank == "hamming" and query.long_words is None:
        rerank = "none"
    code_scores = (
        1.0 - index.long_code_distances(positions, query.long_words) / entry.long_bits
        if query.long_words is not None
        else np.zeros(len(positions))
    )
    if rerank == "hamming":
        scores = code_scores
    elif rerank in LEXICAL_RERANKS:
        assert terms is not None and lexical is not None
        bm25 = _bm25(lexical, terms, index, positions).astype(np.float64)
        if rerank == "fused":
            top = float(bm25.max()) if len(bm25) else 0.0
            scores = (bm25 / top if top > 0 else bm25) + options.code_weight * code_scores
        else:
            scores = bm25 + 1e-6 * code_scores  # ties (no shared word) go to the nearer code
    elif rerank == "tfidf":
        assert query.text is not None, "the API only allows a TF-IDF rerank for text queries"
        with session_factory() as session:
            scores = _tfidf_scores(session, bundle, index.row_ids_at(positions), query.text)
    else:
        scores = -np.arange(len(positions), dtype=np.float64)  # address order
    # Stable sort: ties keep the candidate order (address distance, then lexical).
    order = np.argsort(-scores, kind="stable")[: options.limit]
    if rerank == "none" and query.address is not None:
        distances = np.asarray(_address_distances(index, positions[order], query.address), np.float64)
        final = 1.0 - distances / index.address_bits
    else:
        final = scores[order]
    hits = [
        SearchHit(external_id=external_id, distance=distance, score=float(score))
        for external_id, distance, score in zip(
            index.external_ids_at(positions[order]),
            _address_distances(index, positions[order], query.address),
            final.tolist(),
            strict=True,
        )
    ]
    return SearchOutcome(
        hits=hits,
        rerank=rerank,
        shortlist_size=shortlist_size,
        probed=probed,
        lexical_size=lexical_size,
        touched=shortlist_size + read,
    )
