"""Evaluation of text codes by the literature's protocol, with baselines computed on the same split.

Protocol: database = training documents, queries = test documents, a database document is relevant
to a query iff they share a label. Reported per method (see `training.retrieval` for tie handling):

* precision@100 and a precision-recall curve (cut-offs 1, 2, 4, ..., all) by Hamming ranking of codes;
* for the address code, Hamming-ball shortlists of radius 0..4: mean size, share of the database
  touched, precision and recall of the shortlist, and precision@100 after reranking the shortlist by
  TF-IDF cosine; the same for the radius-3 ball capped at 2% of the database, nearest addresses first
  (what the service's `shortlist` does). A shortlist shorter than 100 is scored over what it returns
  (precision = relevant / min(100, size); an empty shortlist scores 0); `strict` divides by 100;
* code bimodality (share of code activations below 0.1 or above 0.9) and dead bits (constant over the
  database);
* baselines: TF-IDF cosine full scan over the model's vocabulary (`tfidf_vocab`) and over the full
  vocabulary of the training documents (`tfidf_full`), LSA (TruncatedSVD of the vocabulary TF-IDF,
  cosine) and LSH (random-hyperplane sign bits of the vocabulary TF-IDF, Hamming) at each code size.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from training.corpus import Corpus
from training.retrieval import (
    CHUNK,
    cosine_relevant_at,
    hamming_distances,
    hamming_relevant_at,
    label_ids,
    pr_cutoffs,
    precision_recall,
)
from training.text_bundle import CODES, TextBundle
from training.text_features import TOKEN_PATTERN
from training.text_plots import plot_document_map, plot_pr_curves

log = logging.getLogger(__name__)

TOP = 100  # precision@TOP is the headline number
RADII = (0, 1, 2, 3, 4)
# The service caps a shortlist at a number of documents (`shortlist`), nearest addresses first; at
# 2% of the database a radius-3 search touches under 2% of it by construction.
CAPPED_FRACTION = 0.02


@dataclass
class Split:
    """Database and query documents with their vocabulary TF-IDF and labels."""

    database_tfidf: sp.csr_matrix  # (n, V)
    query_tfidf: sp.csr_matrix  # (q, V)
    database_labels: np.ndarray  # (n,) int
    query_labels: np.ndarray  # (q,) int
    label_names: list[str]

    @property
    def relevant_counts(self) -> np.ndarray:
        """(q,) number of relevant database documents per query."""
        per_label = np.bincount(self.database_labels, minlength=len(self.label_names))
        return per_label[self.query_labels]


def make_split(
    database: Corpus, queries: Corpus, database_tfidf: sp.csr_matrix, query_tfidf: sp.csr_matrix
) -> Split:
    """Index the labels of both sides consistently; refuses unlabelled corpora."""
    if database.labels is None or queries.labels is None:
        raise ValueError("evaluation needs labelled database and query documents")
    ids, names = label_ids(database.labels + queries.labels)
    return Split(database_tfidf, query_tfidf, ids[: len(database)], ids[len(database) :], names)


def ranking_metrics(relevant_at: np.ndarray, cutoffs: Sequence[int], split: Split) -> dict[str, Any]:
    """precision@TOP and the PR curve from (q, len(cutoffs)) relevant counts (TOP must be a cut-off)."""
    curve = precision_recall(relevant_at, cutoffs, split.relevant_counts)
    return {"precision_at_100": curve["precision"][list(cutoffs).index(TOP)], "pr_curve": curve}


def cutoffs_for(split: Split) -> list[int]:
    return sorted({*pr_cutoffs(len(split.database_labels)), TOP})


def code_metrics(
    database_activations: np.ndarray, query_activations: np.ndarray, split: Split
) -> dict[str, Any]:
    """Hamming ranking by codes = activations > 0.5, plus bimodality and dead bits of the database codes."""
    database_bits, query_bits = database_activations > 0.5, query_activations > 0.5
    cutoffs = cutoffs_for(split)
    relevant = hamming_relevant_at(
        query_bits, database_bits, split.query_labels, split.database_labels, cutoffs
    )
    on = database_bits.mean(axis=0)
    return {
        **ranking_metrics(relevant, cutoffs, split),
        "bimodal_fraction": float(((database_activations < 0.1) | (database_activations > 0.9)).mean()),
        "dead_bits": int(((on == 0) | (on == 1)).sum()),
        "bit_balance_min": float(np.minimum(on, 1 - on).min()),
    }


def capped_ball(inside: np.ndarray, distance: np.ndarray, cap: int) -> np.ndarray:
    """The first `cap` documents of each row's ball, nearest address first (ties: database order),
    as the service's lookup returns them when its shortlist is capped. (q, n) bool -> (q, n) bool."""
    n = inside.shape[1]
    if cap >= n:
        return inside
    key = np.where(inside, distance.astype(np.int64) * n + np.arange(n), np.iinfo(np.int64).max)
    first = np.argpartition(key, cap - 1, axis=1)[:, :cap]
    capped = np.zeros_like(inside)
    np.put_along_axis(capped, first, np.take_along_axis(inside, first, axis=1), axis=1)
    return capped


def shortlist_metrics(
    database_bits: np.ndarray,
    query_bits: np.ndarray,
    split: Split,
    rerank: Mapping[str, tuple[sp.csr_matrix, sp.csr_matrix]],
) -> list[dict[str, float]]:
    """Hamming-ball shortlists of the address code at each radius, reranked by each TF-IDF in `rerank`,
    and the radius-3 ball capped at CAPPED_FRACTION of the database (nearest addresses first).

    `rerank`: name -> (database TF-IDF, query TF-IDF), both L2-normalised.
    """
    n, q = len(database_bits), len(query_bits)
    # (radius, most documents as a share of the database): every ball whole, then radius 3 capped.
    shortlists = [(radius, 1.0) for radius in RADII] + [(3, CAPPED_FRACTION)]
    size = np.zeros((len(shortlists), q))
    hits = np.zeros((len(shortlists), q))
    reranked = {name: np.zeros((len(shortlists), q)) for name in rerank}
    relevant_total = split.relevant_counts
    for start in range(0, q, CHUNK):
        stop = min(q, start + CHUNK)
        distance = hamming_distances(query_bits[start:stop], database_bits)
        relevant = split.query_labels[start:stop, None] == split.database_labels[None, :]
        scores = {
            name: np.asarray((query_tfidf[start:stop] @ database_tfidf.T).todense())
            for name, (database_tfidf, query_tfidf) in rerank.items()
        }
        for i, (radius, cap_fraction) in enumerate(shortlists):
            inside = distance <= radius
            if cap_fraction < 1.0:
                inside = capped_ball(inside, distance, int(cap_fraction * n))
            size[i, start:stop] = inside.sum(axis=1)
            hits[i, start:stop] = (inside & relevant).sum(axis=1)
            for name, score in scores.items():
                masked = np.where(inside, score, -np.inf)
                top = np.argpartition(-masked, min(TOP, n - 1), axis=1)[:, :TOP]
                kept = np.isfinite(np.take_along_axis(masked, top, axis=1))
                reranked[name][i, start:stop] = (np.take_along_axis(relevant, top, axis=1) & kept).sum(axis=1)
    rows = []
    for i, (radius, cap_fraction) in enumerate(shortlists):
        returned = np.minimum(size[i], TOP)
        row = {
            "radius": radius,
            "cap_fraction": cap_fraction,
            "mean_size": float(size[i].mean()),
            "fraction_touched": float(size[i].mean() / n),
            "empty_fraction": float((size[i] == 0).mean()),
            "precision": float(np.divide(hits[i], size[i], out=np.zeros(q), where=size[i] > 0).mean()),
            "recall": float((hits[i] / np.maximum(relevant_total, 1)).mean()),
        }
        for name, found in reranked.items():
            row[f"{name}_rerank_precision_at_100"] = float(
                np.divide(found[i], returned, out=np.zeros(q), where=returned > 0).mean()
            )
            row[f"{name}_rerank_precision_at_100_strict"] = float((found[i] / TOP).mean())
        rows.append(row)
    return rows


def full_vocabulary_tfidf(database: Corpus, queries: Corpus) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """TF-IDF over every non-stop word of the database documents (same tokenizer, smooth idf, L2)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(token_pattern=TOKEN_PATTERN, stop_words="english", dtype=np.float32)
    return vectorizer.fit_transform(database.texts), vectorizer.transform(queries.texts)


def baseline_metrics(
    split: Split, full: tuple[sp.csr_matrix, sp.csr_matrix], bits: Sequence[int], seed: int
) -> dict[str, Any]:
    """TF-IDF (vocabulary and full), LSA and LSH at each size in `bits`."""
    from sklearn.decomposition import TruncatedSVD

    cutoffs = cutoffs_for(split)
    results: dict[str, Any] = {}
    for name, (database, queries) in {
        "tfidf_vocab": (split.database_tfidf, split.query_tfidf),
        "tfidf_full": full,
    }.items():
        log.info("baseline %s", name)
        relevant = cosine_relevant_at(queries, database, split.query_labels, split.database_labels, cutoffs)
        results[name] = ranking_metrics(relevant, cutoffs, split)
    rng = np.random.default_rng(seed)
    results["lsa"], results["lsh"] = {}, {}
    for size in bits:
        log.info("baselines LSA and LSH at %d dimensions / bits", size)
        dimensions = min(size, split.database_tfidf.shape[1] - 1)  # SVD needs fewer than V components
        svd = TruncatedSVD(n_components=dimensions, random_state=seed).fit(split.database_tfidf)
        relevant = cosine_relevant_at(
            svd.transform(split.query_tfidf),
            svd.transform(split.database_tfidf),
            split.query_labels,
            split.database_labels,
            cutoffs,
        )
        results["lsa"][str(size)] = {**ranking_metrics(relevant, cutoffs, split), "dimensions": dimensions}
        planes = rng.standard_normal((split.database_tfidf.shape[1], size)).astype(np.float32)
        relevant = hamming_relevant_at(
            np.asarray(split.query_tfidf @ planes) > 0,
            np.asarray(split.database_tfidf @ planes) > 0,
            split.query_labels,
            split.database_labels,
            cutoffs,
        )
        results["lsh"][str(size)] = ranking_metrics(relevant, cutoffs, split)
    return results


def summarise(
    codes: Mapping[int, dict[str, Any]],
    baselines: Mapping[str, Any],
    shortlist: Sequence[Mapping[str, float]],
) -> dict[str, Any]:
    """The headline keys of `benchmarks/results/text_20news.json` from per-size code metrics."""
    at_r3 = next(row for row in shortlist if row["radius"] == 3 and row.get("cap_fraction", 1.0) == 1.0)
    # Absent from results written before the capped shortlist was measured: then None.
    capped = next((row for row in shortlist if row.get("cap_fraction", 1.0) < 1.0), {})
    return {
        "precision_at_100": {
            "semantic_hashing": {str(b): m["precision_at_100"] for b, m in sorted(codes.items())},
            "tfidf_vocab": baselines["tfidf_vocab"]["precision_at_100"],
            "tfidf_full": baselines["tfidf_full"]["precision_at_100"],
            "lsa": {b: m["precision_at_100"] for b, m in baselines["lsa"].items()},
            "lsh": {b: m["precision_at_100"] for b, m in baselines["lsh"].items()},
            "address_r3_tfidf_rerank": at_r3["tfidf_vocab_rerank_precision_at_100"],
            "address_r3_capped_tfidf_rerank": capped.get("tfidf_vocab_rerank_precision_at_100"),
        },
        "address_r3_fraction_touched": at_r3["fraction_touched"],
        "address_r3_capped_fraction_touched": capped.get("fraction_touched"),
        "bimodal_fraction": {str(b): m["bimodal_fraction"] for b, m in sorted(codes.items())},
        "dead_bits": {str(b): m["dead_bits"] for b, m in sorted(codes.items())},
    }


def evaluate_text_bundle(
    bundle: TextBundle,
    database: Corpus,
    queries: Corpus,
    *,
    baseline_bits: Sequence[int] = (16, 32, 64, 128),
    plots_dir: Path | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """All metrics of the module docstring for the bundle's address and long codes.

    Documents without any vocabulary word have no code (EmptyDocumentError at encoding time), so they
    are left out of both sides and counted in the result.
    """
    database_counts, query_counts = bundle.counts(database.texts), bundle.counts(queries.texts)
    keep_database = np.flatnonzero(np.asarray(database_counts.sum(axis=1)).ravel() > 0)
    keep_queries = np.flatnonzero(np.asarray(query_counts.sum(axis=1)).ravel() > 0)
    skipped = {"database": len(database) - len(keep_database), "queries": len(queries) - len(keep_queries)}
    database, queries = database.subset(keep_database.tolist()), queries.subset(keep_queries.tolist())
    database_counts, query_counts = database_counts[keep_database], query_counts[keep_queries]
    split = make_split(database, queries, bundle.tfidf(database_counts), bundle.tfidf(query_counts))
    full = full_vocabulary_tfidf(database, queries)
    activations = {
        code: (bundle.code_activations(code, database_counts), bundle.code_activations(code, query_counts))
        for code in CODES
    }
    codes = {}
    for code in CODES:
        log.info("Hamming ranking of the %s code", code)
        codes[getattr(bundle, f"{code}_bits")] = code_metrics(*activations[code], split)
    log.info("address shortlists at radius %s", RADII)
    address_database, address_queries = (a > 0.5 for a in activations["address"])
    shortlist = shortlist_metrics(
        address_database,
        address_queries,
        split,
        {"tfidf_vocab": (split.database_tfidf, split.query_tfidf), "tfidf_full": full},
    )
    baselines = baseline_metrics(split, full, baseline_bits, seed)
    results = {
        "bundle": bundle.bundle_id,
        "protocol": {
            "database": database.source,
            "queries": queries.source,
            "database_size": len(database),
            "queries_size": len(queries),
            "skipped_empty": skipped,
            "relevance": "same label",
            "ties": "expected value under random order within equal Hamming distance",
        },
        **summarise(codes, baselines, shortlist),
        "address_shortlist": shortlist,
        "codes": codes,
        "baselines": baselines,
    }
    if plots_dir is not None:
        results["plots"] = write_plots(results, activations["long"][1], split, plots_dir, seed)
    return results


def write_plots(
    results: Mapping[str, Any], query_activations: np.ndarray, split: Split, plots_dir: Path, seed: int
) -> list[str]:
    """PR curves of every method and a t-SNE map of the query documents' long codes."""
    curves = {f"semantic hashing {b} bits": m["pr_curve"] for b, m in results["codes"].items()}
    baselines = results["baselines"]
    curves |= {name: baselines[name]["pr_curve"] for name in ("tfidf_vocab", "tfidf_full")}
    for size in sorted(baselines["lsa"], key=int):
        curves[f"LSA {size}"] = baselines["lsa"][size]["pr_curve"]
        curves[f"LSH {size}"] = baselines["lsh"][size]["pr_curve"]
    pr = plot_pr_curves(
        curves, plots_dir / "pr_curves.png", "20 Newsgroups: test queries vs training database"
    )
    tsne = plot_document_map(
        query_activations,
        split.query_labels,
        split.label_names,
        plots_dir / "code_map.png",
        "t-SNE of long-code activations of test documents",
        seed=seed,
    )
    return [str(pr), str(tsne)]
