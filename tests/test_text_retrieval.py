"""Retrieval metrics against brute force: Hamming distances, tie-averaged precision, cosine ranking."""

from __future__ import annotations

import itertools

import numpy as np

from training.retrieval import (
    Relevance,
    cosine_relevant_at,
    hamming_distances,
    hamming_relevant_at,
    pr_cutoffs,
    precision_recall,
)
from training.text_eval import capped_ball


def same_label(query_labels: np.ndarray, database_labels: np.ndarray) -> Relevance:
    return Relevance.from_labels([(str(x),) for x in query_labels], [(str(x),) for x in database_labels])


def test_hamming_distances_brute_force() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.random((7, 13)) > 0.5, rng.random((9, 13)) > 0.5
    expected = (a[:, None, :] != b[None, :, :]).sum(axis=2)
    np.testing.assert_array_equal(hamming_distances(a, b), expected)


def test_tied_ranking_is_the_average_over_all_orderings_of_ties() -> None:
    rng = np.random.default_rng(1)
    database = rng.random((6, 3)) > 0.5  # 3 bits, 6 documents: many ties
    database_labels = np.array([0, 1, 0, 1, 1, 0])
    query, query_labels = rng.random((1, 3)) > 0.5, np.array([0])
    distance = hamming_distances(query, database)[0]
    relevant = database_labels == query_labels[0]
    cutoffs = [1, 2, 3, 4, 6]
    totals = np.zeros(len(cutoffs))
    orders = [p for p in itertools.permutations(range(6)) if list(distance[list(p)]) == sorted(distance)]
    for order in orders:  # every ordering consistent with the distances, equally likely
        cum = np.cumsum(relevant[list(order)])
        totals += [cum[k - 1] for k in cutoffs]
    got = hamming_relevant_at(query, database, same_label(query_labels, database_labels), cutoffs)[0]
    np.testing.assert_allclose(got, totals / len(orders))


def test_identical_codes_give_base_rate_precision() -> None:
    database = np.zeros((10, 4), dtype=bool)
    labels = np.array([0] * 3 + [1] * 7)
    got = hamming_relevant_at(database[:1], database, same_label(np.array([0]), labels), [5, 10])
    np.testing.assert_allclose(got[0], [1.5, 3.0])


def test_cosine_ranking_and_precision_recall() -> None:
    database = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    labels = np.array([0, 0, 1, 1])
    queries, query_labels = np.array([[2.0, 0.1], [0.0, 3.0]]), np.array([0, 1])
    got = cosine_relevant_at(queries, database, same_label(query_labels, labels), [1, 2, 4])
    np.testing.assert_array_equal(got, [[1, 2, 2], [1, 2, 2]])
    curve = precision_recall(got, [1, 2, 4], np.array([2, 2]))
    assert curve["precision"] == [1.0, 1.0, 0.5] and curve["recall"] == [0.5, 1.0, 1.0]


def test_pr_cutoffs_end_at_the_database() -> None:
    assert pr_cutoffs(10) == [1, 2, 4, 8, 10]
    assert pr_cutoffs(8) == [1, 2, 4, 8]


def test_capped_shortlist_keeps_the_nearest_in_database_order() -> None:
    distance = np.array([[2, 0, 3, 1, 0, 9], [5, 5, 5, 5, 5, 5]])
    inside = distance <= 3
    capped = capped_ball(inside, distance, 3)
    assert capped[0].tolist() == [False, True, False, True, True, False]  # distances 0, 0, 1
    assert not capped[1].any()  # nothing inside the ball: nothing kept
    assert capped_ball(inside, distance, 6) is inside


def test_multi_label_relevance_is_a_shared_label() -> None:
    relevance = Relevance.from_labels([("a", "b"), ()], [("a",), ("c",), ("b", "c"), ("a", "b")])
    assert relevance.multi_label
    assert relevance.block(0, 2).tolist() == [[True, False, True, True], [False, False, False, False]]
    assert relevance.counts.tolist() == [3, 0]
    single = Relevance.from_labels([("x",)], [("x",), ("y",)])
    assert not single.multi_label and single.block(0, 1).tolist() == [[True, False]]


def test_neighbour_relevance_marks_the_reference_neighbours() -> None:
    relevance = Relevance.from_neighbours(np.array([[2, 0], [1, 3]]), 4)
    assert relevance.block(0, 2).tolist() == [[True, False, True, False], [False, True, False, True]]
    assert relevance.counts.tolist() == [2, 2]
