"""Evaluation of text codes by the literature's protocol, with baselines computed on the same split.

Protocol: database = training documents, queries = test documents. Relevance (`training.retrieval.
Relevance`): single-label corpora, the same label; multi-label corpora, at least one shared label;
unlabelled corpora, the query's 100 nearest database documents by full-vocabulary TF-IDF cosine (so
precision@100 is the agreement of the code's neighbours with TF-IDF's, and `tfidf_full` scores 1 by
construction). Reported per method (see `training.retrieval` for tie handling):

* precision@100 and a precision-recall curve (cut-offs 1, 2, 4, ..., all) by Hamming ranking of codes;
* for the address code, Hamming-ball shortlists of radius 0..4: mean size, share of the database
  touched, precision and recall of the shortlist, and precision@100 after reranking the shortlist by
  TF-IDF cosine; the same for the radius-3 ball capped at 2% of the database, nearest addresses first
  (what the service's `shortlist` does). A shortlist shorter than 100 is scored over what it returns
  (precision = relevant / min(100, size); an empty shortlist scores 0); `strict` divides by 100;
* occupancy of the database codes (`training.occupancy`: distinct addresses, crowding, ball sizes,
  bit balance and correlation), code bimodality (share of code activations below 0.1 or above 0.9)
  and dead bits (constant over the database);
* baselines (`training.text_baselines`): TF-IDF, BM25, LSA and LSH.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from bundles.text import CODES, TextBundle
from training.corpus import Corpus
from training.occupancy import occupancy
from training.retrieval import CHUNK, Relevance, hamming_distances, hamming_relevant_at, label_ids
from training.text_baselines import (
    TOP,
    FullVocabulary,
    baseline_metrics,
    best_lsa,
    cutoffs_for,
    full_vocabulary,
    ranking_metrics,
)
from training.text_plots import plot_document_map, plot_pr_curves

log = logging.getLogger(__name__)

RADII = (0, 1, 2, 3, 4)
# The service caps a shortlist at a number of documents (`shortlist`), nearest addresses first; at
# 2% of the database a radius-3 search touches under 2% of it by construction.
CAPPED_FRACTION = 0.02


@dataclass
class Split:
    """Database and query documents with their vocabulary TF-IDF and which pairs are relevant."""

    database_tfidf: sp.csr_matrix  # (n, V)
    query_tfidf: sp.csr_matrix  # (q, V)
    relevance: Relevance
    relevance_kind: str  # "same label", "shared label" or "tfidf_full top-100 neighbours"
    map_labels: np.ndarray | None = None  # (q,) int label per query for the t-SNE map (first label)
    map_label_names: list[str] | None = None

    @property
    def database_size(self) -> int:
        return int(self.database_tfidf.shape[0])


def tfidf_neighbours(full: FullVocabulary, k: int = TOP) -> np.ndarray:
    """(q, k) rows of each query's k most cosine-similar database documents (full-vocabulary TF-IDF)."""
    n = full.database_tfidf.shape[0]
    k = min(k, n)
    out = np.empty((full.query_tfidf.shape[0], k), dtype=np.int64)
    for start in range(0, len(out), CHUNK):
        scores = (full.query_tfidf[start : start + CHUNK] @ full.database_tfidf.T).toarray()
        out[start : start + CHUNK] = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return out


def make_split(
    database: Corpus,
    queries: Corpus,
    database_tfidf: sp.csr_matrix,
    query_tfidf: sp.csr_matrix,
    full: FullVocabulary | None = None,
) -> Split:
    """Relevance from the labels of both sides, or, when either side is unlabelled, from `full`'s
    TF-IDF neighbours (then `full` is needed)."""
    database_sets, query_sets = database.relevance_labels(), queries.relevance_labels()
    if database_sets is None or query_sets is None:
        if full is None:
            raise ValueError(
                "an unlabelled corpus needs the full-vocabulary TF-IDF (its reference neighbours)"
            )
        relevance = Relevance.from_neighbours(tfidf_neighbours(full), len(database))
        return Split(database_tfidf, query_tfidf, relevance, f"tfidf_full top-{TOP} neighbours")
    relevance = Relevance.from_labels(query_sets, database_sets)
    kind = "shared label" if relevance.multi_label else "same label"
    first, names = label_ids([labels[0] if labels else "(none)" for labels in query_sets])
    return Split(database_tfidf, query_tfidf, relevance, kind, first, names)


def code_metrics(
    database_activations: np.ndarray, query_activations: np.ndarray, split: Split
) -> dict[str, Any]:
    """Hamming ranking by codes = activations > 0.5, plus bimodality and dead bits of the database codes."""
    database_bits, query_bits = database_activations > 0.5, query_activations > 0.5
    cutoffs = cutoffs_for(split.database_size)
    relevant = hamming_relevant_at(query_bits, database_bits, split.relevance, cutoffs)
    on = database_bits.mean(axis=0)
    return {
        **ranking_metrics(relevant, cutoffs, split.relevance),
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
    relevant_total = split.relevance.counts
    for start in range(0, q, CHUNK):
        stop = min(q, start + CHUNK)
        distance = hamming_distances(query_bits[start:stop], database_bits)
        relevant = split.relevance.block(start, stop)
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


def summarise(
    codes: Mapping[int, dict[str, Any]],
    baselines: Mapping[str, Any],
    shortlist: Sequence[Mapping[str, float]],
) -> dict[str, Any]:
    """The headline keys of `benchmarks/results/text_20news.json` from per-size code metrics."""
    at_r3 = next(row for row in shortlist if row["radius"] == 3 and row.get("cap_fraction", 1.0) == 1.0)
    # Absent from results written before the capped shortlist was measured: then None.
    capped = next((row for row in shortlist if row.get("cap_fraction", 1.0) < 1.0), {})
    lsa = {b: best_lsa(baselines, int(b)) if "lsa_full" in baselines else None for b in baselines["lsa"]}
    return {
        "precision_at_100": {
            "semantic_hashing": {str(b): m["precision_at_100"] for b, m in sorted(codes.items())},
            "tfidf_vocab": baselines["tfidf_vocab"]["precision_at_100"],
            "tfidf_full": baselines["tfidf_full"]["precision_at_100"],
            # absent from results written before BM25 and full-vocabulary LSA were measured
            "bm25": baselines.get("bm25", {}).get("precision_at_100"),
            "lsa": {b: m["precision_at_100"] for b, m in baselines["lsa"].items()},
            "lsa_full": {b: m["precision_at_100"] for b, m in baselines.get("lsa_full", {}).items()},
            "lsh": {b: m["precision_at_100"] for b, m in baselines["lsh"].items()},
            "address_r3_tfidf_rerank": at_r3["tfidf_vocab_rerank_precision_at_100"],
            "address_r3_capped_tfidf_rerank": capped.get("tfidf_vocab_rerank_precision_at_100"),
            "lsa_best": lsa,  # the better of vocabulary and full-vocabulary LSA, per size
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
    corpus_name: str | None = None,
    baselines: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """All metrics of the module docstring for the bundle's address and long codes.

    Documents without any vocabulary word have no code (EmptyDocumentError at encoding time), so they
    are left out of both sides and counted in the result. `corpus_name` titles the plots (default:
    the database's source). `baselines`: results of `baseline_metrics` on the same documents, reused.
    """
    database_counts, query_counts = bundle.counts(database.texts), bundle.counts(queries.texts)
    keep_database = np.flatnonzero(np.asarray(database_counts.sum(axis=1)).ravel() > 0)
    keep_queries = np.flatnonzero(np.asarray(query_counts.sum(axis=1)).ravel() > 0)
    skipped = {"database": len(database) - len(keep_database), "queries": len(queries) - len(keep_queries)}
    database, queries = database.subset(keep_database.tolist()), queries.subset(keep_queries.tolist())
    database_counts, query_counts = database_counts[keep_database], query_counts[keep_queries]
    full = full_vocabulary(database.texts, queries.texts)
    split = make_split(database, queries, bundle.tfidf(database_counts), bundle.tfidf(query_counts), full)
    activations = {
        code: (bundle.code_activations(code, database_counts), bundle.code_activations(code, query_counts))
        for code in CODES
    }
    results = evaluate_activations(
        activations["address"], activations["long"], split, full, baseline_bits, seed, baselines
    )
    results = {
        "bundle": bundle.bundle_id,
        "protocol": {
            "database": database.source,
            "queries": queries.source,
            "database_size": len(database),
            "queries_size": len(queries),
            "skipped_empty": skipped,
            "relevance": split.relevance_kind,
            "ties": "expected value under random order within equal Hamming distance",
        },
        **results,
    }
    if not database.labelled:  # what can be said without labels: the model's own reconstruction
        results["validation_reconstruction_loss"] = {
            code: bundle.metrics.get(code, {}).get("validation_score") for code in CODES
        }
    if plots_dir is not None:
        name = corpus_name or database.source.split(":")[0] or "corpus"
        results["plots"] = write_plots(results, activations["long"][1], split, plots_dir, seed, name)
    return results


def evaluate_activations(
    address: tuple[np.ndarray, np.ndarray],
    long: tuple[np.ndarray, np.ndarray],
    split: Split,
    full: FullVocabulary,
    baseline_bits: Sequence[int],
    seed: int,
    baselines: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Code, shortlist, occupancy and baseline metrics from (database, query) code activations of the
    address and long codes; `baselines` reuses baseline results computed earlier on the same split."""
    codes = {}
    for database, queries in (address, long):
        log.info("Hamming ranking of the %d-bit code", database.shape[1])
        codes[database.shape[1]] = code_metrics(database, queries, split)
    log.info("address shortlists at radius %s", RADII)
    address_database, address_queries = (a > 0.5 for a in address)
    shortlist = shortlist_metrics(
        address_database,
        address_queries,
        split,
        {
            "tfidf_vocab": (split.database_tfidf, split.query_tfidf),
            "tfidf_full": (full.database_tfidf, full.query_tfidf),
        },
    )
    if baselines is None:
        baselines = baseline_metrics(
            split.relevance, (split.database_tfidf, split.query_tfidf), full, baseline_bits, seed
        )
    return {
        **summarise(codes, baselines, shortlist),
        "occupancy": {
            "address": occupancy(address_database),
            "long": occupancy(long[0] > 0.5),
        },
        "address_shortlist": shortlist,
        "codes": codes,
        "baselines": dict(baselines),
    }


def write_plots(
    results: Mapping[str, Any],
    query_activations: np.ndarray,
    split: Split,
    plots_dir: Path,
    seed: int,
    corpus_name: str,
) -> list[str]:
    """PR curves of every method and a t-SNE map of the query documents' long codes."""
    curves = {f"semantic hashing {b} bits": m["pr_curve"] for b, m in results["codes"].items()}
    baselines = results["baselines"]
    curves |= {name: baselines[name]["pr_curve"] for name in ("tfidf_vocab", "tfidf_full", "bm25")}
    for size in sorted(baselines["lsa"], key=int):
        curves[f"LSA {size}"] = baselines["lsa"][size]["pr_curve"]
        curves[f"LSH {size}"] = baselines["lsh"][size]["pr_curve"]
    pr = plot_pr_curves(
        curves, plots_dir / "pr_curves.png", f"{corpus_name}: test queries vs training database"
    )
    paths = [str(pr)]
    if split.map_labels is not None and split.map_label_names is not None:  # no colours without labels
        tsne = plot_document_map(
            query_activations,
            split.map_labels,
            split.map_label_names,
            plots_dir / "code_map.png",
            f"{corpus_name}: t-SNE of long-code activations of test documents",
            seed=seed,
        )
        paths.append(str(tsne))
    return paths
