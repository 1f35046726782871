"""Local search with a prior (bundles/motor_search.py), on a linear renderer where the answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from bundles.motor_search import LocalSearch, Refined, refine, squared_error

C, N, D, P = 4, 5, 12, 3  # classes, images, pixels, code size
SCALE = np.array([0.5, 1.0, 2.0], dtype=np.float32)


def _problem(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class c renders code v as A_c v (linear); images x; recognition codes (C, N, P)."""
    rng = np.random.default_rng(seed)
    a = rng.normal(0, 1, (C, P, D)).astype(np.float32)
    x = rng.normal(0, 1, (N, D)).astype(np.float32)
    codes = rng.normal(0, 1, (C, N, P)).astype(np.float32)
    return a, x, codes


def _search(
    a: np.ndarray, x: np.ndarray, codes: np.ndarray, settings: LocalSearch
) -> tuple[Refined, np.ndarray]:
    """refine() with the linear renderer and its exact gradient; also returns the initial renderings."""
    recon = np.einsum("cnp,cpd->cnd", codes, a).astype(np.float32)
    # the pairs refine() searches: the top_k classes of each image, rank-major
    searched = np.argsort(squared_error(recon, x), axis=0, kind="stable")[: settings.top_k].ravel()

    def render(flat: np.ndarray) -> np.ndarray:
        images: np.ndarray = np.einsum("mp,mpd->md", flat, a[searched]).astype(np.float32)
        return images

    def gradient(flat: np.ndarray, residual: np.ndarray, classes: np.ndarray) -> np.ndarray:
        np.testing.assert_array_equal(classes, searched)
        # code = prototype + scale * z, so the z-gradient of the rendering's fit is scale * (A r)
        grad: np.ndarray = (SCALE * np.einsum("mpd,md->mp", a[classes], residual)).astype(np.float32)
        return grad

    return refine(x, codes, recon, settings, SCALE, render, gradient), recon


def _energy(code: np.ndarray, code0: np.ndarray, a: np.ndarray, x: np.ndarray, prior: float) -> float:
    return float(((x - code @ a) ** 2).sum() + prior * (((code - code0) / SCALE) ** 2).sum())


@pytest.mark.parametrize("prior", [0.0, 0.5, 5.0])
def test_search_reaches_the_minimum_of_the_energy(prior: float) -> None:
    a, x, codes = _problem()
    out, _ = _search(a, x, codes, LocalSearch(iterations=400, step=0.01, prior=prior))
    for c in range(C):
        for i in range(N):
            # argmin ||x - A^T v||^2 + prior ||(v - v0) / s||^2: (A A^T + prior S^-2) v = A x + prior S^-2 v0
            s2 = np.diag(prior / SCALE.astype(np.float64) ** 2)
            best = np.linalg.solve(a[c] @ a[c].T + s2, a[c] @ x[i] + s2 @ codes[c, i])
            assert _energy(out.codes[c, i], codes[c, i], a[c], x[i], prior) == pytest.approx(
                _energy(best, codes[c, i], a[c], x[i], prior), rel=1e-3, abs=1e-4
            )
            assert out.scores[c, i] == pytest.approx(
                _energy(out.codes[c, i], codes[c, i], a[c], x[i], prior), rel=1e-4
            )


def test_the_prior_keeps_codes_nearer_the_recognition_nets() -> None:
    a, x, codes = _problem(1)
    shift = []
    for prior in (0.0, 1.0, 10.0):
        out, _ = _search(a, x, codes, LocalSearch(iterations=60, step=0.01, prior=prior))
        shift.append(float((((out.codes - codes) / SCALE) ** 2).sum()))
    assert shift[0] > shift[1] > shift[2] > 0


def test_energy_and_pixel_error_never_rise() -> None:
    a, x, codes = _problem(2)
    out, recon = _search(a, x, codes, LocalSearch(iterations=5, step=0.5, prior=1.0))
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


@pytest.mark.parametrize(
    "bad", [{"score": "likelihood"}, {"top_k": 0}, {"iterations": -1}, {"step": 0.0}, {"prior": -1.0}]
)
def test_invalid_settings_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        LocalSearch(**bad)  # type: ignore[arg-type]
