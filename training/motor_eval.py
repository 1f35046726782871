"""Evaluation of a motor bundle: recognition by reconstruction, before and after local search."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import numpy as np

from bundles.motor import MotorBundle


def _best_wrong(errors: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The lowest error among the wrong classes of each image.  (N, C) -> (N,)."""
    wrong = errors.copy()
    wrong[np.arange(len(labels)), labels] = np.inf
    nearest_wrong: np.ndarray = wrong.min(axis=1)
    return nearest_wrong


def confusion(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> list[list[int]]:
    """Rows: true class, columns: predicted class."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix.tolist()


def evaluate_motor(
    bundle: MotorBundle, images: np.ndarray, labels: np.ndarray, batch: int = 500
) -> dict[str, Any]:
    """Test error and squared pixel errors of the correct and best wrong model, before/after local search.

    Before: classified by the recognition nets' reconstruction error (and, `before_local_search_same_score`,
    by the search's energy at the recognition nets' codes); after: by the local search's final scores,
    the pixel errors those of the refined programs."""
    started = time.perf_counter()
    before, after, scores, scores_before = [], [], [], []
    for start in range(0, len(images), batch):
        analysis = bundle.analyse(images[start : start + batch])
        before.append(analysis.errors_before)
        after.append(analysis.errors)
        scores.append(analysis.scores)
        scores_before.append(analysis.scores_before)
    seconds = time.perf_counter() - started
    e0, e1 = np.concatenate(before), np.concatenate(after)
    s0, s1 = np.concatenate(scores_before), np.concatenate(scores)
    rows = np.arange(len(labels))
    error_before = float((e0.argmin(1) != labels).mean())
    error_after = float((s1.argmin(1) != labels).mean())  # classified by the search's scores
    correct = {"before": float(e0[rows, labels].mean()), "after": float(e1[rows, labels].mean())}
    wrong = {"before": float(_best_wrong(e0, labels).mean()), "after": float(_best_wrong(e1, labels).mean())}
    return {
        "n_images": len(labels),
        "test_error": {
            "before_local_search": error_before,
            # the search's own score (energy with its prior terms) at the recognition nets' codes
            "before_local_search_same_score": float((s0.argmin(1) != labels).mean()),
            "after_local_search": error_after,
        },
        "classification_error_reduction": 1.0 - error_after / error_before if error_before > 0 else None,
        "squared_pixel_error": {"correct_model": correct, "best_wrong_model": wrong},
        "pixel_error_reduction": {
            "correct_model": 1.0 - correct["after"] / correct["before"],
            "best_wrong_model": 1.0 - wrong["after"] / wrong["before"],
        },
        "confusion_matrix": confusion(labels, s1.argmin(1), bundle.n_classes),
        "local_search": asdict(bundle.local_search),
        "analyse_ms_per_image": 1000 * seconds / len(labels),
        "bundle_id": bundle.bundle_id,
    }
