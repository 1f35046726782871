"""Moving MNIST, generated locally from MNIST digits: two digits bouncing in a 64x64 field (seed 003).

The standard construction (Srivastava, Mansimov & Salakhutdinov 2015): each of `n_digits` 28x28 digits
starts at a uniformly random top-left corner in [0, size - 28]^2 and moves in a uniformly random
direction at `speed` pixels per frame; when it would leave the field the offending velocity component
is reflected (it bounces). Digits are pasted at their rounded positions and combined by the pixelwise
maximum. Frames are float32 in [0, 1], ink = 1.

Everything is a pure function of the digits and a seed, so a sequence set is reproducible; test
sequences are built from MNIST's t10k digits only (`split_digits`), validation ones from the held-out
training digits, training ones from the rest.

The generator also returns every frame's latent variables, so representations can be probed exactly:
the digits' identities (S, D), positions (S, T, D, 2) as the (x, y) of each digit's centre in pixels
(x = column, y = row), and velocities (S, T, D, 2) in pixels per frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.mnist import MnistSplits

DIGIT = 28


@dataclass(frozen=True)
class MovingMnistSpec:
    """What a Moving MNIST sequence looks like (saved in the predictive bundle's config)."""

    size: int = 64  # frames are size x size
    n_frames: int = 20
    n_digits: int = 2
    speed: float = 3.6  # pixels per frame (the original: 0.1 of the 36-pixel range)


@dataclass
class Sequences:
    """A batch of Moving MNIST sequences and their latent variables."""

    frames: np.ndarray  # (S, T, size, size) float32 in [0, 1]
    labels: np.ndarray  # (S, D) int64 digit identities
    positions: np.ndarray  # (S, T, D, 2) float32 digit centres (x, y) in pixels
    velocities: np.ndarray  # (S, T, D, 2) float32 pixels per frame

    def __len__(self) -> int:
        return len(self.frames)


def split_digits(data: MnistSplits, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The (images (n, 28, 28), labels (n,)) a split's sequences are built from."""
    images, labels = {
        "train": (data.train_x, data.train_y),
        "validation": (data.valid_x, data.valid_y),
        "test": (data.test_x, data.test_y),
    }[split]
    return images.reshape(-1, DIGIT, DIGIT).astype(np.float32), labels.astype(np.int64)


def trajectories(n: int, spec: MovingMnistSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corners (n, T, D, 2) and velocities (n, T, D, 2), (x, y) order, bouncing in [0, size-28]."""
    limit = float(spec.size - DIGIT)
    position = rng.uniform(0.0, limit, size=(n, spec.n_digits, 2))
    angle = rng.uniform(0.0, 2.0 * np.pi, size=(n, spec.n_digits))
    velocity = spec.speed * np.stack([np.cos(angle), np.sin(angle)], axis=-1)
    positions = np.empty((n, spec.n_frames, spec.n_digits, 2))
    velocities = np.empty_like(positions)
    for t in range(spec.n_frames):
        positions[:, t], velocities[:, t] = position, velocity
        position = position + velocity
        low, high = position < 0.0, position > limit
        position = np.where(low, -position, np.where(high, 2.0 * limit - position, position))
        velocity = np.where(low | high, -velocity, velocity)
    return positions, velocities


def render(digits: np.ndarray, corners: np.ndarray, size: int) -> np.ndarray:
    """Paste digits (n, D, 28, 28) at rounded corners (n, T, D, 2), max-combined -> (n, T, size, size)."""
    n, n_frames, n_digits, _ = corners.shape
    frames = np.zeros((n, n_frames, size, size), dtype=np.float32)
    top_left = np.clip(np.rint(corners).astype(np.int64), 0, size - DIGIT)
    offsets = np.arange(DIGIT)
    s = np.arange(n)[:, None, None, None]
    t = np.arange(n_frames)[None, :, None, None]
    for d in range(n_digits):  # within one digit every (sequence, frame) gets one block: no index clashes
        rows = top_left[:, :, d, 1, None, None] + offsets[:, None]
        cols = top_left[:, :, d, 0, None, None] + offsets[None, :]
        frames[s, t, rows, cols] = np.maximum(frames[s, t, rows, cols], digits[:, None, d])
    return frames


def generate(
    images: np.ndarray, labels: np.ndarray, n: int, spec: MovingMnistSpec, rng: np.random.Generator
) -> Sequences:
    """`n` sequences of digits drawn (uniformly, with replacement) from `images` (m, 28, 28)."""
    picks = rng.integers(0, len(images), size=(n, spec.n_digits))
    corners, velocities = trajectories(n, spec, rng)
    frames = render(images[picks], corners, spec.size)
    centres = (corners + DIGIT / 2.0).astype(np.float32)
    return Sequences(frames, labels[picks], centres, velocities.astype(np.float32))


def sequence_set(data: MnistSplits, split: str, n: int, spec: MovingMnistSpec, seed: int) -> Sequences:
    """A fixed, reproducible set of `n` sequences of one split (validation and test sets)."""
    images, labels = split_digits(data, split)
    offset = {"train": 0, "validation": 1, "test": 2}[split]
    return generate(images, labels, n, spec, np.random.default_rng([seed, 1000 + offset]))


def training_batch(
    images: np.ndarray, labels: np.ndarray, batch: int, spec: MovingMnistSpec, seed: int, step: int
) -> Sequences:
    """Training batch number `step`: fresh sequences every step, the same ones for the same (seed, step)."""
    return generate(images, labels, batch, spec, np.random.default_rng([seed, 2000, step]))
