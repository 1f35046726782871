"""The one digit preprocessing path (bundles/digit_preprocess.py), checked against real MNIST digits.

tests/data/mnist_train_sample.npz holds 200 MNIST training digits (every 300th image, as uint8), so
the centring and size convention is tested against the training data itself, not against an assumption.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bundles.digit_preprocess import (
    BOX,
    CENTRE,
    BlankImageError,
    measure_convention,
    normalise_digit,
    otsu_threshold,
)

SAMPLE = Path(__file__).parent / "data" / "mnist_train_sample.npz"


@pytest.fixture(scope="module")
def mnist() -> np.ndarray:
    """(200, 28, 28) float32 MNIST training digits in [0, 1]."""
    return np.load(SAMPLE)["images"].astype(np.float32) / 255.0


def centre_of_mass(field: np.ndarray) -> tuple[float, float]:
    ys, xs = np.mgrid[0 : field.shape[0], 0 : field.shape[1]]
    return float((ys * field).sum() / field.sum()), float((xs * field).sum() / field.sum())


def distance_up_to_a_pixel(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two 28x28 digits, over the best relative shift of at most one pixel.

    Centring shifts by whole pixels (as MNIST did), so a resampled copy may land one pixel over.
    """
    return min(
        float(np.abs(np.roll(a, (dy, dx), axis=(0, 1)) - b).mean()) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
    )


def test_otsu_splits_two_modes() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0.2, 0.03, 500), rng.normal(0.8, 0.03, 100)])
    assert 0.3 < otsu_threshold(values) < 0.7
    assert otsu_threshold(np.full(10, 0.5)) == 0.5


def test_the_convention_is_measured_on_mnist(mnist: np.ndarray) -> None:
    side, (cy, cx) = measure_convention(mnist)
    assert side == BOX
    assert abs(cy - CENTRE[0]) < 0.1 and abs(cx - CENTRE[1]) < 0.1
    assert abs(cy - 13.5) > 0.35  # MNIST's centre of mass is not the field's middle


def test_mnist_digits_come_back_unchanged(mnist: np.ndarray) -> None:
    out = np.stack([normalise_digit(x) for x in mnist])
    worst = np.abs(out - mnist).reshape(len(mnist), -1).max(axis=1)
    assert (worst < 0.02).mean() >= 0.9  # the rest: a one-pixel centring step or a small rescale
    assert np.abs(out - mnist).mean() < 0.005


def test_shift_scale_and_polarity_are_undone(mnist: np.ndarray) -> None:
    for digit in mnist[:20]:
        expected = normalise_digit(digit)
        for top, left in [(0, 0), (9, 3), (12, 12)]:  # anywhere on a larger sheet
            sheet = np.zeros((40, 40), dtype=np.float32)
            sheet[top : top + 28, left : left + 28] = digit
            np.testing.assert_allclose(normalise_digit(sheet), expected, atol=1e-6)
        np.testing.assert_allclose(normalise_digit(1.0 - digit), expected, atol=1e-6)
        # 3x larger (each pixel a 3x3 block), dark ink on white paper with a wide margin: area
        # averaging shrinks it back exactly
        big = np.asarray(Image.fromarray(digit).resize((84, 84), Image.Resampling.NEAREST))
        on_paper = np.pad(1.0 - big, 30, constant_values=1.0)
        assert distance_up_to_a_pixel(normalise_digit(on_paper), expected) < 0.01


def test_noise_far_from_the_digit_is_ignored(mnist: np.ndarray) -> None:
    digit = mnist[0]
    canvas = np.zeros((60, 60), dtype=np.float32)
    canvas[16:44, 16:44] = digit
    for y, x in [(2, 3), (55, 5), (4, 50), (57, 58), (30, 2)]:  # specks near the corners and edges
        canvas[y, x] = 1.0
    np.testing.assert_allclose(normalise_digit(canvas), normalise_digit(digit), atol=1e-6)


def test_pixel_noise_over_the_whole_picture_does_not_move_the_box(mnist: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    for digit in mnist[:20]:
        noisy = np.clip(digit + rng.normal(0, 0.1, digit.shape), 0, 1).astype(np.float32)
        assert distance_up_to_a_pixel(normalise_digit(noisy), normalise_digit(digit)) < 0.03


def test_aspect_ratio_is_kept_and_the_longer_side_fills_the_box() -> None:
    picture = np.ones((140, 60), dtype=np.float32)
    picture[20:120, 20:40] = 0.0  # a dark bar 100 x 20 on white paper
    digit = normalise_digit(picture)
    rows = np.flatnonzero((digit > 0.5).any(1))
    cols = np.flatnonzero((digit > 0.5).any(0))
    assert len(rows) == BOX and len(cols) == 4
    cy, cx = centre_of_mass(digit)
    assert abs(cy - CENTRE[0]) <= 0.5 and abs(cx - CENTRE[1]) <= 0.5


def test_large_pictures_are_shrunk_first() -> None:
    picture = np.zeros((3000, 2000), dtype=np.float32)
    picture[1000:2000, 900:1100] = 1.0
    digit = normalise_digit(picture)
    assert digit.shape == (28, 28) and len(np.flatnonzero((digit > 0.5).any(1))) == BOX


@pytest.mark.parametrize("level", [0.0, 0.5, 1.0])
def test_a_blank_picture_is_refused(level: float) -> None:
    with pytest.raises(BlankImageError, match="blank"):
        normalise_digit(np.full((40, 30), level, dtype=np.float32))
