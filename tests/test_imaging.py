"""Upload decoding, the shared preprocessing path for uploads and JSON, and validation of JSON pixel arrays.

The normalisation itself is tested in tests/test_digit_preprocess.py.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from bundles.digit_preprocess import CENTRE, normalise_digit
from service.imaging import (
    ImageInputError,
    array_to_png,
    decode_image,
    image_to_mnist,
    pixels_to_array,
    to_mnist,
)


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def drawn_seven(size: tuple[int, int] = (300, 200), ink: int = 0, paper: int = 255) -> Image.Image:
    """A '7' drawn off-centre with thick strokes on a plain background."""
    image = Image.new("L", size, paper)
    draw = ImageDraw.Draw(image)
    draw.line([(40, 40), (140, 40), (90, 170)], fill=ink, width=14)
    return image


def centre_of_mass(field: np.ndarray) -> tuple[float, float]:
    ys, xs = np.mgrid[0 : field.shape[0], 0 : field.shape[1]]
    return float((ys * field).sum() / field.sum()), float((xs * field).sum() / field.sum())


def test_upload_is_cropped_scaled_into_20_pixels_and_centred_by_mass() -> None:
    digit = image_to_mnist(encode(drawn_seven())).reshape(28, 28)
    assert digit.min() >= 0 and digit.max() == pytest.approx(1.0, abs=0.05)
    cy, cx = centre_of_mass(digit)
    assert abs(cy - CENTRE[0]) <= 0.5 and abs(cx - CENTRE[1]) <= 0.5
    rows = np.flatnonzero((digit > 0.1).any(1))
    cols = np.flatnonzero((digit > 0.1).any(0))
    assert rows[-1] - rows[0] + 1 in (19, 20, 21)  # the taller side fills the 20-pixel box
    assert cols[-1] - cols[0] + 1 < 20


def test_uploads_and_json_take_the_same_path() -> None:
    picture = np.asarray(drawn_seven(), dtype=np.float32) / 255.0  # 8-bit values: PNG holds them exactly
    via_json = to_mnist(pixels_to_array(picture.tolist()))
    np.testing.assert_array_equal(image_to_mnist(encode(drawn_seven())), via_json)
    np.testing.assert_array_equal(via_json, normalise_digit(picture).reshape(784))


def test_preprocessing_can_be_skipped_for_normalised_mnist_pixels() -> None:
    pixels = np.zeros((28, 28), dtype=np.float32)
    pixels[2:9, 3:7] = 1.0  # off-centre: normalising would move it
    np.testing.assert_array_equal(to_mnist(pixels, preprocess=False), pixels.reshape(784))
    with pytest.raises(ImageInputError, match="must be 28x28"):
        to_mnist(np.zeros((30, 28), dtype=np.float32), preprocess=False)


def test_a_blank_picture_is_refused_or_kept_empty() -> None:
    with pytest.raises(ImageInputError, match="blank"):
        to_mnist(np.ones((30, 40), dtype=np.float32))
    assert not to_mnist(np.ones((30, 40), dtype=np.float32), allow_blank=True).any()


def test_dark_on_light_and_light_on_dark_give_the_same_digit() -> None:
    dark_ink = image_to_mnist(encode(drawn_seven(ink=0, paper=255)))
    light_ink = image_to_mnist(encode(drawn_seven(ink=255, paper=0)))
    np.testing.assert_allclose(dark_ink, light_ink, atol=1e-5)


def test_jpeg_and_transparent_png_are_read() -> None:
    assert image_to_mnist(encode(drawn_seven().convert("RGB"), "JPEG")).shape == (784,)
    rgba = Image.new("RGBA", (64, 64), (0, 0, 0, 0))  # transparent background, black ink
    ImageDraw.Draw(rgba).ellipse([16, 8, 48, 56], outline=(0, 0, 0, 255), width=6)
    zero = image_to_mnist(encode(rgba)).reshape(28, 28)
    assert zero[14, 14] < 0.2 and zero.max() > 0.9  # a ring: ink around an empty middle


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"hello, this is text", "not an image"),
        (encode(drawn_seven())[:200], "corrupt"),
        (encode(drawn_seven(), "GIF"), "unsupported image format GIF"),
        (encode(Image.new("L", (50, 50), 255)), "blank"),
    ],
)
def test_bad_uploads_are_refused_clearly(data: bytes, message: str) -> None:
    with pytest.raises(ImageInputError, match=message):
        image_to_mnist(data)


def test_too_large_images_are_refused_before_decoding() -> None:
    with pytest.raises(ImageInputError, match="larger than the limit") as info:
        decode_image(encode(drawn_seven()), max_pixels=1000)
    assert info.value.too_large


def test_json_pixels_flat_square_or_any_size() -> None:
    flat = np.linspace(0, 1, 784)
    np.testing.assert_allclose(pixels_to_array(flat.tolist()), flat.reshape(28, 28), rtol=1e-6)
    np.testing.assert_allclose(
        pixels_to_array(flat.reshape(28, 28).tolist()), flat.reshape(28, 28), rtol=1e-6
    )
    assert pixels_to_array(np.zeros((5, 70)).tolist()).shape == (5, 70)
    with pytest.raises(ImageInputError, match="larger than the limit") as info:
        pixels_to_array(np.zeros((40, 40)).tolist(), max_pixels=1000)
    assert info.value.too_large


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([0.5] * 783, "784 numbers"),
        ([[0.5] * 28], r"shape \(1, 28\)"),
        ([[0.5] * 28] * 27 + [[0.5] * 27], "784 numbers"),
        ([0.5] * 783 + [1.5], r"\[0, 1\]"),
        ([0.5] * 783 + [-0.1], r"\[0, 1\]"),
        ([0.5] * 783 + [float("nan")], "finite"),
    ],
)
def test_bad_json_pixels_are_refused_clearly(values: list, message: str) -> None:
    with pytest.raises(ImageInputError, match=message):
        pixels_to_array(values)


def test_png_of_an_array_round_trips() -> None:
    pixels = np.linspace(0, 1, 784, dtype=np.float32)
    image = Image.open(io.BytesIO(array_to_png(pixels)))
    assert image.size == (28, 28) and image.mode == "L"
    np.testing.assert_allclose(np.asarray(image).reshape(784) / 255, pixels, atol=0.5 / 255 + 1e-6)
