"""Short queries on held-out training documents: query encoder against document encoders.

Database: the fit documents, encoded by the document encoders (as the service indexes them).
Queries: the subject lines of the held-out documents (>= `min_subject_words` tokens, "Re:" stripped),
or their first n words. Relevant: a shared label. Measured for each encoder:

* `long_p_at_10`: precision@10 of Hamming ranking of the whole database by the long code (bits p > 1/2);
* `shortlist_p_at_10[name]`: precision@10 after a shortlist (a Hamming ball of radius r around the
  most likely address, or the first `budget` addresses of multi-probe, `bundles.probes`), stopping
  at `shortlist_size` documents, reranked by long-code Hamming distance; an empty slot is a miss;
* `fraction_touched[name]`: the shortlist's mean size over the database size.

`short_query_max_tokens`: for queries of the first n tokens of held-out bodies (n in LENGTHS
document-vocabulary tokens), the smallest n at which the document encoders rank at least as well
as the query encoder (long_p_at_10); shorter queries go to the query encoder.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from itertools import combinations
from typing import Any

import numpy as np

from bundles.probes import probe_addresses
from bundles.query import QueryEncoder
from bundles.text import QueryProbabilities, TextBundle, pack_addresses
from bundles.text_features import tokenize
from training.corpus import Corpus
from training.query_samples import split_headers, subject_line
from training.retrieval import Relevance, hamming_relevant_at

LENGTHS = (2, 4, 8, 16, 32, 64)
SHORTLISTS = {
    "ball_r2": ("ball", 2),
    "ball_r3": ("ball", 3),
    "probe_256": ("probe", 256),
    "probe_1024": ("probe", 1024),
}


def encode_both(
    bundle: TextBundle, encoder: QueryEncoder, texts: Sequence[str]
) -> dict[str, QueryProbabilities]:
    """Probabilities of `texts` from the query encoder and from the document encoders."""
    document = bundle.encode_query(texts, encoder="document")
    counts = encoder.counts(texts)
    address, long = encoder.probabilities(counts)
    known = np.asarray(counts.sum(axis=1)).ravel() > 0
    return {"query": QueryProbabilities(address, long, known, "query"), "document": document}


def ball_masks(bits: int, radius: int) -> list[int]:
    """XOR masks of every address within Hamming distance `radius`, nearest first."""
    return [sum(1 << j for j in flips) for r in range(radius + 1) for flips in combinations(range(bits), r)]


class AddressTable:
    """Database rows by address, for shortlists (the service's index does this for real)."""

    def __init__(self, addresses: np.ndarray, long_bits: np.ndarray, address_bits: int):
        self.rows: dict[int, list[int]] = defaultdict(list)
        for row, address in enumerate(addresses.tolist()):
            self.rows[address].append(row)
        self.long_bits, self.address_bits = long_bits, address_bits

    def shortlist(self, probes: Sequence[int], size: int) -> np.ndarray:
        found: list[int] = []
        for address in probes:
            found.extend(self.rows.get(int(address), ()))
            if len(found) >= size:
                break
        return np.asarray(found[:size], dtype=np.int64)

    def ranked(
        self, query: QueryProbabilities, i: int, kind: str, param: int, size: int, k: int
    ) -> tuple[np.ndarray, int]:
        """The top k rows of query i's shortlist by long-code distance, and the shortlist's size."""
        if kind == "ball":
            base = int(pack_addresses(query.address[i : i + 1] > 0.5)[0])
            probes = [base ^ mask for mask in ball_masks(self.address_bits, param)]
        else:
            probes = probe_addresses(query.address[i], param).tolist()
        rows = self.shortlist(probes, size)
        distances = (self.long_bits[rows] != (query.long[i] > 0.5)).sum(axis=1)
        return rows[np.argsort(distances, kind="stable")[:k]], len(rows)


def retrieval_metrics(
    probabilities: QueryProbabilities,
    table: AddressTable,
    relevance: Relevance,
    query_labels: np.ndarray,
    database_labels: np.ndarray,
    shortlist_size: int,
) -> dict[str, Any]:
    """P@10 of long-code ranking and of each shortlist (see the module docstring)."""
    queries = probabilities.long > 0.5
    long_p10 = hamming_relevant_at(queries, table.long_bits, relevance, [10])[:, 0] / 10
    out: dict[str, Any] = {
        "long_p_at_10": float(long_p10.mean()),
        "shortlist_p_at_10": {},
        "fraction_touched": {},
    }
    n = len(database_labels)
    for name, (kind, param) in SHORTLISTS.items():
        hits, touched = [], []
        for i in range(len(queries)):
            top, size = table.ranked(probabilities, i, kind, param, shortlist_size, 10)
            hits.append(float((database_labels[top] == query_labels[i]).sum()) / 10)
            touched.append(size / n)
        out["shortlist_p_at_10"][name] = float(np.mean(hits))
        out["fraction_touched"][name] = float(np.mean(touched))
    return out


def first_tokens(text: str, n: int, vocabulary: set[str]) -> str:
    """The body's first tokens up to and including its n-th token of `vocabulary`, as text."""
    kept, known = [], 0
    for token in tokenize(split_headers(text)[1]):
        kept.append(token)
        known += token in vocabulary
        if known >= n:
            break
    return " ".join(kept)


def measure_query_encoder(
    bundle: TextBundle,
    encoder: QueryEncoder,
    corpus: Corpus,
    held: np.ndarray,
    fit: np.ndarray,
    *,
    min_subject_words: int = 3,
    shortlist_size: int = 300,
    default_max_tokens: int = 20,
) -> dict[str, Any]:
    """Subject-line metrics of both encoders and `short_query_max_tokens` (labelled corpora only)."""
    labels = corpus.labels
    if labels is None:
        return {"short_query_max_tokens": default_max_tokens, "subject_queries": 0}
    label_ids = {name: i for i, name in enumerate(sorted(set(labels)))}
    all_labels = np.array([label_ids[name] for name in labels])
    counts = bundle.counts([corpus.texts[i] for i in fit])
    database_long = bundle.code_bits("long", counts)
    table = AddressTable(
        pack_addresses(bundle.code_bits("address", counts)), database_long, bundle.address_bits
    )
    subjects = [(i, subject_line(corpus.texts[i])) for i in held]
    subjects = [(i, s) for i, s in subjects if s and len(s.split()) >= min_subject_words]
    rows = np.array([i for i, _ in subjects], dtype=np.int64)
    relevance = Relevance.from_labels([(labels[i],) for i in rows], [(labels[i],) for i in fit])
    out: dict[str, Any] = {
        "subject_queries": len(rows),
        "database": len(fit),
        "shortlist_size": shortlist_size,
    }
    for name, probabilities in encode_both(bundle, encoder, [s for _, s in subjects]).items():
        metrics = retrieval_metrics(
            probabilities, table, relevance, all_labels[rows], all_labels[fit], shortlist_size
        )
        out[f"subject_{name}"] = {**metrics, "unknown_fraction": float(1 - probabilities.known.mean())}
    held_relevance = Relevance.from_labels([(labels[i],) for i in held], [(labels[i],) for i in fit])
    by_length: dict[str, dict[str, float]] = {}
    threshold = max(LENGTHS) + 1
    vocabulary = set(bundle.vocabulary)
    for n in LENGTHS:
        texts = [first_tokens(corpus.texts[i], n, vocabulary) for i in held]
        scores = {}
        for name, probabilities in encode_both(bundle, encoder, texts).items():
            p10 = (
                hamming_relevant_at(probabilities.long > 0.5, database_long, held_relevance, [10])[:, 0] / 10
            )
            scores[name] = float(p10.mean())
        by_length[str(n)] = scores
        if scores["document"] >= scores["query"] and threshold > max(LENGTHS):
            threshold = n
    out["first_tokens_long_p_at_10"] = by_length
    out["short_query_max_tokens"] = threshold
    return out
