"""Turning uploads and JSON arrays into MNIST-style inputs: 784 floats in [0, 1], ink high.

Uploads are decoded to grayscale; uploads and JSON pixels then take the same path, the normalisation
of bundles/digit_preprocess.py (polarity, noise, crop, scale and centring as MNIST was made), unless
the caller says the pixels are already normalised MNIST (`preprocess=False`). Every problem with an
input raises `ImageInputError` with a message meant for the client.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from bundles.digit_preprocess import SIDE, BlankImageError, normalise_digit

N_PIXELS = SIDE * SIDE
ALLOWED_FORMATS = ("PNG", "JPEG")
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096  # width x height of an upload, checked before decoding


class ImageInputError(ValueError):
    """An input that cannot be turned into a 28x28 digit image; `too_large` marks size limits (413)."""

    def __init__(self, message: str, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.too_large = too_large


def _reason(err: BaseException) -> str:
    """Pillow's explanation, short and printable (it never holds the image's bytes)."""
    text = str(err).encode("ascii", "backslashreplace").decode("ascii")
    return (text[:200] or type(err).__name__).rstrip(".")


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """PNG/JPEG bytes -> grayscale (H, W) float32 in [0, 1] (0 black, 1 white); transparency shows white.

    Hostile files fail with an `ImageInputError` saying what was wrong, before they cost memory: the
    size in the header is checked before decoding (a "decompression bomb" claiming 65000x65000 pixels is
    refused as too large), and corrupt, truncated or oversized chunks (text, ICC profiles) are refused.
    """
    if not data:
        raise ImageInputError("the file is empty")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as err:
        raise ImageInputError("not an image: expected a PNG or JPEG file") from err
    except Image.DecompressionBombError as err:
        raise ImageInputError(
            f"the image header claims more pixels than the limit of {max_pixels}", too_large=True
        ) from err
    except Exception as err:  # a corrupt header or chunk (ValueError, OSError, SyntaxError, EOFError...)
        raise ImageInputError(f"the image file is corrupt: {_reason(err)}") from err
    if image.format not in ALLOWED_FORMATS:
        raise ImageInputError(f"unsupported image format {image.format}: expected PNG or JPEG")
    width, height = image.size
    if width * height > max_pixels:  # before decoding, so a huge image costs no memory
        raise ImageInputError(
            f"image of {width}x{height} pixels is larger than the limit of {max_pixels} pixels",
            too_large=True,
        )
    if width < 1 or height < 1:
        raise ImageInputError(f"image of {width}x{height} pixels has no pixels")
    try:
        image.load()
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            background = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, image.convert("RGBA"))
        gray = image.convert("L")
    except Exception as err:  # what Pillow raises on truncated or corrupt data, or a mode it cannot convert
        raise ImageInputError(f"the {image.format} file is corrupt or truncated: {_reason(err)}") from err
    return np.asarray(gray, dtype=np.float32) / 255.0


def to_mnist(gray: np.ndarray, *, preprocess: bool = True, allow_blank: bool = False) -> np.ndarray:
    """A grayscale picture (H, W) in [0, 1] -> an MNIST-style digit (784,) float32, ink high.

    With `preprocess` (the default) every picture goes through the one normalisation of
    bundles/digit_preprocess.py (polarity, noise, crop, scale, centring as MNIST). Without it the
    picture must already be a normalised 28x28 MNIST digit (ink high) and is used as it is.
    A blank picture is refused unless `allow_blank` (then it becomes an empty field).
    """
    if gray.ndim != 2 or min(gray.shape) < 2:
        raise ImageInputError("expected a two-dimensional grayscale image of at least 2x2 pixels")
    if not preprocess:
        if gray.shape != (SIDE, SIDE):
            raise ImageInputError(
                f"with preprocess=false the image must be {SIDE}x{SIDE} normalised MNIST pixels, "
                f"got {gray.shape[0]}x{gray.shape[1]}"
            )
        return gray.reshape(N_PIXELS).astype(np.float32)
    try:
        return normalise_digit(gray).reshape(N_PIXELS)
    except BlankImageError as err:
        if allow_blank:
            return np.zeros(N_PIXELS, dtype=np.float32)
        raise ImageInputError(str(err)) from err


def image_to_mnist(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    preprocess: bool = True,
    allow_blank: bool = False,
) -> np.ndarray:
    """Uploaded PNG/JPEG bytes -> (784,) float32 in [0, 1]."""
    return to_mnist(decode_image(data, max_pixels=max_pixels), preprocess=preprocess, allow_blank=allow_blank)


def pixels_to_array(
    values: Sequence[float] | Sequence[Sequence[float]], *, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
) -> np.ndarray:
    """JSON pixels (784 values, or rows of equal length) -> (H, W) float32, checked finite and in [0, 1].

    784 values are one 28x28 image; rows may have any size (the preprocessing normalises it).
    """
    shapes = f"{N_PIXELS} numbers or rows of equal length ({SIDE} rows of {SIDE} for an MNIST digit)"
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:  # ragged rows
        raise ImageInputError(f"pixels must be {shapes}") from err
    if array.shape == (N_PIXELS,):
        array = array.reshape(SIDE, SIDE)
    if array.ndim != 2 or min(array.shape) < 2:
        raise ImageInputError(f"pixels must be {shapes}, got shape {array.shape}")
    if array.size > max_pixels:
        raise ImageInputError(
            f"image of {array.shape[1]}x{array.shape[0]} pixels is larger than the limit "
            f"of {max_pixels} pixels",
            too_large=True,
        )
    if not np.isfinite(array).all():
        raise ImageInputError("pixels must be finite numbers")
    if array.min() < 0.0 or array.max() > 1.0:
        raise ImageInputError(
            f"pixel values must lie in [0, 1] (ink = 1); got values from {array.min():g} to {array.max():g}"
        )
    return array.astype(np.float32)


def array_to_png(pixels: np.ndarray) -> bytes:
    """(784,) values in [0, 1] -> a 28x28 8-bit grayscale PNG, ink white on black as in MNIST."""
    image = np.clip(np.asarray(pixels).reshape(SIDE, SIDE) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()
