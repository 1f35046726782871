"""Sparse signatures (the largest active atoms), their choice on validation, and the one-row product."""

from __future__ import annotations

import numpy as np
import pytest

from bundles.sparse import _rows_times, signature_bits
from training.sparse_signature import choose_signature_atoms, signature_precision


def test_signature_bits_keep_the_largest_active_atoms() -> None:
    codes = np.array(
        [
            [0.0, 3.0, 0.5, 2.0, 0.0, 1.0],
            [0.0, 0.0, 0.7, 0.0, 0.0, 0.0],  # fewer active atoms than asked: only those
            [1.0, 1.0, 1.0, 0.0, 0.0, 0.0],  # ties: the lower indices
            [0.0, -4.0, 0.0, 0.5, 0.0, 0.0],  # signed codes rank by magnitude
        ],
        np.float32,
    )
    expected = np.array(
        [[0, 1, 0, 1, 0, 0], [0, 0, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0], [0, 1, 0, 1, 0, 0]], bool
    )
    np.testing.assert_array_equal(signature_bits(codes, 2), expected)
    np.testing.assert_array_equal(signature_bits(codes, None), codes != 0)
    np.testing.assert_array_equal(signature_bits(codes, 6), codes != 0)
    np.testing.assert_array_equal(signature_bits(np.zeros((2, 6), np.float32), 3), np.zeros((2, 6), bool))


def _parts_and_noise(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Codes over 40 atoms: two large atoms name the class (of 5), then up to 19 small noise atoms."""
    labels = rng.integers(0, 5, n)
    codes = np.zeros((n, 40), np.float32)
    codes[np.arange(n), 2 * labels] = 2.0 + rng.random(n)
    codes[np.arange(n), 2 * labels + 1] = 2.0 + rng.random(n)
    for i in range(n):
        noise = rng.choice(np.arange(10, 40), rng.integers(0, 20), replace=False)
        codes[i, noise] = 0.1 * rng.random(len(noise)) + 0.01
    return codes, labels


def test_the_choice_is_the_best_candidate_on_validation() -> None:
    rng = np.random.default_rng(0)
    train, train_y = _parts_and_noise(600, rng)
    valid, valid_y = _parts_and_noise(200, rng)
    choice = choose_signature_atoms(train, train_y, valid, valid_y, grid=(1, 2, 8, None))
    scores = choice["validation_precision_at_100"]
    assert set(scores) == {"1", "2", "8", "all"}
    for atoms, key in ((1, "1"), (None, "all")):
        assert scores[key] == signature_precision(train, train_y, valid, valid_y, atoms)
    # the two class atoms alone retrieve the class; the noise atoms of "all" blur it
    assert choice["signature_atoms"] == 2 and scores["2"] == 1.0 and scores["all"] < 1.0
    assert max(scores.values()) == scores["2"]


def test_a_tie_chooses_the_smaller_signature() -> None:
    rng = np.random.default_rng(1)
    train, train_y = _parts_and_noise(300, rng)
    train[:, 10:] = 0  # no noise: 2 atoms and every atom are the same signatures
    valid, valid_y = train[:100], train_y[:100]
    choice = choose_signature_atoms(train, train_y, valid, valid_y, grid=(2, 4, None))
    assert len(set(choice["validation_precision_at_100"].values())) == 1 and choice["signature_atoms"] == 2


@pytest.mark.parametrize("active", [0, 3, 40, 64])
def test_the_one_row_product_is_the_dense_product(active: int) -> None:
    rng = np.random.default_rng(active)
    weights = rng.standard_normal((64, 50)).astype(np.float32)
    x = np.zeros((1, 64), np.float32)
    x[0, rng.choice(64, active, replace=False)] = rng.standard_normal(active)
    np.testing.assert_allclose(_rows_times(x, weights), x @ weights, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_rows_times(x.astype(np.float64), weights), x @ weights, rtol=1e-5, atol=1e-5)
    batch = np.concatenate([x, 2 * x])
    np.testing.assert_allclose(_rows_times(batch, weights), batch @ weights, rtol=1e-5, atol=1e-5)
