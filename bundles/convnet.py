"""Serving side of the scanning convnet: recognising normalised digits and reading every digit in a picture.

A bundle (bundles/io.py) of kind "convnet": config.json with the architecture
(models/convnet.ConvNetArchitecture) and the reader's decoding settings, weights.safetensors with the
tensors of `models.convnet.weight_shapes`. Inference is numpy (`forward` below, the same layers as
models/convnet.ScanningConvNet in eval mode), so serving needs no torch.

Reading a picture (`read`): prepare it (bundles/digit_strips.prepare_strip: ink, scale so digits are
MNIST-sized, pad), run the net over all of it at once (one output per 4 px, models/convnet.py; with
`fine`, also over the picture moved 2 px left, interleaved: one output per 2 px across), then

    presence[r, c] = 1 - p(NONE | window r, c)          p: softmax over the 11 outputs
    s[c] = max_r presence[r, c],  r*(c) its row           (digits may sit higher or lower)

Columns where s is a local maximum and at least `threshold` are candidates; greedily, the strongest
candidate is kept and those closer than `min_distance` px (in the scaled picture) are dropped. Each
kept column is a digit. Its class comes from the scan itself when `refine` is 0: the windows of rows
r* - 1 .. r* + 1 in its column (and `vote_columns` columns on either side) vote with their presence,

    p(digit = k) = sum_{r, c'} p(k | window r, c') / sum_{r, c'} presence[r, c']

(the net was trained to give each window's digit probabilities in proportion to how well a digit is
centred in it, training/convnet_windows.py). With `refine` > 0 it is instead the softmax over the
10 digit outputs at (r*, c), averaged over the 3 x 3 windows shifted by 0 and +-`refine` px (9 more
windows through the net per digit). The box is the 20x20 MNIST box around the window's centre,
mapped back to the picture's pixels. The string reads the digits from left to right.

With `alone_weight` w > 0 each digit found is also cut out alone (bundles/convnet_pieces.isolate: the
ink between the thinnest cuts to its neighbours) and its class is p(k) ~ p_scan(k) p_alone(k)^w.
With `segment` the scan's peaks are not the digits: the strip is cut into pieces and the best
segmentation is chosen by Viterbi over the cuts (bundles/convnet_pieces.py), each piece scored by the
net alone and, with `context_weight`, by the scan at its centre.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bundles.convnet_pieces import isolate, read_pieces, scan_log_probs
from bundles.digit_preprocess import BOX
from bundles.digit_strips import PreparedStrip, prepare_strip
from bundles.io import BundleError, bundle_id, check_shapes, read_bundle
from models.convnet_layout import CENTRE, N_DIGITS, NONE, SIDE, STRIDE, ConvNetArchitecture, weight_shapes

CONVNET_FORMAT_VERSION = 1
MAX_SCAN_PIXELS = 4_000_000  # a prepared picture larger than this holds digits too small to read
SCAN_BAND_ROWS = 32  # output rows computed at once: bounds the first layer's activations on big pictures


def _conv_relu(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """relu(valid convolution): x (B, H, W, Cin), weight (Cout, Cin, kh, kw) -> (B, H-kh+1, W-kw+1, Cout).

    out[b, i, j] = sum_{dy, dx} x[b, i + dy, j + dx] @ weight[:, :, dy, dx].T + bias: one matrix product
    per kernel offset, so no im2col copy of kh * kw times the input is ever made.
    """
    _, cin, kh, kw = weight.shape
    h, w = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    out = np.zeros((x.shape[0], h, w, weight.shape[0]), dtype=np.float32)
    for dy in range(kh):
        for dx in range(kw):
            out += x[:, dy : dy + h, dx : dx + w, :] @ weight[:, :, dy, dx].T
    out += bias
    return np.maximum(out, 0.0, out=out)


def _max_pool(x: np.ndarray) -> np.ndarray:
    """2x2 max-pooling with stride 2, dropping an odd last row/column (torch's floor mode)."""
    b, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2]
    pooled: np.ndarray = x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
    return pooled


def _features(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """conv1, pool, conv2 (before its pooling): x (B, H, W) -> (B, (H-4)//2-4, (W-4)//2-4, c2)."""
    h = x[..., None].astype(np.float32, copy=False)
    h = _max_pool(_conv_relu(h, weights["conv1.weight"], weights["conv1.bias"]))
    return _conv_relu(h, weights["conv2.weight"], weights["conv2.bias"])


def _head(weights: dict[str, np.ndarray], h: np.ndarray) -> np.ndarray:
    """pool, conv3, conv4: `_features` -> logits (B, R, C, 11)."""
    h = _conv_relu(_max_pool(h), weights["conv3.weight"], weights["conv3.bias"])
    logits: np.ndarray = h @ weights["conv4.weight"][:, :, 0, 0].T + weights["conv4.bias"]
    return logits


def forward(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """models/convnet.ScanningConvNet.forward in numpy (eval mode: no dropout).

    x (B, H, W) ink, H, W >= 28 -> logits (B, (H-28)//4+1, (W-28)//4+1, 11), channels last.
    """
    return _head(weights, _features(weights, x))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis."""
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probabilities: np.ndarray = z / z.sum(axis=-1, keepdims=True)
    return probabilities


@dataclass(frozen=True)
class ReaderConfig:
    threshold: float = 0.5  # least presence of a digit
    min_distance: float = 7.0  # px (scaled picture, digits 20 px tall) between two digits' centres
    refine: int = (
        2  # px: a found digit's class averages the windows shifted by 0, +-refine (0: the scan's rows)
    )
    fine: bool = False  # scan every 2 px across instead of 4 (twice the work)
    vote_columns: int = 0  # the class vote also takes this many scan columns on either side
    segment: bool = False  # read by cutting the strip into pieces instead (bundles/convnet_pieces.py)
    split_width: float = 12.0  # px: segments wider than this get cut hypotheses inside
    piece_bias: float = 0.0  # count prior: added to each piece's log-probability
    context_weight: float = 0.0  # weight of the scan's log-probabilities at a piece's centre (0: no scan)
    guide_threshold: float = 1.0  # pieces: also cut between scan peaks at least this strong (1: none)
    alone_weight: float = 0.0  # scan reading: weight of each found digit's class cut out alone (0: none)


@dataclass
class FoundDigit:
    digit: int
    probability: float  # p(this digit | a digit is there)
    presence: float  # 1 - p(no digit centred here)
    box: tuple[
        int, int, int, int
    ]  # (top, left, bottom, right) in the picture's pixels, bottom/right exclusive


@dataclass
class Reading:
    text: str
    digits: list[FoundDigit]
    digit_height: float  # px in the picture

    def as_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "digits": [asdict(d) for d in self.digits],
            "digit_height": self.digit_height,
        }


def _architecture(config: dict[str, Any], path: Path) -> ConvNetArchitecture:
    raw = config.get("architecture")
    if not isinstance(raw, dict):
        raise BundleError(f"{path}: config.json has no architecture object")
    try:
        return ConvNetArchitecture(**raw)
    except TypeError as err:
        raise BundleError(f"{path}: bad architecture: {err}") from err


class ConvNetBundle:
    """A trained scanning convnet: `predict_proba((n, 784)) -> (n, 10)` and `read(picture) -> Reading`."""

    kind = "convnet"

    def __init__(
        self, path: Path, config: dict[str, Any], weights: dict[str, np.ndarray], metrics: dict[str, Any]
    ):
        self.path, self.config, self.metrics = path, config, metrics
        self.architecture = _architecture(config, path)
        self.reader = ReaderConfig(**config.get("reader", {}))
        self.weights = {name: np.asarray(value, dtype=np.float32) for name, value in weights.items()}
        self.bundle_id = bundle_id(path, self.kind)

    @classmethod
    def load(cls, path: Path | str) -> ConvNetBundle:
        path = Path(path)
        config, weights, metrics = read_bundle(path, kind=cls.kind, format_version=CONVNET_FORMAT_VERSION)
        check_shapes(path, weights, weight_shapes(_architecture(config, path)))
        return cls(path, config, weights, metrics)

    def _digit_probabilities(self, windows: np.ndarray) -> np.ndarray:
        """p(digit | a digit is there) of (n, 28, 28) windows: softmax over the 10 digit logits."""
        return softmax(forward(self.weights, windows)[:, 0, 0, :N_DIGITS])

    def predict_proba(self, images: np.ndarray, variant: str | None = None) -> np.ndarray:
        """p(digit) of MNIST-normalised digits.  (n, 784) in [0, 1] -> (n, 10), rows summing to 1."""
        x = np.asarray(images, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != SIDE * SIDE:
            raise ValueError(f"images must have shape (n, {SIDE * SIDE}), got {x.shape}")
        return self._digit_probabilities(x.reshape(-1, SIDE, SIDE)).astype(np.float64)

    def scan(self, ink: np.ndarray, fine: bool = False) -> np.ndarray:
        """Softmax over the 11 outputs at every window of prepared ink (H, W).  -> (11, R, C).

        Output (r, c) is the window at rows 4r .., columns 4c .. (with `fine`: columns 2c ..).
        Computed in bands of SCAN_BAND_ROWS output rows: output row r reads input rows 4r .. 4r + 27,
        and a band starting at a multiple of 4 keeps the poolings aligned, so the bands are exact."""
        ink = np.asarray(ink, dtype=np.float32)
        if ink.ndim != 2 or min(ink.shape) < SIDE:
            raise ValueError(f"expected a picture (H, W) with H, W >= {SIDE}, got {ink.shape}")
        rows = (ink.shape[0] - SIDE) // STRIDE + 1
        fine = fine and ink.shape[1] >= SIDE + STRIDE // 2  # else too narrow for a second column
        coarse, moved = [], []
        for r in range(0, rows, SCAN_BAND_ROWS):
            h = _features(
                self.weights, ink[None, r * STRIDE : (min(r + SCAN_BAND_ROWS, rows) - 1) * STRIDE + SIDE]
            )
            coarse.append(_head(self.weights, h)[0])
            if fine:  # the picture moved 2 px left moves the first pooling's output 1 column: conv2's
                # output of it is this one without its first column, and only what follows differs
                moved.append(_head(self.weights, h[:, :, 1:])[0])
        out = softmax(np.concatenate(coarse, axis=0)).transpose(2, 0, 1)
        if not fine:
            return out
        second = softmax(np.concatenate(moved, axis=0)).transpose(2, 0, 1)  # windows at columns 4c + 2
        both = np.empty((*out.shape[:2], out.shape[2] + second.shape[2]), dtype=out.dtype)
        both[:, :, 0::2], both[:, :, 1::2] = out, second
        return both

    def _classify(self, ink: np.ndarray, corners: list[tuple[int, int]], refine: int) -> list[np.ndarray]:
        """p(digit | a digit) of the windows with top-left corners (y, x), averaged over the windows
        shifted by 0 and +-refine px in each direction (3 x 3 windows; shifts that leave the picture
        are skipped)."""
        shifts = list(dict.fromkeys((dy, dx) for dy in (-refine, 0, refine) for dx in (-refine, 0, refine)))
        out = []
        for top, left in corners:
            windows = [
                ink[y : y + SIDE, x : x + SIDE]
                for dy, dx in shifts
                for y, x in [(top + dy, left + dx)]
                if 0 <= y <= ink.shape[0] - SIDE and 0 <= x <= ink.shape[1] - SIDE
            ]
            out.append(self._digit_probabilities(np.stack(windows)).mean(0))
        return out

    @staticmethod
    def _vote(probs: np.ndarray, row: int, col: int, columns: int = 0) -> np.ndarray:
        """p(digit | a digit) at column `col` from rows row-1 .. row+1 and columns col-`columns` ..
        col+`columns` of the scan, by presence."""
        near = probs[:, max(row - 1, 0) : row + 2, max(col - columns, 0) : col + columns + 1]
        votes: np.ndarray = near[:N_DIGITS].sum(axis=(1, 2))
        return votes / max(float(votes.sum()), 1e-12)

    def _log_probs(self, windows: np.ndarray) -> np.ndarray:
        """log p over the 11 outputs of (n, 28, 28) windows."""
        logits = forward(self.weights, windows)[:, 0, 0, :]
        shifted = logits - logits.max(axis=1, keepdims=True)
        out: np.ndarray = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return out

    @staticmethod
    def _peaks(strength: np.ndarray, threshold: float) -> list[int]:
        """Columns where the presence is a local maximum and at least `threshold`."""
        padded = np.concatenate([[-1.0], strength, [-1.0]])
        return [
            c
            for c in range(len(strength))
            if strength[c] >= threshold and strength[c] >= padded[c] and strength[c] >= padded[c + 2]
        ]

    def _read_pieces(self, gray: np.ndarray, prepared: PreparedStrip, cfg: ReaderConfig) -> Reading:
        """The reading by recognition-driven segmentation (bundles/convnet_pieces.py)."""
        context, guides = None, None
        if cfg.context_weight or cfg.guide_threshold < 1:
            probs = self.scan(prepared.image, cfg.fine)
            step = STRIDE // 2 if cfg.fine else STRIDE
            strength = (1.0 - probs[NONE]).max(axis=0)
            guides = [float(c * step + CENTRE) for c in self._peaks(strength, cfg.guide_threshold)]

            def context(centres: np.ndarray) -> np.ndarray:
                return scan_log_probs(probs, step, centres)

        pieces = read_pieces(
            prepared.image,
            self._log_probs,
            cfg.split_width,
            cfg.piece_bias,
            context,
            cfg.context_weight,
            guides,
        )
        h, w = np.asarray(gray).shape
        found = []
        for piece in pieces:
            p = np.exp(piece.log_probs)
            top, left, bottom, right = ((v - prepared.pad) / prepared.factor for v in piece.box)
            box = (
                int(np.clip(np.floor(top), 0, h - 1)),
                int(np.clip(np.floor(left), 0, w - 1)),
                int(np.clip(np.ceil(bottom), 1, h)),
                int(np.clip(np.ceil(right), 1, w)),
            )
            box = (box[0], box[1], max(box[2], box[0] + 1), max(box[3], box[1] + 1))
            digit_p = p[piece.digit] / max(float(p[:N_DIGITS].sum()), 1e-12)
            found.append(FoundDigit(piece.digit, float(digit_p), float(1.0 - p[NONE]), box))
        return Reading("".join(str(d.digit) for d in found), found, prepared.digit_height)

    def _with_alone(
        self, ink: np.ndarray, columns: list[float], classes: list[np.ndarray], cfg: ReaderConfig
    ) -> list[np.ndarray]:
        """p(digit | a digit) of the scan times that of the digit cut out alone (bundles/convnet_pieces
        .isolate: the ink between the thinnest cuts to its neighbours) to the power `alone_weight`,
        renormalised:  p(k) ~ p_scan(k) p_alone(k)^w."""
        cutouts = isolate(ink, columns)
        alone = self._log_probs(np.stack([c.window for c in cutouts]))[:, :N_DIGITS]
        out = []
        for p, lp in zip(classes, alone, strict=True):
            z = np.log(np.maximum(p, 1e-12)) + cfg.alone_weight * lp
            q = np.exp(z - z.max())
            out.append(q / q.sum())
        return out

    def read(self, gray: np.ndarray, reader: ReaderConfig | None = None) -> Reading:
        """Every digit in a grayscale picture (H, W) in [0, 1], either polarity, read left to right.

        Raises bundles.digit_preprocess.BlankImageError for a blank picture and ValueError when its
        digits are too small for the picture's size.
        """
        cfg = reader or self.reader
        prepared = prepare_strip(gray)
        if prepared.image.size > MAX_SCAN_PIXELS:
            raise ValueError(
                f"the digits are too small for the picture ({prepared.digit_height:.1f} px tall in a "
                f"{gray.shape[0]}x{gray.shape[1]} picture): crop the picture to the digits"
            )
        if cfg.segment:
            return self._read_pieces(gray, prepared, cfg)
        probs = self.scan(prepared.image, cfg.fine)
        step = STRIDE // 2 if cfg.fine else STRIDE  # px between output columns
        presence = 1.0 - probs[NONE]  # (R, C)
        rows = presence.argmax(axis=0)
        strength = presence.max(axis=0)
        peaks = self._peaks(strength, cfg.threshold)
        kept: list[int] = []
        for c in sorted(peaks, key=lambda c: -strength[c]):
            if all(abs(c - k) * step >= cfg.min_distance for k in kept):
                kept.append(c)
        kept.sort()
        if cfg.refine:
            corners = [(int(rows[c]) * STRIDE, c * step) for c in kept]
            classes = self._classify(prepared.image, corners, cfg.refine)
        else:
            classes = [self._vote(probs, int(rows[c]), c, cfg.vote_columns) for c in kept]
        if cfg.alone_weight and kept:
            classes = self._with_alone(prepared.image, [c * step + CENTRE for c in kept], classes, cfg)
        found = []
        h, w = np.asarray(gray).shape
        for c, p in zip(kept, classes, strict=True):
            r = int(rows[c])
            digit = int(p.argmax())
            cy, cx = r * STRIDE + CENTRE - prepared.pad, c * step + CENTRE - prepared.pad
            half = BOX / 2
            top, bottom = (cy - half) / prepared.factor, (cy + half) / prepared.factor
            left, right = (cx - half) / prepared.factor, (cx + half) / prepared.factor
            box = (
                int(np.clip(np.floor(top), 0, h)),
                int(np.clip(np.floor(left), 0, w)),
                int(np.clip(np.ceil(bottom), 0, h)),
                int(np.clip(np.ceil(right), 0, w)),
            )
            found.append(FoundDigit(digit, float(p[digit]), float(strength[c]), box))
        return Reading("".join(str(d.digit) for d in found), found, prepared.digit_height)
