"""Recognition-driven segmentation (bundles/convnet_pieces.py) and windows cut as it cuts strips."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from mnist_like import mnist_like

from bundles.convnet import ConvNetBundle, ReaderConfig
from bundles.convnet_pieces import (
    INK,
    cut_between,
    cut_hypotheses,
    isolate,
    piece_window,
    read_pieces,
    segments,
    thinnest_paths,
)
from models.convnet_layout import CENTRE, N_OUTPUTS, NONE, SIDE
from training.convnet_windows import WindowConfig, make_windows


def _digit(i: int) -> np.ndarray:
    """A test digit of mnist_like, cropped to its ink columns and rows."""
    d = mnist_like().test_x[i].reshape(SIDE, SIDE)
    rows, cols = np.flatnonzero(d.max(1) > INK), np.flatnonzero(d.max(0) > INK)
    out: np.ndarray = d[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return out


def _touching(a: np.ndarray, b: np.ndarray, overlap: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two digits side by side, b's box `overlap` px over a's: (picture, a alone, b alone)."""
    h = max(a.shape[0], b.shape[0])
    width = 14 + a.shape[1] + b.shape[1] - overlap + 14
    first, second = np.zeros((h + 28, width), np.float32), np.zeros((h + 28, width), np.float32)
    first[14 : 14 + a.shape[0], 14 : 14 + a.shape[1]] = a
    left = 14 + a.shape[1] - overlap
    second[14 : 14 + b.shape[0], left : left + b.shape[1]] = b
    return np.maximum(first, second), first, second


def test_the_thinnest_path_goes_through_the_thin_bridge() -> None:
    ink = np.zeros((30, 40), np.float32)
    ink[:, 8:14] = 1.0  # a thick stroke on the left ...
    ink[:, 22:30] = 1.0  # ... one on the right
    ink[5:25, 14:22] = 1.0  # joined by a block, except for a thin vertical slit at column 18
    ink[5:25, 18] = 0.0
    ink[14, 18] = 1.0  # but for one pixel
    paths, costs = thinnest_paths(ink, np.array([16, 18, 20]))
    assert costs.min() == 1.0  # the single pixel crossing the slit
    best = paths[costs.argmin()]
    assert (best[5:25] == 18).all()


def test_gaps_are_cuts_and_cuts_run_left_to_right() -> None:
    ink = np.zeros((28, 80), np.float32)
    ink[4:24, 10:20] = 1.0
    ink[4:24, 30:40] = 1.0
    assert segments(ink) == [(10, 20), (30, 40)]
    cuts = cut_hypotheses(ink, split_width=100.0)
    assert [int(c[0]) for c in cuts] == [0, 25, 79] and all((c == c[0]).all() for c in cuts)
    # a segment wider than split_width gets cuts inside it too
    assert len(cut_hypotheses(ink, split_width=5.0)) > 3


def test_a_piece_is_cut_out_alone_with_its_centre_of_mass_at_the_window_centre() -> None:
    digit = _digit(0)
    picture, alone, _ = _touching(digit, _digit(1), overlap=-6)  # 6 px apart
    h, w = picture.shape
    middle = 14 + digit.shape[1] + 3
    cut = piece_window(picture, np.full(h, -1), np.full(h, middle))
    assert abs(cut.mass - float(alone.sum())) < 1e-3
    rows, cols = np.indices(cut.window.shape)
    cy = float((rows * cut.window).sum() / cut.window.sum())
    cx = float((cols * cut.window).sum() / cut.window.sum())
    assert abs(cy - CENTRE) <= 0.5 and abs(cx - CENTRE) <= 0.5
    assert cut.box[1] == 14 and cut.box[3] == 14 + digit.shape[1]


def test_two_touching_digits_are_cut_apart() -> None:
    """Each cut-out holds (nearly) all of its digit's ink and (nearly) none of the other's."""
    for i, j in [(0, 1), (2, 3), (4, 5), (6, 7)]:
        a, b = _digit(i), _digit(j)
        picture, first, second = _touching(a, b, overlap=2)
        ca = 14 + a.shape[1] / 2
        cb = 14 + a.shape[1] - 2 + b.shape[1] / 2
        path = cut_between(picture, ca, cb)
        cols = np.arange(picture.shape[1])[None]
        left, right = cols < path[:, None], cols > path[:, None]
        assert (first * left).sum() > 0.85 * first.sum() and (second * right).sum() > 0.85 * second.sum()
        assert (second * left).sum() < 0.15 * second.sum() and (first * right).sum() < 0.15 * first.sum()
        pieces = isolate(picture, [ca, cb])
        assert len(pieces) == 2 and pieces[0].box[1] < pieces[1].box[1]


def test_viterbi_prefers_the_segmentation_the_classifier_scores_best() -> None:
    """With a classifier that knows a digit by its ink width (a 1 is narrow, a 0 wide, two 1s side by
    side are 'no digit'), the best segmentation of '1 0 1' is read."""
    ink = np.zeros((48, 90), np.float32)
    ink[14:34, 20:23] = 1.0  # a "1"
    ink[14:34, 30:33] = ink[14:34, 43:46] = 1.0  # a "0": two strokes ...
    ink[14:17, 30:46] = ink[31:34, 30:46] = 1.0  # ... closed top and bottom
    ink[14:34, 55:58] = 1.0  # a "1"

    def classify(windows: np.ndarray) -> np.ndarray:
        out = np.full((len(windows), N_OUTPUTS), -10.0)
        for k, window in enumerate(windows):
            cols = np.flatnonzero(window.max(0) > 0.5)
            width = cols[-1] - cols[0] + 1
            filled = window[:, cols[0] : cols[-1] + 1].max(0).min() > 0.5  # no empty column inside
            out[k, 1 if width <= 4 else 0 if width >= 14 and filled else NONE] = 0.0
        return out

    pieces = read_pieces(ink, classify, split_width=100.0, piece_bias=0.0)
    assert [p.digit for p in pieces] == [1, 0, 1]
    assert [p.box[1] for p in pieces] == [20, 30, 55]


def test_the_segmenting_reader_reads_a_strip(convnet_run: tuple[Path, dict[str, Any]]) -> None:
    bundle = ConvNetBundle.load(convnet_run[0])
    picture, _, _ = _touching(_digit(0), _digit(1), overlap=1)
    for reader in (
        ReaderConfig(segment=True, piece_bias=1.0),
        ReaderConfig(segment=True, context_weight=1.0, guide_threshold=0.2, fine=True),
        ReaderConfig(alone_weight=1.0),
    ):
        reading = bundle.read(picture, reader)
        assert reading.text == "".join(str(d.digit) for d in reading.digits) and reading.digits
        h, w = picture.shape
        for found in reading.digits:
            top, left, bottom, right = found.box
            assert 0 <= top < bottom <= h and 0 <= left < right <= w
            assert 0 <= found.probability <= 1 and 0 <= found.presence <= 1


def test_cut_windows_lose_the_columns_beyond_the_cut_and_halved_ones_have_no_digit() -> None:
    data = mnist_like()
    x, y = torch.from_numpy(data.train_x[:300]), torch.from_numpy(data.train_y[:300])
    plain = WindowConfig(context=1.0, noisy=0.0, empty=0.0)
    w0, _ = make_windows(x, y, plain, torch.Generator().manual_seed(0))
    cut = WindowConfig(context=1.0, noisy=0.0, empty=0.0, cut=1.0)
    w1, _ = make_windows(x, y, cut, torch.Generator().manual_seed(0))
    assert float(w1.sum()) < float(w0.sum())  # the neighbours' ink beyond the cuts is gone
    assert bool((w1 <= w0 + 1e-6).all())  # cutting only erases
    halved_cfg = WindowConfig(centred=1.0, context=0.0, noisy=0.0, empty=0.0, halved=1.0, halved_width=0.0)
    w2, t2 = make_windows(x, y, halved_cfg, torch.Generator().manual_seed(0))
    assert bool((t2[:, NONE] == 1.0).all())  # every window halved: no digit in any
    assert float(w2.sum()) < 0.8 * float(w0.sum())
