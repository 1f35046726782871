"""Reading a strip by recognition-driven segmentation: cut hypotheses, pieces scored by the convnet, Viterbi.

The scan (bundles/convnet.py) looks at every window in full context, so a digit touching its
neighbour is seen with the neighbour's strokes inside its window. Here the strip is instead cut into
pieces, and the convnet judges each piece *alone* (the ink outside the piece erased):

1. **Segments**: the prepared ink (bundles/digit_strips.prepare_strip: digits 20 px tall) binarised at
   `INK`; runs of columns holding ink are segments, and the middle of every run of empty columns is
   a straight cut (cost 0).
2. **Cut hypotheses inside a segment** wider than `split_width` px: for every column x0 at least
   `MIN_SIDE` px inside it, the *thinnest path* from the top row to the bottom row that stays within
   +-`REACH` px of x0, moving at most 1 px sideways per row:

       C[r, x] = ink[r, x] + min(C[r-1, x], C[r-1, x-1] + lambda, C[r-1, x+1] + lambda)

   (lambda = `LATERAL` per px moved; the path's cost is min_x C[H-1, x], the ink it cuts through).
   Paths whose cost is a local minimum over x0 (within +-2 px) are kept, at most one per `CUT_SPACING` px,
   so two touching digits get cuts where their strokes meet, and a path between two digits whose
   boxes overlap without touching costs nothing.
3. **Pieces**: between cuts i < j, the pixels right of path i and left of path j. A piece with less ink
   than `MIN_MASS` (px of full ink) is nothing (a speck, an empty gap) and costs nothing; one whose ink
   does not fit in a window (28 px) cannot be a digit (unless nothing else can be cut: between two
   neighbouring cuts); any other piece is cut out, placed in a 28x28
   window with its centre of mass at (14, 14) (MNIST's convention) and scored by the net:

       s(i, j) = max_k log p(k | piece) + beta          k in 0..9, p: softmax over the 11 outputs

   where the 11th output, "no digit centred here", takes the probability of a half digit or of two
   digits squeezed together (the net was trained to answer it between two digits), and beta
   (`piece_bias`) is a count prior: each digit read adds beta, so beta < 0 prefers fewer pieces.
4. **Viterbi** over the cuts (ordered left to right) picks the segmentation of the whole strip,

       V[0] = 0,   V[j] = max_{i < j} V[i] + s(i, j),

   and the best path's pieces that are digits, left to right, are the string read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from models.convnet_layout import CENTRE, N_DIGITS, NONE, SIDE, STRIDE

INK = 0.25  # ink level that counts a pixel as ink for segments and widths
MIN_SIDE = 3  # px: a cut inside a segment leaves at least this much of it on either side
REACH = 6  # px: a thinnest path stays within +- this of its column
LATERAL = 0.15  # cost of moving the path 1 px sideways (in units of full ink pixels)
CUT_SPACING = 3  # px between two kept cuts inside a segment
MIN_MASS = 6.0  # px of full ink: less is a speck, not a digit
Classifier = Callable[[np.ndarray], np.ndarray]  # (n, 28, 28) windows -> (n, 11) log-probabilities


@dataclass(frozen=True)
class Piece:
    digit: int
    log_probs: np.ndarray  # (11,) log p over the net's outputs (with the scan's: their normalised product)
    box: tuple[int, int, int, int]  # (top, left, bottom, right) of its ink in the prepared picture


def segments(ink: np.ndarray) -> list[tuple[int, int]]:
    """Runs of columns holding ink, as (first, last + 1)."""
    cols = np.concatenate([[False], (ink > INK).any(axis=0), [False]])
    edges = np.flatnonzero(np.diff(cols.astype(np.int8)))
    return [(int(a), int(b)) for a, b in zip(edges[0::2], edges[1::2], strict=True)]


def thinnest_paths(ink: np.ndarray, columns: np.ndarray, reach: int = REACH) -> tuple[np.ndarray, np.ndarray]:
    """The thinnest top-to-bottom path within +-reach px of each column (step 2 of the module doc).

    ink (H, W), columns (n,) -> paths (n, H) (the path's column in every row), costs (n,).
    """
    h, w = ink.shape
    n = len(columns)
    offsets = np.arange(-reach, reach + 1)
    xs = np.clip(columns[:, None] + offsets[None], 0, w - 1)  # (n, 2R+1)
    lateral = LATERAL * np.array([1.0, 0.0, 1.0])
    cost = ink[0][xs].astype(np.float64)
    choice = np.zeros((h, n, len(offsets)), dtype=np.int8)  # -1, 0, +1: where the path came from
    big = np.full((n, 1), np.inf)
    for r in range(1, h):
        left = np.concatenate([big, cost[:, :-1]], axis=1)  # came from offset o - 1
        right = np.concatenate([cost[:, 1:], big], axis=1)  # from o + 1
        options = np.stack([left + lateral[0], cost, right + lateral[2]])  # (3, n, 2R+1)
        best = options.argmin(axis=0)
        choice[r] = best - 1
        cost = options.min(axis=0) + ink[r][xs]
    end = cost.argmin(axis=1)
    costs = cost[np.arange(n), end]
    paths = np.empty((n, h), dtype=np.int64)
    o = end
    for r in range(h - 1, -1, -1):
        paths[:, r] = xs[np.arange(n), o]
        o = o + choice[r, np.arange(n), o]
    return paths, costs


def cut_hypotheses(ink: np.ndarray, split_width: float, guides: list[float] | None = None) -> np.ndarray:
    """All cuts of a prepared strip, left to right: (m, H) columns, one path per cut (steps 1-2), and
    the thinnest cut between every two neighbouring `guides` (columns where the scan saw a digit)
    that lie in the same segment (`cut_between`)."""
    h, w = ink.shape
    runs = segments(ink)
    straight = [0] + [(b + a2) // 2 for (_, b), (a2, _) in zip(runs, runs[1:], strict=False)] + [w - 1]
    cuts = [np.full(h, x, dtype=np.int64) for x in straight]
    for a, b in runs:
        if b - a <= split_width or b - a < 2 * MIN_SIDE + 1:
            continue
        columns = np.arange(a + MIN_SIDE, b - MIN_SIDE)
        paths, costs = thinnest_paths(ink, columns)
        minima = [i for i in range(len(columns)) if costs[i] <= costs[max(i - 2, 0) : i + 3].min() + 1e-9]
        kept: list[int] = []
        for i in sorted(minima, key=lambda i: costs[i]):
            if all(abs(int(columns[i]) - int(columns[k])) >= CUT_SPACING for k in kept):
                kept.append(i)
        cuts += [paths[i] for i in kept]
    peaks = sorted(guides or [])
    for left, right in zip(peaks, peaks[1:], strict=False):
        if any(lo <= left and right < hi for lo, hi in runs):
            cuts.append(cut_between(ink, left, right))
    unique = np.unique(np.stack(cuts), axis=0)
    return unique[np.argsort(unique.mean(axis=1), kind="stable")]


@dataclass(frozen=True)
class Cutout:
    window: np.ndarray  # (28, 28): the piece alone, its centre of mass at (14, 14)
    mass: float  # its ink, px of full ink
    box: tuple[int, int, int, int]  # its ink's (top, left, bottom, right) in the picture; 0s if none
    centre: tuple[float, float]  # its centre of mass (row, column) in the picture
    fits: bool  # all its ink is inside the window


def piece_window(ink: np.ndarray, left: np.ndarray, right: np.ndarray) -> Cutout:
    """The ink strictly between two cut paths, in a 28x28 window centred on its centre of mass."""
    h, w = ink.shape
    lo, hi = max(int(left.min()), 0), min(int(right.max()) + 1, w)
    cols = np.arange(lo, hi)
    inside = (cols[None] > left[:, None]) & (cols[None] < right[:, None])
    part = np.where(inside, ink[:, lo:hi], 0.0)
    mass = float(part.sum())
    window = np.zeros((SIDE, SIDE), dtype=np.float32)
    marked = part > INK
    if mass <= 0 or not marked.any():
        return Cutout(window, mass, (0, 0, 0, 0), (0.0, 0.0), True)
    rows_any, cols_any = np.flatnonzero(marked.any(1)), np.flatnonzero(marked.any(0))
    box = (int(rows_any[0]), lo + int(cols_any[0]), int(rows_any[-1]) + 1, lo + int(cols_any[-1]) + 1)
    cy = float((part.sum(1) * np.arange(h)).sum() / mass)
    cx = float((part.sum(0) * cols).sum() / mass)
    top, left_edge = int(round(cy)) - CENTRE, int(round(cx)) - CENTRE
    # copy the overlap of the window [top, top+28) x [left_edge, left_edge+28) with the part
    r0, r1 = max(top, 0), min(top + SIDE, h)
    c0, c1 = max(left_edge, lo), min(left_edge + SIDE, hi)
    if r0 < r1 and c0 < c1:
        window[r0 - top : r1 - top, c0 - left_edge : c1 - left_edge] = part[r0:r1, c0 - lo : c1 - lo]
    fits = top <= box[0] and box[2] <= top + SIDE and left_edge <= box[1] and box[3] <= left_edge + SIDE
    return Cutout(window, mass, box, (cy, cx), fits)


def cut_between(ink: np.ndarray, a: float, b: float) -> np.ndarray:
    """The thinnest cut between two digits centred at columns a < b: of the thinnest paths near the
    columns of the middle third between them, straying at most a quarter of the distance from their
    column (step 2; so a cut never reaches a digit's centre, where it would split a loop), the one
    cutting least ink, ties (within `LATERAL` per px) going to the one nearest the middle.
    -> (H,) the path's column in every row."""
    third = (b - a) / 3
    lo, hi = int(np.ceil(a + third)), int(np.floor(b - third))
    if hi < lo:
        lo = hi = int(round((a + b) / 2))
    columns = np.arange(lo, hi + 1)
    paths, costs = thinnest_paths(ink, columns, reach=max(1, int((b - a) / 4)))
    best = int(np.argmin(costs + LATERAL * np.abs(columns - (a + b) / 2)))
    path: np.ndarray = paths[best]
    return path


def isolate(ink: np.ndarray, centres: list[float]) -> list[Cutout]:
    """Each digit found at the given columns (left to right), cut out alone: the ink between the
    thinnest cuts to its neighbours (`cut_between`), in a window centred on its centre of mass."""
    h, w = ink.shape
    edges = [np.zeros(h, dtype=np.int64) - 1]
    edges += [cut_between(ink, a, b) for a, b in zip(centres, centres[1:], strict=False)]
    edges.append(np.full(h, w, dtype=np.int64))
    return [piece_window(ink, left, right) for left, right in zip(edges, edges[1:], strict=False)]


def scan_log_probs(probs: np.ndarray, step: int, centres: np.ndarray) -> np.ndarray:
    """log p over the 11 outputs of the scan (bundles/convnet.ConvNetBundle.scan: (11, R, C), one
    output per 4 px down and `step` px across) at the window nearest each (row, column) centre,
    taking of the windows within one output of it the one where a digit is most present.

    centres (n, 2) -> (n, 11)."""
    _, rows, cols = probs.shape
    r = np.clip(np.rint((centres[:, 0] - CENTRE) / STRIDE).astype(int), 0, rows - 1)
    c = np.clip(np.rint((centres[:, 1] - CENTRE) / step).astype(int), 0, cols - 1)
    best = np.zeros((len(centres), probs.shape[0]))
    presence = np.full(len(centres), -1.0)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            rr, cc = np.clip(r + dr, 0, rows - 1), np.clip(c + dc, 0, cols - 1)
            here = probs[:, rr, cc].T  # (n, 11)
            better = 1.0 - here[:, NONE] > presence
            best[better], presence[better] = here[better], 1.0 - here[better, NONE]
    out: np.ndarray = np.log(np.maximum(best, 1e-12))
    return out


def read_pieces(
    ink: np.ndarray,
    classify: Classifier,
    split_width: float,
    piece_bias: float,
    context: Callable[[np.ndarray], np.ndarray] | None = None,
    context_weight: float = 0.0,
    guides: list[float] | None = None,
) -> list[Piece]:
    """Steps 1-4: the best segmentation of a prepared strip into digits, left to right."""
    cuts = cut_hypotheses(ink, split_width, guides)
    m = len(cuts)
    extent = [(int(c.min()), int(c.max())) for c in cuts]
    inked = np.asarray(ink > INK).any(axis=0)
    width = ink.shape[1]
    columns = np.arange(width)
    # first inked column at or after x, last inked column at or before x
    first = np.minimum.accumulate(np.where(inked, columns, width)[::-1])[::-1]
    last = np.maximum.accumulate(np.where(inked, columns, -1))
    # the candidate pieces: (i, j) whose ink is no wider than a window
    pairs, windows, boxes, centres, specks = [], [], [], [], set()
    for i in range(m):
        for j in range(i + 1, m):
            if last[extent[j][0]] - first[extent[i][1]] > SIDE + 2 * REACH:
                break  # its ink surely wider than a window, and so every piece ending further right
            cut = piece_window(ink, cuts[i], cuts[j])
            if cut.mass < MIN_MASS:
                specks.add((i, j))
            elif cut.fits or j == i + 1:  # ink outside the window: only between neighbouring cuts
                pairs.append((i, j))
                windows.append(cut.window)
                boxes.append(cut.box)
                centres.append(cut.centre)
    log_probs = classify(np.stack(windows)) if windows else np.zeros((0, NONE + 1))
    if context is not None and context_weight and windows:
        log_probs = log_probs + context_weight * context(np.array(centres))
    score = {}
    for (i, j), lp in zip(pairs, log_probs, strict=True):
        score[(i, j)] = float(lp[:N_DIGITS].max()) + piece_bias
    best = np.full(m, -np.inf)
    best[0] = 0.0
    back: list[tuple[int, int] | None] = [None] * m  # (previous cut, index into pairs or -1)
    index = {pair: k for k, pair in enumerate(pairs)}
    for j in range(1, m):
        for i in range(j):
            if not np.isfinite(best[i]):
                continue
            if (i, j) in specks:
                value, k = best[i], -1
            elif (i, j) in score:
                value, k = best[i] + score[(i, j)], index[(i, j)]
            else:
                continue
            if value > best[j]:
                best[j], back[j] = value, (i, k)
    found: list[Piece] = []
    j = m - 1
    while back[j] is not None:
        i, k = back[j]  # type: ignore[misc]
        if k >= 0:
            lp = log_probs[k] - np.logaddexp.reduce(log_probs[k])  # normalised over the 11 outputs
            found.append(Piece(int(lp[:N_DIGITS].argmax()), lp, boxes[k]))
        j = i
    return found[::-1]
