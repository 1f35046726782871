"""Simple retrieval baselines computed on the same split as the codes (slide 80's comparison).

* TF-IDF cosine full scan, over the model's vocabulary (`tfidf_vocab`) and over every non-stop word
  of the database documents (`tfidf_full`; the same tokenizer, smooth idf, L2 rows).
* BM25 (Robertson & Zaragoza, Lucene's idf) over the full vocabulary, the query document's term
  counts as query weights:

      score(q, d) = sum_t qtf_t * idf_t * tf_td (k1 + 1) / (tf_td + k1 (1 - b + b |d| / avgdl)),
      idf_t = ln(1 + (n - df_t + 0.5) / (df_t + 0.5)),   k1 = 1.2, b = 0.75.

* LSA: TruncatedSVD of the TF-IDF matrix, cosine; at each size over the model's vocabulary (`lsa`)
  and over the full vocabulary (`lsa_full`).
* LSH: random-hyperplane sign bits of the vocabulary TF-IDF, Hamming.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from bundles.text_features import TOKEN_PATTERN
from training.retrieval import (
    Relevance,
    cosine_relevant_at,
    hamming_relevant_at,
    pr_cutoffs,
    precision_recall,
    score_relevant_at,
)

log = logging.getLogger(__name__)

TOP = 100  # precision@TOP is the headline number
BM25_K1, BM25_B = 1.2, 0.75


@dataclass
class FullVocabulary:
    """Term counts of database and query documents over every non-stop word of the database."""

    database_counts: sp.csr_matrix  # (n, W)
    query_counts: sp.csr_matrix  # (q, W)
    database_tfidf: sp.csr_matrix  # (n, W) L2 rows
    query_tfidf: sp.csr_matrix  # (q, W)


def full_vocabulary(database_texts: Sequence[str], query_texts: Sequence[str]) -> FullVocabulary:
    """Counts and TF-IDF (smooth idf, L2) over the database's full vocabulary, scikit-learn's tokens."""
    from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer

    vectorizer = CountVectorizer(token_pattern=TOKEN_PATTERN, stop_words="english", dtype=np.float32)
    database = sp.csr_matrix(vectorizer.fit_transform(database_texts))
    queries = sp.csr_matrix(vectorizer.transform(query_texts))
    weighting = TfidfTransformer().fit(database)
    return FullVocabulary(
        database,
        queries,
        sp.csr_matrix(weighting.transform(database), dtype=np.float32),
        sp.csr_matrix(weighting.transform(queries), dtype=np.float32),
    )


def bm25_database(counts: sp.csr_matrix, k1: float = BM25_K1, b: float = BM25_B) -> sp.csr_matrix:
    """(n, W) term counts -> (n, W) BM25 term weights idf_t * saturated tf (see the module docstring)."""
    n = counts.shape[0]
    lengths = np.asarray(counts.sum(axis=1)).ravel()
    norm = k1 * (1 - b + b * lengths / max(lengths.mean(), 1e-12))  # (n,)
    weighted = sp.csr_matrix(counts, dtype=np.float32, copy=True)
    rows = np.repeat(np.arange(n), np.diff(weighted.indptr))
    weighted.data = weighted.data * (k1 + 1) / (weighted.data + norm[rows])
    df = np.bincount(weighted.indices, minlength=counts.shape[1])
    idf = np.log1p((n - df + 0.5) / (df + 0.5)).astype(np.float32)
    return sp.csr_matrix(weighted @ sp.diags(idf))


def cutoffs_for(n: int) -> list[int]:
    return sorted({*pr_cutoffs(n), TOP})


def ranking_metrics(relevant_at: np.ndarray, cutoffs: Sequence[int], relevance: Relevance) -> dict[str, Any]:
    """precision@TOP and the PR curve from (q, len(cutoffs)) relevant counts (TOP must be a cut-off)."""
    curve = precision_recall(relevant_at, cutoffs, relevance.counts)
    return {"precision_at_100": curve["precision"][list(cutoffs).index(TOP)], "pr_curve": curve}


def baseline_metrics(
    relevance: Relevance,
    vocab: tuple[sp.csr_matrix, sp.csr_matrix],
    full: FullVocabulary,
    bits: Sequence[int],
    seed: int,
) -> dict[str, Any]:
    """Every baseline of the module docstring; `vocab` = (database, query) TF-IDF over the model's words."""
    from sklearn.decomposition import TruncatedSVD

    database_vocab, query_vocab = vocab
    cutoffs = cutoffs_for(database_vocab.shape[0])
    results: dict[str, Any] = {}
    rankings: dict[str, Callable[[], np.ndarray]] = {
        "tfidf_vocab": lambda: cosine_relevant_at(query_vocab, database_vocab, relevance, cutoffs),
        "tfidf_full": lambda: cosine_relevant_at(full.query_tfidf, full.database_tfidf, relevance, cutoffs),
        "bm25": lambda: score_relevant_at(
            full.query_counts, bm25_database(full.database_counts).T.tocsr(), relevance, cutoffs
        ),
    }
    for name, ranking in rankings.items():
        log.info("baseline %s", name)
        results[name] = ranking_metrics(ranking(), cutoffs, relevance)
    rng = np.random.default_rng(seed)
    results["lsa"], results["lsa_full"], results["lsh"] = {}, {}, {}
    for size in bits:
        log.info("baselines LSA and LSH at %d dimensions / bits", size)
        for key, (database, queries) in {
            "lsa": (database_vocab, query_vocab),
            "lsa_full": (full.database_tfidf, full.query_tfidf),
        }.items():
            dimensions = min(size, database.shape[1] - 1)  # SVD needs fewer than V components
            svd = TruncatedSVD(n_components=dimensions, random_state=seed).fit(database)
            relevant = cosine_relevant_at(svd.transform(queries), svd.transform(database), relevance, cutoffs)
            results[key][str(size)] = {
                **ranking_metrics(relevant, cutoffs, relevance),
                "dimensions": dimensions,
            }
        planes = rng.standard_normal((database_vocab.shape[1], size)).astype(np.float32)
        relevant = hamming_relevant_at(
            np.asarray(query_vocab @ planes) > 0, np.asarray(database_vocab @ planes) > 0, relevance, cutoffs
        )
        results["lsh"][str(size)] = ranking_metrics(relevant, cutoffs, relevance)
    return results


def best_lsa(baselines: dict[str, Any], size: int) -> float:
    """The better of LSA over the model's vocabulary and over the full vocabulary at `size` dimensions."""
    return max(baselines[key][str(size)]["precision_at_100"] for key in ("lsa", "lsa_full"))
