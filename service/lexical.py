"""Full-vocabulary BM25 over one collection, in memory, keyed by SQL row id.

The text bundle sees only its 2000-word vocabulary; this index sees every non-stop word of every stored
document (the tokenizer of `bundles.text_features`: lowercase runs of 2+ word characters, scikit-learn's
English stop words removed), so a rare word ("clipper") counts even though the encoder never saw it.

Scoring (Robertson & Zaragoza, Lucene's idf, as `training.text_baselines.bm25_database`):

    score(q, d) = sum_t qtf_t * idf_t * tf_td (k1 + 1) / (tf_td + k1 (1 - b + b |d| / avgdl)),
    idf_t = ln(1 + (n - df_t + 0.5) / (df_t + 0.5)),   k1 = 1.2, b = 0.75,

with n, df_t and avgdl the collection's live statistics, kept exact under upserts and deletes.

Layout: every version of a document gets a *slot* (slots only grow; replacing or deleting a document
kills its slot). Each term keeps a postings list of (slot, tf) in slot order, append-only, so a BM25
score for a set of candidate slots is one binary search per query term. Dead slots stay in the
postings until they outnumber the live ones; then `compacted()` rebuilds the index from the live
documents' term data.

Concurrency: one writer (the registry, under the collection's lock) and lock-free readers. Arrays are
only appended to past what readers see or replaced whole, so a reader sees every document's own term
data consistently; collection statistics may be read half-way through a write batch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from sklearn.feature_extraction._stop_words import ENGLISH_STOP_WORDS

from bundles.text_features import tokenize

BM25_K1, BM25_B = 1.2, 0.75
STOP_WORDS = frozenset(ENGLISH_STOP_WORDS)
# Batches of at most this many documents append their postings entry by entry (`_append`).
_SMALL_BATCH = 4


def terms_of(text: str) -> Counter[str]:
    """Non-stop-word tokens of `text` with their counts."""
    return Counter(token for token in tokenize(text) if token not in STOP_WORDS)


class _Postings(NamedTuple):
    """One term's (slot, tf) entries; entries [0, filled) are what a reader may look at. (A tuple: one is
    made per term of every document written, and a frozen dataclass costs several times as much.)"""

    slots: np.ndarray  # (capacity,) int64, increasing over [0, filled)
    tfs: np.ndarray  # (capacity,) float32
    filled: int  # (not `count`: a tuple has a method of that name)


@dataclass(frozen=True)
class _Slots:
    row_ids: np.ndarray  # (capacity,) int64
    lengths: np.ndarray  # (capacity,) float32, |d| in non-stop tokens
    alive: np.ndarray  # (capacity,) bool
    count: int


@dataclass(frozen=True)
class QueryTerms:
    """A query's terms known to the collection, rarest first."""

    term_ids: np.ndarray  # (t,) int64
    weights: np.ndarray  # (t,) float32 query term frequencies
    unknown: int  # non-stop tokens of the query that no document has


def _grow(array: np.ndarray, needed: int) -> np.ndarray:
    if needed <= len(array):
        return array
    grown = np.zeros(max(needed, 2 * len(array), 16), array.dtype)
    grown[: len(array)] = array
    return grown


class LexicalIndex:
    """BM25 statistics and postings of one collection (see the module docstring)."""

    def __init__(self, k1: float = BM25_K1, b: float = BM25_B) -> None:
        self.k1, self.b = k1, b
        self._terms: dict[str, int] = {}
        self._postings: list[_Postings] = []
        self._df = np.zeros(0, np.int64)
        self._slots = _Slots(np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, bool), 0)
        self._slot_of_row: dict[int, int] = {}
        self._slot_terms: list[tuple[np.ndarray, np.ndarray]] = []  # per slot: (term ids, tfs)
        self._totals = (0, 0.0)  # live documents, sum of their lengths

    # ----- writing ---------------------------------------------------------------------------------
    @classmethod
    def build(cls, row_ids: Sequence[int], texts: Sequence[str]) -> LexicalIndex:
        """An index of these live documents."""
        index = cls()
        index.apply(row_ids, texts, [False] * len(row_ids))
        return index

    def apply(self, row_ids: Sequence[int], texts: Sequence[str], deleted: Sequence[bool]) -> None:
        """Upsert (deleted False) or delete (True) each row; a row appears at most once."""
        killed = [self._slot_of_row.pop(int(row), -1) for row in row_ids]
        killed = [slot for slot in killed if slot >= 0]
        self._kill(killed)
        new = [(int(row), text) for row, text, gone in zip(row_ids, texts, deleted, strict=True) if not gone]
        self._append([row for row, _ in new], [terms_of(text) for _, text in new])

    def _kill(self, slots: list[int]) -> None:
        if not slots:
            return
        state = self._slots
        n, total = self._totals
        for slot in slots:
            term_ids, _ = self._slot_terms[slot]
            np.subtract.at(self._df, term_ids, 1)
            state.alive[slot] = False
            n, total = n - 1, total - float(state.lengths[slot])
        self._totals = (n, total)

    def _term_id(self, term: str) -> int:
        term_id = self._terms.get(term)
        if term_id is None:
            term_id = len(self._postings)
            self._postings.append(_Postings(np.zeros(4, np.int64), np.zeros(4, np.float32), 0))
            self._terms[term] = term_id
        return term_id

    def _append(self, row_ids: list[int], documents: list[Counter[str]]) -> None:
        if not row_ids:
            return
        state = self._slots
        start = state.count
        stop = start + len(row_ids)
        arrays = [_grow(a, stop) for a in (state.row_ids, state.lengths, state.alive)]
        per_document = []
        for document in documents:
            term_ids = np.fromiter((self._term_id(term) for term in document), np.int64, len(document))
            tfs = np.fromiter(document.values(), np.float32, len(document))
            per_document.append((term_ids, tfs))
        self._df = _grow(self._df, len(self._postings))
        if len(row_ids) <= _SMALL_BATCH:
            self._append_entries_one_by_one(start, per_document)
        else:
            self._append_entries_by_term(start, stop, per_document)
        lengths = np.array([float(f.sum()) for _, f in per_document], np.float32)
        arrays[0][start:stop], arrays[1][start:stop], arrays[2][start:stop] = row_ids, lengths, True
        self._slot_terms.extend(per_document)
        self._slot_of_row.update(zip(row_ids, range(start, stop), strict=True))
        n, total = self._totals
        self._totals = (n + len(row_ids), total + float(lengths.sum()))
        self._slots = _Slots(arrays[0], arrays[1], arrays[2], stop)

    def _extend_postings(self, term_id: int, slots: np.ndarray, tfs: np.ndarray) -> None:
        """Append entries to a term's postings: written past what readers see, then published."""
        old = self._postings[term_id]
        size = old.filled + len(slots)
        if size > len(old.slots):
            old = _Postings(_grow(old.slots, size), _grow(old.tfs, size), old.filled)
        old.slots[old.filled : size] = slots
        old.tfs[old.filled : size] = tfs
        self._postings[term_id] = _Postings(old.slots, old.tfs, size)

    def _append_entries_one_by_one(
        self, start: int, per_document: list[tuple[np.ndarray, np.ndarray]]
    ) -> None:
        """The postings of a few documents (the API's single-document writes): one entry at a time, as
        `_extend_postings` does, without the sorting of `_append_entries_by_term`, whose fixed cost is
        several times a document's."""
        postings = self._postings
        for slot, (term_ids, tfs) in enumerate(per_document, start):
            for term_id, tf in zip(term_ids.tolist(), tfs.tolist(), strict=True):
                old = postings[term_id]
                if old.filled == len(old.slots):
                    old = _Postings(
                        _grow(old.slots, old.filled + 1), _grow(old.tfs, old.filled + 1), old.filled
                    )
                old.slots[old.filled] = slot
                old.tfs[old.filled] = tf
                postings[term_id] = _Postings(old.slots, old.tfs, old.filled + 1)
            self._df[term_ids] += 1  # a document's term ids are distinct

    def _append_entries_by_term(
        self, start: int, stop: int, per_document: list[tuple[np.ndarray, np.ndarray]]
    ) -> None:
        """The postings of a batch: every (term, slot, tf) gathered, grouped by term in slot order."""
        slots = np.repeat(np.arange(start, stop), [len(t) for t, _ in per_document])
        terms = np.concatenate([t for t, _ in per_document] + [np.zeros(0, np.int64)])
        tfs = np.concatenate([f for _, f in per_document] + [np.zeros(0, np.float32)])
        order = np.argsort(terms, kind="stable")
        terms, slots, tfs = terms[order], slots[order], tfs[order]
        bounds = np.flatnonzero(np.diff(terms)) + 1
        for begin, end in zip(np.r_[0, bounds], np.r_[bounds, len(terms)], strict=True):
            if begin != end:
                self._extend_postings(int(terms[begin]), slots[begin:end], tfs[begin:end])
        np.add.at(self._df, terms, 1)

    def needs_compaction(self) -> bool:
        """Whether dead slots outnumber live ones (and are many)."""
        dead = self._slots.count - self._totals[0]
        return dead > max(1024, self._totals[0])

    def compacted(self) -> LexicalIndex:
        """A fresh index of the live documents (postings without dead slots)."""
        state = self._slots
        live = np.flatnonzero(state.alive[: state.count])
        fresh = LexicalIndex(self.k1, self.b)
        words = list(self._terms)
        documents = []
        for slot in live.tolist():
            term_ids, tfs = self._slot_terms[slot]
            documents.append(Counter(dict(zip((words[t] for t in term_ids), tfs.tolist(), strict=True))))
        fresh._append(state.row_ids[live].tolist(), documents)
        return fresh

    # ----- reading ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Live documents."""
        return self._totals[0]

    def rows(self) -> list[int]:
        """Row ids of the live documents."""
        return list(self._slot_of_row)

    @property
    def average_length(self) -> float:
        n, total = self._totals
        return total / n if n else 0.0

    def document_frequency(self, term: str) -> int:
        term_id = self._terms.get(term)
        return 0 if term_id is None else int(self._df[term_id])

    def query(self, text: str) -> QueryTerms:
        """The query's known terms, rarest (highest idf) first, with their counts."""
        known: list[tuple[int, int, int]] = []
        unknown = 0
        df = self._df
        for term, count in terms_of(text).items():
            term_id = self._terms.get(term)
            if term_id is None or df[term_id] <= 0:
                unknown += 1
            else:
                known.append((int(df[term_id]), term_id, count))
        known.sort()
        return QueryTerms(
            np.array([t for _, t, _ in known], np.int64),
            np.array([c for _, _, c in known], np.float32),
            unknown,
        )

    def idf(self, term_ids: np.ndarray) -> np.ndarray:
        """(t,) float32 Lucene idf of the terms under the current statistics."""
        n = self._totals[0]
        df = self._df[term_ids].astype(np.float64)
        idf: np.ndarray = np.log1p((n - df + 0.5) / (df + 0.5)).astype(np.float32)
        return idf

    def slots_of_rows(self, row_ids: np.ndarray) -> np.ndarray:
        """(k,) int64 live slot of each row id, -1 for rows this index does not hold."""
        get = self._slot_of_row.get
        return np.fromiter((get(int(row), -1) for row in row_ids), np.int64, len(row_ids))

    def rows_of_slots(self, slots: np.ndarray) -> np.ndarray:
        rows: np.ndarray = self._slots.row_ids[slots]
        return rows

    def candidates(self, query: QueryTerms, budget: int) -> tuple[np.ndarray, int]:
        """Live slots of the documents holding the query's rarest terms: whole postings lists, rarest
        term first, while their total length stays within `budget`. Returns (slots, postings read)."""
        chosen: list[np.ndarray] = []
        read = 0
        for term_id in query.term_ids.tolist():
            entries = self._postings[term_id]
            if read + entries.filled > budget:
                break
            chosen.append(entries.slots[: entries.filled])
            read += entries.filled
        if not chosen:
            return np.zeros(0, np.int64), 0
        slots = np.unique(np.concatenate(chosen))
        return slots[self._slots.alive[slots]], read

    def scores(self, query: QueryTerms, slots: np.ndarray) -> np.ndarray:
        """(k,) float32 BM25 of the query for each slot (live slots; see the module docstring)."""
        state = self._slots
        n, total = self._totals
        scores = np.zeros(len(slots), np.float32)
        if not len(slots) or not len(query.term_ids) or n == 0:
            return scores
        norm = self.k1 * (1.0 - self.b + self.b * state.lengths[slots] / max(total / n, 1e-12))
        for term_id, weight, idf in zip(
            query.term_ids.tolist(), query.weights.tolist(), self.idf(query.term_ids).tolist(), strict=True
        ):
            entries = self._postings[term_id]
            found = np.searchsorted(entries.slots[: entries.filled], slots)
            found = np.minimum(found, max(entries.filled - 1, 0))
            hit = (entries.slots[found] == slots) & (entries.filled > 0)
            tf = np.where(hit, entries.tfs[found], 0.0)
            scores += weight * idf * tf * (self.k1 + 1.0) / (tf + norm)
        return scores

    def exhaustive(self, query: QueryTerms) -> tuple[np.ndarray, np.ndarray]:
        """Every live document sharing a term with the query and its BM25: (slots, scores), the
        reference ranking over the whole collection."""
        parts = [self._postings[t].slots[: self._postings[t].filled] for t in query.term_ids.tolist()]
        if not parts:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        slots = np.unique(np.concatenate(parts))
        slots = slots[self._slots.alive[slots]]
        return slots, self.scores(query, slots)
