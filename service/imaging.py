"""Turning uploads and JSON arrays into MNIST-style inputs: 784 floats in [0, 1], ink high.

Uploads are normalised the way MNIST itself was made (LeCun et al.): grayscale; inverted when the
background is light (MNIST digits are light ink on black); cropped to the ink's bounding box; scaled,
keeping the aspect ratio and anti-aliased, so the longer side is 20 pixels; then placed in a 28x28
field so that the ink's centre of mass is at the centre. Every problem with an input raises
`ImageInputError` with a message meant for the client.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

SIDE = 28  # MNIST field
BOX = 20  # the digit is scaled to fit this box inside the field
N_PIXELS = SIDE * SIDE
ALLOWED_FORMATS = ("PNG", "JPEG")
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096  # width x height of an upload, checked before decoding
INK_FRACTION = 0.1  # pixels below this fraction of the darkest ink count as background when cropping


class ImageInputError(ValueError):
    """An input that cannot be turned into a 28x28 digit image; `too_large` marks size limits (413)."""

    def __init__(self, message: str, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.too_large = too_large


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """PNG/JPEG bytes -> grayscale (H, W) float32 in [0, 1] (0 black, 1 white); transparency shows white."""
    if not data:
        raise ImageInputError("the file is empty")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as err:
        raise ImageInputError("not an image: expected a PNG or JPEG file") from err
    if image.format not in ALLOWED_FORMATS:
        raise ImageInputError(f"unsupported image format {image.format}: expected PNG or JPEG")
    width, height = image.size
    if width * height > max_pixels:  # before decoding, so a huge image costs no memory
        raise ImageInputError(
            f"image of {width}x{height} pixels is larger than the limit of {max_pixels} pixels",
            too_large=True,
        )
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as err:  # what Pillow raises on truncated or corrupt data
        raise ImageInputError(f"the {image.format} file is corrupt or truncated") from err
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


def to_mnist(gray: np.ndarray) -> np.ndarray:
    """A grayscale image (H, W) in [0, 1] -> an MNIST-style digit (784,) float32, ink high.

    The background's brightness is read off the image border (the median of its pixels).
    """
    if gray.ndim != 2 or min(gray.shape) < 1:
        raise ImageInputError("expected a two-dimensional grayscale image")
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    ink = 1.0 - gray if np.median(border) > 0.5 else gray.copy()
    ink -= np.median(np.concatenate([ink[0], ink[-1], ink[:, 0], ink[:, -1]]))  # background to zero
    ink = np.clip(ink, 0.0, None)
    peak = float(ink.max())
    if peak < 0.05:
        raise ImageInputError("the image is blank: no digit found")
    ink /= peak
    rows = np.flatnonzero((ink > INK_FRACTION).any(axis=1))
    cols = np.flatnonzero((ink > INK_FRACTION).any(axis=0))
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = crop.shape
    scale = BOX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # PIL wants (width, height)
    box = np.asarray(Image.fromarray(crop.astype(np.float32)).resize(size, Image.Resampling.LANCZOS))
    box = np.clip(box, 0.0, 1.0)
    return centre_by_mass(box).reshape(N_PIXELS)


def centre_by_mass(digit: np.ndarray) -> np.ndarray:
    """Place `digit` (h, w <= 20) in a 28x28 field with its centre of mass at the field's centre.

    The shift is rounded to whole pixels (as in MNIST); ink pushed past the border is cut off.
    """
    h, w = digit.shape
    total = digit.sum()
    ys, xs = np.mgrid[0:h, 0:w]
    cy, cx = (ys * digit).sum() / total, (xs * digit).sum() / total
    top, left = round((SIDE - 1) / 2 - cy), round((SIDE - 1) / 2 - cx)
    field = np.zeros((SIDE, SIDE), dtype=np.float32)
    y0, x0 = max(0, top), max(0, left)
    y1, x1 = min(SIDE, top + h), min(SIDE, left + w)
    field[y0:y1, x0:x1] = digit[y0 - top : y1 - top, x0 - left : x1 - left]
    return field


def image_to_mnist(data: bytes, *, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """Uploaded PNG/JPEG bytes -> (784,) float32 in [0, 1]."""
    return to_mnist(decode_image(data, max_pixels=max_pixels))


def pixels_to_array(values: Sequence[float] | Sequence[Sequence[float]]) -> np.ndarray:
    """JSON pixels (784 values, or 28 rows of 28) -> (784,) float32, checked to be finite and in [0, 1]."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:  # ragged rows
        raise ImageInputError(f"pixels must be {N_PIXELS} numbers or {SIDE} rows of {SIDE} numbers") from err
    if array.shape not in ((N_PIXELS,), (SIDE, SIDE)):
        raise ImageInputError(
            f"pixels must be {N_PIXELS} numbers or {SIDE} rows of {SIDE} numbers, got shape {array.shape}"
        )
    if not np.isfinite(array).all():
        raise ImageInputError("pixels must be finite numbers")
    if array.min() < 0.0 or array.max() > 1.0:
        raise ImageInputError(
            f"pixel values must lie in [0, 1] (ink = 1); got values from {array.min():g} to {array.max():g}"
        )
    return array.reshape(N_PIXELS).astype(np.float32)


def array_to_png(pixels: np.ndarray) -> bytes:
    """(784,) values in [0, 1] -> a 28x28 8-bit grayscale PNG, ink white on black as in MNIST."""
    image = np.clip(np.asarray(pixels).reshape(SIDE, SIDE) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()
