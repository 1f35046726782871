"""Local search of the motor model (seed 000, slides 18-26): refine the recognition nets' programs.

The recognition net of class c proposes a code for image x; in the nets' units
z = (code - prototype_c) / scale call it z0. Local search lowers the energy

    E_c(z) = ||x - render(z)||^2 + lambda ||z - z0||^2 + gamma m_c(z),
    m_c(z) = (1/k) sum_{j in kNN_c(z)} ||z - z_j||^2

where z_j are the codes the recognition net gives real training digits of class c (the bundle's class
codes) and kNN_c(z) the k nearest of them: m_c measures how far the program is from the programs of
real digits of the class. Steps follow the generative net's estimate of -dE/dz / 2 (the neighbours
held fixed for the derivative):

    z <- z + step * (J_G(z)^T (x - render(z)) - lambda (z - z0) - gamma (z - mean_{kNN_c(z)} z_j))

(the residual comes from the real renderer, J_G is the Jacobian of class c's generative net). A step is
kept only if the real energy falls; the step grows by 1.5 after a kept step and halves otherwise, so
E_c never rises. The prior terms (`prior` = lambda, `manifold` = gamma) keep a wrong class's program
from morphing freely toward the image: the seed expects local search to help the correct model much
more than the wrong ones (slide 26), which unconstrained search does not do here.

Only the `top_k` classes with the lowest energy at z0 are refined; the others keep z0. The image's
class is the one with the lowest score: the final energy (`score="energy"`) or the final pixel error
(`score="pixel"`).

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

    The defaults are the setting measured best on the full bundle's first 2,000 validation digits
    (validation error 1.50%; no search 1.55%; unconstrained search 2.2%)."""

    iterations: int = 10
    step: float = 0.01  # initial step in z units per unit of J^T r
    prior: float = 8.0  # lambda, the weight of ||z - z0||^2 in the energy
    top_k: int = 3  # classes refined per image (lowest initial energy first)
    score: str = "energy"  # what ranks the classes: "energy" or "pixel"
    manifold: float = 0.0  # gamma, the weight of the class-manifold term m_c(z)
    neighbours: int = 5  # k of m_c: the mean squared distance to the k nearest codes of the class

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {self.score!r}")
        if (
            self.iterations < 0
            or self.top_k < 1
            or self.neighbours < 1
            or not self.step > 0
            or not self.prior >= 0
            or not self.manifold >= 0
        ):
            raise ValueError(f"invalid local search settings: {self}")


@dataclass
class Refined:
    """Every class's reading of N images after local search (arrays indexed (class, image))."""

    codes: np.ndarray  # (C, N, 70)
    reconstructions: np.ndarray  # (C, N, 784)
    errors: np.ndarray  # (C, N) squared pixel error
    scores: np.ndarray  # (C, N) what ranks the classes (lowest wins)
    scores_before: np.ndarray  # (C, N) the same at z0 (before local search)


# codes (M, 70) -> images (M, 784)
Render = Callable[[np.ndarray], np.ndarray]
# (codes (M, 70), residuals (M, 784), classes (M,)) -> J_G^T r in z units (M, 70)
Gradient = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
# (codes (M, 70), classes (M,)) -> (m_c (M,), mean of the k nearest class codes (M, 70))
Manifold = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


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
    manifold: Manifold | None = None,
) -> Refined:
    """Local search from the recognition nets' codes (C, N, 70) and their renderings (C, N, 784) of the
    images x (N, 784); `gradient(codes, residuals, classes)` is J_G^T r in z units for each pair and
    `manifold(codes, classes)` the class-manifold term m_c and its neighbours' mean (needed when
    settings.manifold > 0)."""
    n_classes, n = codes.shape[:2]
    errors = squared_error(reconstructions, x)
    energies = errors.copy()
    use_manifold = settings.manifold > 0
    if use_manifold:
        if manifold is None:
            raise ValueError("settings.manifold > 0 needs the class manifolds")
        all_classes = np.repeat(np.arange(n_classes), n)
        distance, _ = manifold(codes.reshape(-1, codes.shape[-1]), all_classes)
        energies = energies + settings.manifold * distance.reshape(n_classes, n)
    rank = energies if settings.score == "energy" else errors
    out = Refined(codes.copy(), reconstructions.copy(), errors.copy(), rank.copy(), rank)
    k = min(settings.top_k, n_classes)
    if settings.iterations == 0 or n == 0:
        return out
    classes = np.argsort(energies, axis=0, kind="stable")[:k].ravel()  # (k N,) row-major: rank, image
    image = np.tile(np.arange(n), k)
    target = x[image]
    code0 = codes[classes, image]
    code, recon, pixel = code0.copy(), reconstructions[classes, image], errors[classes, image]
    energy = energies[classes, image]  # z = z0: no prior term yet

    def pull(code: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The prior terms of the energy and their descent direction -dE/dz / 2 (z units)."""
        shift = (code - code0) / scale  # z - z0
        term = settings.prior * (shift**2).sum(-1)
        direction = -settings.prior * shift
        if use_manifold:
            assert manifold is not None
            distance, centre = manifold(code, classes)
            term = term + settings.manifold * distance
            direction = direction + settings.manifold * (centre - code) / scale
        return term, direction

    step = np.full(len(classes), settings.step, dtype=np.float32)
    _, direction = pull(code)
    for _ in range(settings.iterations):
        trial = code + (step[:, None] * (gradient(code, target - recon, classes) + direction)) * scale
        trial_recon = render(trial)
        trial_pixel = squared_error(trial_recon, target)
        trial_term, trial_direction = pull(trial)
        trial_energy = trial_pixel + trial_term
        better = trial_energy < energy
        code = np.where(better[:, None], trial, code)
        recon = np.where(better[:, None], trial_recon, recon)
        pixel = np.where(better, trial_pixel, pixel)
        energy = np.where(better, trial_energy, energy)
        direction = np.where(better[:, None], trial_direction, direction)
        step = np.where(better, step * 1.5, step * 0.5).astype(np.float32)
    out.codes[classes, image], out.reconstructions[classes, image] = code, recon
    out.errors[classes, image] = pixel
    out.scores[classes, image] = energy if settings.score == "energy" else pixel
    return out
