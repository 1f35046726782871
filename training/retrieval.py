"""Retrieval metrics: which database documents are relevant to a query, and how rankings find them.

Relevance (`Relevance`) comes from labels (single-label: the same label; multi-label: at least one
shared label) or, for unlabelled collections, from a reference ranking (a query's K nearest TF-IDF
neighbours are its relevant documents, so precision@K is the agreement of two neighbour lists).
Both are label-indicator matrices: for neighbours, label j means "neighbour of database document j".

Two rankings: by Hamming distance between binary codes, and by cosine similarity of real vectors.
Hamming distances tie a lot (a 32-bit code has only 33 distances), so every metric at a cut-off K is
the *expected* value under uniformly random ordering within ties: if the K-th document lies in the
group of documents at distance d, the relevant count at K is

    rel(< d) + (K - n(< d)) * rel(= d) / n(= d),

which needs only per-distance histograms (no sort) and no arbitrary tie-break (the database is
sorted by label, so breaking ties by index would bias the numbers). Cosine scores are continuous and
are ranked by sorting.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

CHUNK = 256  # queries per block: bounds memory at CHUNK x database floats


def label_ids(labels: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Labels -> (n,) int codes and the sorted label names."""
    names = sorted(set(labels))
    index = {name: i for i, name in enumerate(names)}
    return np.array([index[label] for label in labels], dtype=np.int64), names


class Relevance:
    """A query is relevant to a database document iff their label sets intersect.

    query: (q, L) and database: (n, L) 0/1 indicator matrices. When every document has exactly one
    label, the blocks are computed by comparing label ids (`query_ids`, `database_ids`), much faster.
    """

    def __init__(self, query: sp.spmatrix, database: sp.spmatrix, names: Sequence[str] | None = None):
        self.query = sp.csr_matrix(query, dtype=np.float32)
        self.database = sp.csr_matrix(database, dtype=np.float32)
        self.names = list(names) if names is not None else [str(j) for j in range(self.query.shape[1])]
        single = all(np.all(np.diff(m.indptr) == 1) for m in (self.query, self.database))
        self.query_ids = self.query.indices.astype(np.int64) if single else None
        self.database_ids = self.database.indices.astype(np.int64) if single else None
        self._counts: np.ndarray | None = None

    @classmethod
    def from_labels(cls, query: Sequence[Sequence[str]], database: Sequence[Sequence[str]]) -> Relevance:
        """From each document's labels (a single-label corpus gives 1-tuples)."""
        names = sorted({label for labels in (*query, *database) for label in labels})
        index = {name: j for j, name in enumerate(names)}

        def indicators(rows: Sequence[Sequence[str]]) -> sp.csr_matrix:
            columns = [index[label] for labels in rows for label in labels]
            indptr = np.concatenate([[0], np.cumsum([len(labels) for labels in rows])])
            data = np.ones(len(columns), dtype=np.float32)
            return sp.csr_matrix((data, columns, indptr), shape=(len(rows), len(names)))

        return cls(indicators(query), indicators(database), names)

    @classmethod
    def from_neighbours(cls, neighbours: np.ndarray, n: int) -> Relevance:
        """Relevant = the query's reference neighbours: (q, K) database rows -> relevance over n documents."""
        q, k = neighbours.shape
        query = sp.csr_matrix(
            (np.ones(q * k, dtype=np.float32), neighbours.ravel(), np.arange(0, q * k + 1, k)), shape=(q, n)
        )
        return cls(query, sp.identity(n, dtype=np.float32, format="csr"))

    @property
    def multi_label(self) -> bool:
        return self.query_ids is None

    def __len__(self) -> int:
        return int(self.query.shape[0])

    def block(self, start: int, stop: int) -> np.ndarray:
        """(stop - start, n) bool: relevance of every database document to queries start..stop-1."""
        if self.query_ids is not None and self.database_ids is not None:
            same: np.ndarray = self.query_ids[start:stop, None] == self.database_ids[None, :]
            return same
        shared: np.ndarray = (self.query[start:stop] @ self.database.T).toarray() > 0
        return shared

    def subset(self, query_rows: np.ndarray) -> Relevance:
        """The same relevance for a subset of the queries."""
        return Relevance(self.query[query_rows], self.database, self.names)

    @property
    def counts(self) -> np.ndarray:
        """(q,) number of relevant database documents per query."""
        if self._counts is None:
            if self.query_ids is not None and self.database_ids is not None:
                per_label = np.bincount(self.database_ids, minlength=self.query.shape[1])
                self._counts = per_label[self.query_ids]
            else:
                self._counts = np.concatenate(
                    [self.block(s, min(len(self), s + CHUNK)).sum(axis=1) for s in range(0, len(self), CHUNK)]
                    or [np.zeros(0, dtype=np.int64)]
                )
        return self._counts


def hamming_distances(queries: np.ndarray, database: np.ndarray) -> np.ndarray:
    """(q, bits) and (n, bits) bool codes -> (q, n) int32 Hamming distances, via one matrix product."""
    a = queries.astype(np.float32)
    b = database.astype(np.float32)
    agree = a @ b.T + (1 - a) @ (1 - b).T  # bits where both are 1 plus bits where both are 0
    distances: np.ndarray = (queries.shape[1] - agree).round().astype(np.int32)
    return distances


def hamming_relevant_at(
    queries: np.ndarray,
    database: np.ndarray,
    relevance: Relevance,
    cutoffs: Sequence[int],
) -> np.ndarray:
    """Expected number of relevant documents among the first K by Hamming ranking (ties averaged).

    Returns (q, len(cutoffs)) float64.
    """
    bits = queries.shape[1]
    cut = np.asarray(cutoffs, dtype=np.float64)
    out = np.empty((len(queries), len(cut)))
    for start in range(0, len(queries), CHUNK):
        d = hamming_distances(queries[start : start + CHUNK], database)
        rel = relevance.block(start, start + d.shape[0]).astype(np.float64)
        rows = np.arange(d.shape[0])[:, None] * (bits + 1)
        total = np.bincount((rows + d).ravel(), minlength=d.shape[0] * (bits + 1))
        relevant = np.bincount((rows + d).ravel(), weights=rel.ravel(), minlength=total.size)
        out[start : start + CHUNK] = _expected_at(
            total.reshape(-1, bits + 1).astype(np.float64), relevant.reshape(-1, bits + 1), cut
        )
    return out


def _expected_at(total: np.ndarray, relevant: np.ndarray, cutoffs: np.ndarray) -> np.ndarray:
    """From per-distance counts (q, D): expected relevant count at each cut-off K, (q, len(cutoffs))."""
    cum_total = np.cumsum(total, axis=1)
    cum_relevant = np.cumsum(relevant, axis=1)
    out = np.empty((total.shape[0], len(cutoffs)))
    for j, k in enumerate(cutoffs):
        group = (cum_total < k).sum(axis=1).clip(max=total.shape[1] - 1)  # distance of the K-th document
        rows = np.arange(total.shape[0])
        before_total = cum_total[rows, group] - total[rows, group]
        before_relevant = cum_relevant[rows, group] - relevant[rows, group]
        share = np.divide(
            relevant[rows, group], total[rows, group], out=np.zeros(len(rows)), where=total[rows, group] > 0
        )
        out[:, j] = before_relevant + np.clip(k - before_total, 0, total[rows, group]) * share
    return out


def cosine_relevant_at(
    queries: np.ndarray | sp.spmatrix,
    database: np.ndarray | sp.spmatrix,
    relevance: Relevance,
    cutoffs: Sequence[int],
) -> np.ndarray:
    """Number of relevant documents among the K most cosine-similar (rows need not be normalised).

    Returns (q, len(cutoffs)) float64.
    """
    return score_relevant_at(_normalise(queries), _normalise(database).T, relevance, cutoffs)


def score_relevant_at(
    queries: np.ndarray | sp.spmatrix,
    database_t: np.ndarray | sp.spmatrix,
    relevance: Relevance,
    cutoffs: Sequence[int],
) -> np.ndarray:
    """Relevant documents among the K highest scores, score = queries @ database_t: (q, d) @ (d, n).

    Returns (q, len(cutoffs)) float64.
    """
    cut = np.asarray(cutoffs)
    n = database_t.shape[1]
    out = np.empty((queries.shape[0], len(cut)))
    for start in range(0, queries.shape[0], CHUNK):
        scores = queries[start : start + CHUNK] @ database_t
        scores = scores.toarray() if sp.issparse(scores) else np.asarray(scores)
        order = np.argsort(-scores, axis=1, kind="stable")
        rel = np.take_along_axis(relevance.block(start, start + scores.shape[0]), order, axis=1)
        cum = np.cumsum(rel, axis=1)
        out[start : start + CHUNK] = cum[:, np.minimum(cut, n) - 1]
    return out


def _normalise(x: np.ndarray | sp.spmatrix) -> np.ndarray | sp.csr_matrix:
    if sp.issparse(x):
        x = sp.csr_matrix(x, dtype=np.float32)
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
        return sp.csr_matrix(sp.diags(1.0 / np.maximum(norms, 1e-12)) @ x)
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def precision_recall(
    relevant_at: np.ndarray, cutoffs: Sequence[int], n_relevant: np.ndarray
) -> dict[str, list[float]]:
    """Mean precision and recall over queries at each cut-off, from (q, len(cutoffs)) relevant counts."""
    cut = np.asarray(cutoffs, dtype=np.float64)
    precision = (relevant_at / cut[None, :]).mean(axis=0)
    recall = (relevant_at / np.maximum(n_relevant, 1)[:, None]).mean(axis=0)
    return {"retrieved": [int(k) for k in cut], "precision": precision.tolist(), "recall": recall.tolist()}


def pr_cutoffs(database_size: int) -> list[int]:
    """Log-spaced cut-offs 1, 2, 4, ... and the whole database, for precision-recall curves."""
    cutoffs = [2**i for i in range(int(np.log2(database_size)) + 1)]
    return [*cutoffs, database_size] if cutoffs[-1] != database_size else cutoffs
