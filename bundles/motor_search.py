"""Local search of the motor model (seed 000, slides 18-26): refine the recognition nets' programs.

The recognition net of class c proposes a code for image x; in the nets' units
z = (code - prototype_c) / scale call it z0. Local search lowers the energy

    E_c(z) = ||x - render(z)||^2 + lambda ||z - z0||^2

by steps along the generative net's estimate of -dE/dz / 2:

    z <- z + step * (J_G(z)^T (x - render(z)) - lambda (z - z0))

(the residual comes from the real renderer, J_G is the Jacobian of class c's generative net). A step is
kept only if the real energy falls; the step grows by 1.5 after a kept step and halves otherwise, so
E_c never rises. The prior term (`prior` = lambda) keeps a wrong class's program from morphing freely
toward the image: the seed expects local search to help the correct model much more than the wrong
ones (slide 26), which unconstrained search does not do here.

Only the `top_k` classes whose recognition-net reconstruction has the lowest pixel error are refined;
the others keep z0, whose energy is its pixel error. The image's class is the one with the lowest
score: the final energy (`score="energy"`) or the final pixel error (`score="pixel"`).

The search works on M (class, image) pairs at once: codes (M, 70), with the rendering and the
generative-gradient functions passed in, so that it is plain array math.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SCORES = ("energy", "pixel")


@dataclass(frozen=True)
class LocalSearch:
    """Local search settings (saved in a bundle's config.json; training picks them on validation digits).

    The defaults are the setting measured best on the full bundle's validation digits."""

    iterations: int = 10
    step: float = 0.02  # initial step in z units per unit of J^T r
    prior: float = 0.0  # lambda, the weight of ||z - z0||^2 in the energy
    top_k: int = 10  # classes refined per image (lowest initial pixel error first)
    score: str = "energy"  # what ranks the classes: "energy" or "pixel"

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {self.score!r}")
        if self.iterations < 0 or self.top_k < 1 or not self.step > 0 or not self.prior >= 0:
            raise ValueError(f"invalid local search settings: {self}")


@dataclass
class Refined:
    """Every class's reading of N images after local search (arrays indexed (class, image))."""

    codes: np.ndarray  # (C, N, 70)
    reconstructions: np.ndarray  # (C, N, 784)
    errors: np.ndarray  # (C, N) squared pixel error
    scores: np.ndarray  # (C, N) what ranks the classes (lowest wins)


Render = Callable[[np.ndarray], np.ndarray]  # codes (M, 70) -> images (M, 784)
Gradient = Callable[
    [np.ndarray, np.ndarray, np.ndarray], np.ndarray
]  # (codes, residuals, classes) -> (M, 70)


def squared_error(images: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Squared pixel error summed over the last axis."""
    error: np.ndarray = ((images - x) ** 2).sum(-1)
    return error


def refine(
    x: np.ndarray,
    codes: np.ndarray,
    reconstructions: np.ndarray,
    settings: LocalSearch,
    scale: np.ndarray,
    render: Render,
    gradient: Gradient,
) -> Refined:
    """Local search from the recognition nets' codes (C, N, 70) and their renderings (C, N, 784) of the
    images x (N, 784); `gradient(codes, residuals, classes)` is J_G^T r in z units for each pair."""
    n_classes, n = codes.shape[:2]
    errors = squared_error(reconstructions, x)
    out = Refined(codes.copy(), reconstructions.copy(), errors.copy(), errors.copy())
    k = min(settings.top_k, n_classes)
    if settings.iterations == 0 or n == 0:
        return out
    classes = np.argsort(errors, axis=0, kind="stable")[:k].ravel()  # (k N,) row-major: rank, image
    image = np.tile(np.arange(n), k)
    target = x[image]
    code0 = codes[classes, image]
    code, recon, pixel = code0.copy(), reconstructions[classes, image], errors[classes, image]
    energy = pixel.copy()  # z = z0: no prior term yet
    step = np.full(len(classes), settings.step, dtype=np.float32)
    for _ in range(settings.iterations):
        shift = (code - code0) / scale  # z - z0
        direction = gradient(code, target - recon, classes) - settings.prior * shift
        trial = code + (step[:, None] * direction) * scale
        trial_recon = render(trial)
        trial_pixel = squared_error(trial_recon, target)
        trial_energy = trial_pixel + settings.prior * (((trial - code0) / scale) ** 2).sum(-1)
        better = trial_energy < energy
        code = np.where(better[:, None], trial, code)
        recon = np.where(better[:, None], trial_recon, recon)
        pixel = np.where(better, trial_pixel, pixel)
        energy = np.where(better, trial_energy, energy)
        step = np.where(better, step * 1.5, step * 0.5).astype(np.float32)
    out.codes[classes, image], out.reconstructions[classes, image] = code, recon
    out.errors[classes, image] = pixel
    out.scores[classes, image] = energy if settings.score == "energy" else pixel
    return out
