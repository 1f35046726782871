"""One preprocessing path for every digit input: any grayscale picture -> an MNIST-normalised 28x28 digit.

MNIST's digits were normalised (LeCun et al. 1998) by scaling each one, anti-aliased and keeping its
aspect ratio, so that its longer side is 20 pixels, and placing it in a 28x28 field with its centre of
mass at the centre. `normalise_digit` redoes that for any picture (an upload of any size, JSON
pixels, a crop of a strip), so the recognisers always see what they were trained on:

1. **polarity**: t = Otsu threshold of the picture; when the border's median lies above t the paper
   is light and the ink dark, and the picture is inverted (ink = 1 - gray), so ink is always high;
2. **level**: the border's median (the paper) is subtracted, and the result divided by the 95th
   percentile of the ink pixels and clipped to [0, 1], so faint pencil and full-contrast ink match;
3. **ink mask**: ink > Otsu threshold of the picture smoothed by a Gaussian (sigma = 1 px, which
   averages pixel noise away without moving strokes); its 8-connected components smaller than
   `MIN_PART` of the largest are specks of noise and dropped;
4. **crop** to the kept components' bounding box; ink farther than `MARGIN` of the box's longer side
   from a kept component is erased (noise that happens to fall inside the box);
5. **scale** the crop so its longer side is `BOX` pixels (area-weighted when shrinking, bicubic when
   growing);
6. **centre**: a whole-pixel shift puts the centre of mass at `CENTRE` (row, column) of the 28x28 field.

`BOX` and `CENTRE` are not assumed but measured on MNIST's training digits with this very mask
(`measure_convention`; tests/test_digit_preprocess.py checks them on real MNIST digits): the
ink's longer side is 20 px for 99.9% of them, and the mean centre of mass is (14.00, 14.01), not
the field's middle (13.5, 13.5): MNIST placed the centre of mass at pixel index 14. So a digit that
is already normalised comes back (nearly) unchanged, and callers who know their pixels are
normalised MNIST can skip all this (`preprocess=false` in the API).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from PIL import Image
from scipy import ndimage

SIDE = 28  # the MNIST field
BOX = 20  # longer side of the ink's bounding box in MNIST (measured: 20 px for 99.9% of training digits)
CENTRE = (14.0, 14.0)  # mean centre of mass (row, col) of MNIST training digits (measured: 14.00, 14.01)
MIN_PART = 0.1  # ink components under this fraction of the largest one's area are noise
MARGIN = 0.1  # ink farther than this fraction of the box's longer side from the kept ink is noise
MASK_SIGMA = 1.0  # Gaussian smoothing (px) of the picture before thresholding the ink mask
MIN_CONTRAST = 0.05  # a picture whose ink stands less than this above the paper is blank
MAX_SIDE = 1024  # larger pictures are first shrunk by area averaging (a digit needs no more pixels)
_EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity for ndimage.label


class BlankImageError(ValueError):
    """The picture holds no ink that stands out from the paper."""


class Ink(NamedTuple):
    """A picture as ink (H, W) float32 in [0, 1], high = ink, and its ink mask (H, W) bool (noise removed)."""

    ink: np.ndarray
    mask: np.ndarray


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold: the cut maximising the between-class variance w0 w1 (mu0 - mu1)^2.

    values: any array of floats; returns a threshold t in [min, max); classes are <= t and > t.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = float(values.min()), float(values.max())
    if hi - lo < 1e-12:
        return lo
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    p = counts / counts.sum()
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(p)  # weight of the class at or below each cut
    m0 = np.cumsum(p * centres)  # its (unnormalised) mean
    between = ((m0[-1] * w0 - m0) ** 2 / np.maximum(w0 * (1.0 - w0), 1e-12))[:-1]
    # Every cut inside an empty gap between the classes scores the same: take the gap's middle.
    best = np.flatnonzero(between >= between.max() * (1.0 - 1e-9))
    return float(edges[(best[0] + best[-1]) // 2 + 1])


def _border(image: np.ndarray) -> np.ndarray:
    return np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])


def shrink(gray: np.ndarray, max_side: int = MAX_SIDE) -> np.ndarray:
    """Average f x f blocks, f the smallest integer that makes the longer side at most `max_side`."""
    factor = -(-max(gray.shape) // max_side)
    if factor <= 1:
        return gray
    h, w = (gray.shape[0] // factor) * factor, (gray.shape[1] // factor) * factor
    return gray[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


def find_ink(gray: np.ndarray) -> Ink:
    """Steps 1-3: a grayscale picture (H, W) in [0, 1] (either polarity) -> its ink and ink mask.

    Raises BlankImageError when nothing stands out from the paper.
    """
    gray = np.asarray(gray, dtype=np.float32)
    if gray.ndim != 2 or min(gray.shape) < 2:
        raise ValueError(f"expected a two-dimensional picture of at least 2x2 pixels, got shape {gray.shape}")
    smooth = ndimage.gaussian_filter(gray, MASK_SIGMA, mode="nearest")
    if float(np.median(_border(smooth))) > otsu_threshold(smooth):  # light paper: dark ink
        gray, smooth = 1.0 - gray, 1.0 - smooth
    paper = float(np.median(_border(gray)))
    ink = np.clip(gray - paper, 0.0, None)
    smooth = smooth - float(np.median(_border(smooth)))
    if float(smooth.max()) < MIN_CONTRAST:
        raise BlankImageError("the image is blank: no digit found")
    support = smooth > otsu_threshold(smooth)
    labels, n = ndimage.label(support, structure=_EIGHT)
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    support = np.isin(labels, np.flatnonzero(areas >= MIN_PART * areas.max()) + 1)
    # Smoothing widens strokes, so the box is taken from the unsmoothed ink over its own Otsu threshold
    # (as MNIST's box was), near the components kept; everything farther away is erased as noise.
    rows, cols = np.flatnonzero(support.any(axis=1)), np.flatnonzero(support.any(axis=0))
    reach = max(1, round(MARGIN * max(rows[-1] - rows[0], cols[-1] - cols[0])))
    near = ndimage.binary_dilation(support, structure=_EIGHT, iterations=reach)
    ink = np.where(near, ink, 0.0)
    mask = ink > otsu_threshold(ink)
    if not mask.any():
        mask = support
    level = float(np.percentile(ink[mask], 95))
    if level < MIN_CONTRAST:
        raise BlankImageError("the image is blank: no digit found")
    return Ink(np.clip(ink / level, 0.0, 1.0).astype(np.float32), mask)


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the True pixels, bottom and right exclusive."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def crop_digit(found: Ink) -> tuple[np.ndarray, float]:
    """Steps 4-5 prepared: (the kept ink's crop (h, w), the factor that makes the mask's box BOX long).

    The crop holds all the kept ink, faint anti-aliased edges too; the size comes from the mask, as
    measured on MNIST, so an MNIST digit gets factor 1 and comes back whole.
    """
    top, bottom, left, right = _box(found.mask)
    scale = BOX / max(bottom - top, right - left)
    top, bottom, left, right = _box(found.ink > 0)
    return found.ink[top:bottom, left:right], scale


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resample (h, w) -> (height, width): area-weighted when shrinking (anti-aliased), bicubic when growing.

    Bicubic rather than bilinear because growing blurs: MNIST digits shrunk to 0.8 and normalised back
    cost the quick DBN 0.15 points of validation error with bicubic, 0.28 with bilinear.
    """
    if image.shape == (height, width):
        return image.astype(np.float32)
    shrinking = height * width < image.shape[0] * image.shape[1]
    method = Image.Resampling.BOX if shrinking else Image.Resampling.BICUBIC
    resized = Image.fromarray(image.astype(np.float32), mode="F").resize((width, height), method)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def centre_by_mass(digit: np.ndarray, centre: tuple[float, float] = CENTRE) -> np.ndarray:
    """Step 6: place `digit` (h, w <= 28) in a 28x28 field with its centre of mass at `centre`.

    The shift is rounded to whole pixels (as in MNIST); ink pushed past the border is cut off.
    """
    h, w = digit.shape
    total = float(digit.sum())
    ys, xs = np.mgrid[0:h, 0:w]
    cy, cx = float((ys * digit).sum()) / total, float((xs * digit).sum()) / total
    top, left = round(centre[0] - cy), round(centre[1] - cx)
    field = np.zeros((SIDE, SIDE), dtype=np.float32)
    y0, x0 = max(0, top), max(0, left)
    y1, x1 = min(SIDE, top + h), min(SIDE, left + w)
    field[y0:y1, x0:x1] = digit[y0 - top : y1 - top, x0 - left : x1 - left]
    return field


def normalise_digit(gray: np.ndarray) -> np.ndarray:
    """A grayscale picture (H, W) in [0, 1], either polarity, any size -> the MNIST-normalised digit (28, 28).

    Raises BlankImageError when the picture holds no ink.
    """
    crop, scale = crop_digit(find_ink(shrink(np.asarray(gray, dtype=np.float32))))
    h, w = crop.shape
    size = (min(SIDE, max(1, round(h * scale))), min(SIDE, max(1, round(w * scale))))
    return centre_by_mass(resize(crop, *size))


def measure_convention(images: np.ndarray) -> tuple[float, tuple[float, float]]:
    """(median longer side of the ink mask's box, mean centre of mass (row, col)) of (n, 28, 28) digits.

    How BOX and CENTRE were chosen: run on MNIST's training digits it gives (20, (14.00, 14.01)).
    """
    sides, centres = [], []
    ys, xs = np.mgrid[0:SIDE, 0:SIDE]
    for image in np.asarray(images, dtype=np.float32).reshape(-1, SIDE, SIDE):
        top, bottom, left, right = _box(find_ink(image).mask)
        sides.append(max(bottom - top, right - left))
        total = float(image.sum())
        centres.append(((ys * image).sum() / total, (xs * image).sum() / total))
    mean = np.mean(centres, axis=0)
    return float(np.median(sides)), (float(mean[0]), float(mean[1]))
