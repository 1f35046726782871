"""Local search with a prior (bundles/motor_search.py), on a linear renderer where the answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from bundles.motor_search import LocalSearch, Manifold, Refined, refine, squared_error

C, N, D, P = 4, 5, 12, 3  # classes, images, pixels, code size
SCALE = np.array([0.5, 1.0, 2.0], dtype=np.float32)


def _problem(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class c renders code v as A_c v (linear); images x; recognition codes (C, N, P)."""
    rng = np.random.default_rng(seed)
    a = rng.normal(0, 1, (C, P, D)).astype(np.float32)
    x = rng.normal(0, 1, (N, D)).astype(np.float32)
    codes = rng.normal(0, 1, (C, N, P)).astype(np.float32)
    return a, x, codes


def _manifold(reference: np.ndarray) -> Manifold:
    """m_c with one reference code per class (C, P): ||(v - r_c) / s||^2, its "nearest neighbour" r_c."""

    def manifold(flat: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (((flat - reference[classes]) / SCALE) ** 2).sum(-1), reference[classes]

    return manifold


def _search(
    a: np.ndarray,
    x: np.ndarray,
    codes: np.ndarray,
    settings: LocalSearch,
    reference: np.ndarray | None = None,
) -> tuple[Refined, np.ndarray]:
    """refine() with the linear renderer and its exact gradient; also returns the initial renderings."""
    recon = np.einsum("cnp,cpd->cnd", codes, a).astype(np.float32)
    manifold = None if reference is None else _manifold(reference)
    energy = squared_error(recon, x)
    if manifold is not None:
        m, _ = manifold(codes.reshape(-1, P), np.repeat(np.arange(C), N))
        energy = energy + settings.manifold * m.reshape(C, N)
    # the pairs refine() searches: the top_k classes of each image by energy at z0, rank-major
    searched = np.argsort(energy, axis=0, kind="stable")[: settings.top_k].ravel()

    def render(flat: np.ndarray) -> np.ndarray:
        images: np.ndarray = np.einsum("mp,mpd->md", flat, a[searched]).astype(np.float32)
        return images

    def gradient(flat: np.ndarray, residual: np.ndarray, classes: np.ndarray) -> np.ndarray:
        np.testing.assert_array_equal(classes, searched)
        # code = prototype + scale * z, so the z-gradient of the rendering's fit is scale * (A r)
        grad: np.ndarray = (SCALE * np.einsum("mpd,md->mp", a[classes], residual)).astype(np.float32)
        return grad

    return refine(x, codes, recon, settings, SCALE, render, gradient, manifold), recon


def _energy(code: np.ndarray, code0: np.ndarray, a: np.ndarray, x: np.ndarray, prior: float) -> float:
    return float(((x - code @ a) ** 2).sum() + prior * (((code - code0) / SCALE) ** 2).sum())


@pytest.mark.parametrize(("prior", "gamma"), [(0.0, 0.0), (0.5, 0.0), (5.0, 0.0), (0.0, 2.0), (1.0, 3.0)])
def test_search_reaches_the_minimum_of_the_energy(prior: float, gamma: float) -> None:
    a, x, codes = _problem()
    reference = np.random.default_rng(9).normal(0, 1, (C, P)).astype(np.float32)
    settings = LocalSearch(iterations=400, step=0.01, prior=prior, top_k=C, manifold=gamma)
    out, _ = _search(a, x, codes, settings, reference)
    inv_s2 = np.diag(1.0 / SCALE.astype(np.float64) ** 2)
    for c in range(C):
        for i in range(N):
            # argmin ||x - A^T v||^2 + prior ||(v - v0) / s||^2 + gamma ||(v - r_c) / s||^2:
            # (A A^T + (prior + gamma) S^-2) v = A x + S^-2 (prior v0 + gamma r_c)
            best = np.linalg.solve(
                a[c] @ a[c].T + (prior + gamma) * inv_s2,
                a[c] @ x[i] + inv_s2 @ (prior * codes[c, i] + gamma * reference[c]),
            )

            def energy(v: np.ndarray, c: int = c, i: int = i) -> float:
                return _energy(v, codes[c, i], a[c], x[i], prior) + gamma * float(
                    (((v - reference[c]) / SCALE) ** 2).sum()
                )

            assert energy(out.codes[c, i]) == pytest.approx(energy(best), rel=1e-3, abs=1e-4)
            assert out.scores[c, i] == pytest.approx(energy(out.codes[c, i]), rel=1e-4)
            assert out.scores_before[c, i] == pytest.approx(energy(codes[c, i]), rel=1e-4)


def test_the_prior_keeps_codes_nearer_the_recognition_nets() -> None:
    a, x, codes = _problem(1)
    shift = []
    for prior in (0.0, 1.0, 10.0):
        out, _ = _search(a, x, codes, LocalSearch(iterations=60, step=0.01, prior=prior, top_k=C))
        shift.append(float((((out.codes - codes) / SCALE) ** 2).sum()))
    assert shift[0] > shift[1] > shift[2] > 0


def test_energy_and_pixel_error_never_rise() -> None:
    a, x, codes = _problem(2)
    out, recon = _search(a, x, codes, LocalSearch(iterations=5, step=0.5, prior=1.0, top_k=C))
    before = squared_error(recon, x)
    assert (out.scores <= before + 1e-5).all()
    assert (out.errors <= out.scores + 1e-5).all()  # the prior term is >= 0
    np.testing.assert_allclose(out.errors, squared_error(out.reconstructions, x), rtol=1e-5)
    assert (out.errors < before - 1e-3).any()


def test_only_the_top_k_classes_are_searched() -> None:
    a, x, codes = _problem(3)
    out, recon = _search(a, x, codes, LocalSearch(iterations=20, step=0.01, prior=0.0, top_k=2))
    before = squared_error(recon, x)
    searched = np.zeros((C, N), dtype=bool)
    searched[np.argsort(before, axis=0, kind="stable")[:2], np.arange(N)] = True
    np.testing.assert_array_equal(out.codes[~searched], codes[~searched])
    np.testing.assert_array_equal(out.scores[~searched], before[~searched])
    assert (out.errors[searched] < before[searched]).all()


def test_pixel_scoring_ranks_by_the_final_pixel_error() -> None:
    a, x, codes = _problem(4)
    energy, _ = _search(a, x, codes, LocalSearch(iterations=10, step=0.01, prior=2.0, score="energy"))
    pixel, _ = _search(a, x, codes, LocalSearch(iterations=10, step=0.01, prior=2.0, score="pixel"))
    np.testing.assert_array_equal(pixel.scores, pixel.errors)
    np.testing.assert_array_equal(
        pixel.codes, energy.codes
    )  # the search is the same, only the ranking differs
    assert (energy.scores > energy.errors + 1e-6).any()


def test_no_iterations_change_nothing() -> None:
    a, x, codes = _problem(5)
    out, recon = _search(a, x, codes, LocalSearch(iterations=0, prior=1.0))
    np.testing.assert_array_equal(out.codes, codes)
    np.testing.assert_array_equal(out.scores, squared_error(recon, x))
    np.testing.assert_array_equal(out.scores_before, out.scores)


def test_the_manifold_term_ranks_even_without_search() -> None:
    a, x, codes = _problem(6)
    reference = codes[:, 0]  # image 0's codes are on their class manifolds: m_c = 0 there
    out, recon = _search(a, x, codes, LocalSearch(iterations=0, manifold=2.0), reference)
    m = (((codes - reference[:, None]) / SCALE) ** 2).sum(-1)
    np.testing.assert_allclose(out.scores, squared_error(recon, x) + 2.0 * m, rtol=1e-5)
    np.testing.assert_array_equal(out.errors, squared_error(recon, x))
    with pytest.raises(ValueError, match="class manifolds"):
        refine(x, codes, recon, LocalSearch(manifold=1.0), SCALE, lambda c: c, lambda c, r, k: c)


@pytest.mark.parametrize(
    "bad",
    [
        {"score": "likelihood"},
        {"top_k": 0},
        {"iterations": -1},
        {"step": 0.0},
        {"prior": -1.0},
        {"manifold": -0.1},
        {"neighbours": 0},
    ],
)
def test_invalid_settings_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        LocalSearch(**bad)  # type: ignore[arg-type]
