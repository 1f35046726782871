"""Strips of handwritten digits: composing them from MNIST digits, and preparing one for scanning.

Composing (the evaluation set of `POST /v1/digits/read`; built from MNIST *test* digits for the
benchmark and from validation digits for tuning, never from the training digits):
3-8 digits, each cropped to its ink, scaled by the strip's scale times its own small factor, placed
left to right with random gaps (negative gaps: touching or overlapping ink), random vertical jitter,
composed by the maximum of the inks, then Gaussian noise and, for some strips, dark ink on light paper.

Preparing (what the reader does to any picture before the net scans it):
1. polarity and level as for a single digit (bundles/digit_preprocess.py: Otsu, the border's median);
2. ink mask: the picture smoothed by a Gaussian, thresholded by Otsu; 8-connected components shorter
   than `MIN_HEIGHT` of the tallest are noise (a digit is never much shorter than its neighbours, so a
   height test keeps a small "1" that an area test would drop) unless they lie within `NEAR` of the
   tallest's height of a component that is not (a detached stroke: the bar of a 5, a broken 4), and
   are erased with the ink near them only;
3. digit height h: the median height of the components at least half as tall as the tallest
   (touching digits merge sideways but keep one digit's height);
4. scale the picture by 20 / h (MNIST's box, training/digit_preprocess.BOX) and pad it by a window's
   half (14 px) on every side, so the net's windows can centre on digits at the edges.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from bundles.digit_preprocess import BOX, MASK_SIGMA, MIN_CONTRAST, BlankImageError, otsu_threshold, resize

MIN_HEIGHT = 0.3  # components shorter than this fraction of the tallest are noise ...
NEAR = 0.25  # ... unless within this fraction of the tallest's height of a taller component
PAD = 14  # px of paper added around the scaled strip
_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class StripConfig:
    digits: tuple[int, int] = (3, 8)  # digits per strip, inclusive
    scale: tuple[float, float] = (0.7, 1.6)  # the strip's scale (1: MNIST size)
    digit_scale: float = 0.08  # each digit's own factor in 1 +- this
    gap: tuple[float, float] = (-3.0, 8.0)  # px between neighbours' ink boxes at scale 1
    jitter: float = 3.0  # vertical offset (px at scale 1) in +- this
    margin: tuple[int, int] = (2, 12)  # px of paper around the digits
    noise: tuple[float, ...] = (0.0, 0.05, 0.1)  # Gaussian noise std, one drawn per strip
    inverted: float = 0.2  # fraction of strips with dark ink on light paper


@dataclass
class Strip:
    image: np.ndarray  # (H, W) float32 in [0, 1]
    labels: list[int]
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)  # (top, left, bottom, right)
    centres: list[float] = field(default_factory=list)  # column of each digit's centre of mass

    @property
    def text(self) -> str:
        return "".join(map(str, self.labels))


def _ink_crop(digit: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(digit.max(1) > 0), np.flatnonzero(digit.max(0) > 0)
    return digit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def compose_strip(
    digits: np.ndarray, labels: np.ndarray, rng: np.random.Generator, config: StripConfig | None = None
) -> Strip:
    """One strip from randomly chosen (N, 784) digits in [0, 1] (ink = 1) and their labels."""
    cfg = config or StripConfig()
    n = int(rng.integers(cfg.digits[0], cfg.digits[1] + 1))
    chosen = rng.choice(len(digits), size=n, replace=False)
    scale = float(rng.uniform(*cfg.scale))
    crops = []
    for i in chosen:
        crop = _ink_crop(digits[i].reshape(28, 28).astype(np.float32))
        f = scale * (1.0 + rng.uniform(-cfg.digit_scale, cfg.digit_scale))
        crops.append(resize(crop, max(1, round(crop.shape[0] * f)), max(1, round(crop.shape[1] * f))))
    margin = int(rng.integers(*cfg.margin)) + round(cfg.jitter * scale)
    height = max(c.shape[0] for c in crops) + 2 * margin
    tops = [
        int(
            np.clip(
                margin
                + (height - 2 * margin - c.shape[0]) // 2
                + round(rng.uniform(-1, 1) * cfg.jitter * scale),
                0,
                height - c.shape[0],
            )
        )
        for c in crops
    ]
    lefts, x = [], margin
    for c in crops:
        lefts.append(x)
        x += c.shape[1] + round(rng.uniform(*cfg.gap) * scale)
        x = max(x, lefts[-1] + 1)
    width = max(left + c.shape[1] for left, c in zip(lefts, crops, strict=True)) + margin
    image: np.ndarray = np.zeros((height, width), dtype=np.float32)
    boxes, centres = [], []
    for c, top, left in zip(crops, tops, lefts, strict=True):
        h, w = c.shape
        image[top : top + h, left : left + w] = np.maximum(image[top : top + h, left : left + w], c)
        boxes.append((top, left, top + h, left + w))
        centres.append(left + float((np.arange(w) * c.sum(0)).sum() / c.sum()))
    std = float(rng.choice(cfg.noise))
    if std > 0:
        noise = rng.normal(0.0, std, size=image.shape)
        image = np.clip(image + noise.astype(np.float32), 0.0, 1.0)
    if rng.random() < cfg.inverted:
        image = 1.0 - image
    return Strip(image, [int(labels[i]) for i in chosen], boxes, centres)


def make_strips(
    digits: np.ndarray, labels: np.ndarray, n: int, seed: int, config: StripConfig | None = None
) -> list[Strip]:
    rng = np.random.default_rng(seed)
    return [compose_strip(digits, labels, rng, config) for _ in range(n)]


@dataclass
class PreparedStrip:
    image: np.ndarray  # (H', W') float32 ink in [0, 1], scaled and padded
    factor: float  # prepared pixels per original pixel
    pad: int  # paper added on each side (prepared pixels)
    digit_height: float  # estimated in original pixels


def prepare_strip(gray: np.ndarray) -> PreparedStrip:
    """Steps 1-4 above: a grayscale picture (H, W) in [0, 1], either polarity -> ink ready to scan."""
    gray = np.asarray(gray, dtype=np.float32)
    if gray.ndim != 2 or min(gray.shape) < 2:
        raise ValueError(f"expected a two-dimensional picture of at least 2x2 pixels, got shape {gray.shape}")
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    smooth = ndimage.gaussian_filter(gray, MASK_SIGMA, mode="nearest")
    if float(np.median(border)) > otsu_threshold(smooth):  # light paper, dark ink
        gray, smooth, border = 1.0 - gray, 1.0 - smooth, 1.0 - border
    ink = np.clip(gray - float(np.median(border)), 0.0, None)
    smooth = smooth - float(np.median(border))
    if float(smooth.max()) < MIN_CONTRAST:
        raise BlankImageError("the image is blank: no digit found")
    labels, n = ndimage.label(smooth > otsu_threshold(smooth), structure=_EIGHT)
    slices = ndimage.find_objects(labels)
    heights = np.array([s[0].stop - s[0].start for s in slices], dtype=np.float64)
    tall_mask = np.isin(labels, np.flatnonzero(heights >= MIN_HEIGHT * heights.max()) + 1)
    # a short component beside a tall one is a digit's detached stroke (the bar of a 5), not noise
    near_tall = ndimage.distance_transform_edt(~tall_mask) <= NEAR * heights.max()
    keep = np.flatnonzero(ndimage.maximum(near_tall, labels, index=np.arange(1, n + 1))) + 1
    support = np.isin(labels, keep)
    near = ndimage.binary_dilation(support, structure=_EIGHT, iterations=2)
    ink = np.where(near, ink, 0.0)
    level = float(np.percentile(ink[support], 95)) if support.any() else 0.0
    if level < MIN_CONTRAST:
        raise BlankImageError("the image is blank: no digit found")
    ink = np.clip(ink / level, 0.0, 1.0)
    # heights from the unsmoothed ink over its own Otsu threshold, as MNIST's box was measured
    marks, _ = ndimage.label(ink > otsu_threshold(ink), structure=_EIGHT)
    tall = np.array(
        [s[0].stop - s[0].start for s in ndimage.find_objects(marks) if s is not None], dtype=float
    )
    if tall.size == 0:
        tall = heights
    digit_height = float(np.median(tall[tall >= 0.5 * tall.max()]))
    factor = BOX / digit_height
    h, w = ink.shape
    scaled = resize(ink, max(1, round(h * factor)), max(1, round(w * factor)))
    out = np.zeros((max(scaled.shape[0], 28) + 2 * PAD, scaled.shape[1] + 2 * PAD), dtype=np.float32)
    out[PAD : PAD + scaled.shape[0], PAD : PAD + scaled.shape[1]] = scaled
    return PreparedStrip(out, factor, PAD, digit_height)
