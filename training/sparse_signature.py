"""How many atoms a sparse signature keeps: chosen on validation images, never on the test split.

A signature is a set of atoms (bundles/sparse.py `signature_bits`): the `atoms` active atoms of
largest magnitude, or every active atom (`atoms` None). For each candidate, the validation images'
signatures query the training images' signatures by Hamming distance, and precision@100 (the
fraction of the 100 nearest with the query's label) scores it; the best candidate goes into the
bundle. Sets of one fixed size k make the Hamming distance 2 (k - shared atoms), a count of shared
parts; every active atom (the well-trained LISTA keeps ~34, many with tiny coefficients) lets images
with few active atoms crowd every query's neighbourhood.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from bundles.sparse import signature_bits
from training.vision_eval import hamming_hits_at_k

log = logging.getLogger(__name__)

SIGNATURE_ATOMS_GRID: tuple[int | None, ...] = (4, 6, 8, 10, 12, 16, 20, 24, 32, None)


def signature_precision(
    train_codes: np.ndarray,
    train_y: np.ndarray,
    query_codes: np.ndarray,
    query_y: np.ndarray,
    atoms: int | None,
) -> float:
    """Mean precision@100 of the queries' signatures against the training signatures (Hamming)."""
    hits = hamming_hits_at_k(
        signature_bits(query_codes, atoms), query_y, signature_bits(train_codes, atoms), train_y, k=100
    )
    return float(hits.mean())


def choose_signature_atoms(
    train_codes: np.ndarray,
    train_y: np.ndarray,
    valid_codes: np.ndarray,
    valid_y: np.ndarray,
    grid: tuple[int | None, ...] = SIGNATURE_ATOMS_GRID,
) -> dict[str, Any]:
    """The candidate of `grid` with the best validation precision@100 (the smaller one on a tie).

    Returns {"signature_atoms": the choice (None: every active atom), "validation_precision_at_100":
    {str(candidate): precision}, "seconds"}.
    """
    started = time.perf_counter()
    scores: dict[str, float] = {}
    best: tuple[float, int | None] | None = None
    for atoms in grid:
        precision = signature_precision(train_codes, train_y, valid_codes, valid_y, atoms)
        scores[str(atoms) if atoms is not None else "all"] = precision
        log.info("signature of %s atoms: validation precision@100 %.4f", atoms or "all active", precision)
        if best is None or precision > best[0]:
            best = (precision, atoms)
    assert best is not None
    return {
        "signature_atoms": best[1],
        "validation_precision_at_100": scores,
        "seconds": time.perf_counter() - started,
    }
