"""The motor-program renderer: physics, resampling, splatting, gradients, numpy/torch agreement."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.motor_codes import code_from_program, program_from_code
from models.motor_renderer import (
    N_STEPS,
    N_STIFFNESS,
    PROGRAM_SIZE,
    RendererConfig,
    equilibria,
    integrate,
    render,
    resample,
    split_program,
    stiffness_from_equilibria,
)
from training.motor_prototypes import prototype_programs

CONFIG = RendererConfig()


def _programs(n: int = 6, seed: int = 0) -> np.ndarray:
    """Prototype programs with random stiffness and style changes (float64)."""
    rng = np.random.default_rng(seed)
    p = np.repeat(prototype_programs().astype(np.float64), 1, axis=0)[np.arange(n) % 10]
    p[:, :N_STIFFNESS] *= np.exp(rng.normal(0, 0.2, (n, N_STIFFNESS)))
    p[:, N_STIFFNESS:] = rng.normal(0, 0.3, (n, 2))
    return p


def _reference_image(program: np.ndarray) -> np.ndarray:
    """Bilinear splatting pixel by pixel, then G I G^T, then clipping: the docstring's recipe, slowly."""
    drawing = render(program[None])
    stiffness, log_ink, log_width = split_program(program[None])
    _, length = resample(integrate(stiffness, CONFIG), CONFIG.n_points)
    w = CONFIG.ink * np.exp(log_ink[0]) * CONFIG.scale * length[0] / CONFIG.n_points
    splat = np.zeros((28, 28))
    for col, row in drawing.points[0]:
        c0, r0 = int(np.floor(col)), int(np.floor(row))
        for r, wr in ((r0, 1 - (row - r0)), (r0 + 1, row - r0)):
            for c, wc in ((c0, 1 - (col - c0)), (c0 + 1, col - c0)):
                if 0 <= r < 28 and 0 <= c < 28:
                    splat[r, c] += w * wr * wc
    sigma = CONFIG.width * np.exp(log_width[0])
    kernel = np.exp(-((np.arange(28)[:, None] - np.arange(28)[None, :]) ** 2) / (2 * sigma**2))
    kernel /= np.exp(-(np.arange(-27, 28) ** 2) / (2 * sigma**2)).sum()
    return np.minimum(kernel @ splat @ kernel.T, 1.0).ravel()


def test_render_matches_the_pixel_by_pixel_recipe() -> None:
    programs = _programs()
    images = render(programs).images
    for program, image in zip(programs, images, strict=True):
        np.testing.assert_allclose(image, _reference_image(program), atol=1e-10)
    assert images.shape == (len(programs), 784)
    assert images.min() >= 0.0 and images.max() <= 1.0


def test_numpy_and_torch_render_the_same_image() -> None:
    programs = _programs().astype(np.float32)
    from_numpy = render(programs)
    from_torch = render(torch.from_numpy(programs))
    np.testing.assert_allclose(from_torch.images.numpy(), from_numpy.images, atol=1e-5)
    np.testing.assert_allclose(from_torch.trajectory.numpy(), from_numpy.trajectory, atol=1e-5)


def test_gradient_matches_finite_differences() -> None:
    # Little ink, so no pixel is clipped, and a random pixel weighting so every pixel counts.
    program = torch.from_numpy(_programs(2, seed=1))
    program[:, N_STIFFNESS] = -1.5
    weights = torch.from_numpy(np.random.default_rng(2).normal(size=(2, 784)))

    def loss(p: torch.Tensor) -> torch.Tensor:
        return (render(p).images * weights).sum()

    assert float(render(program).images.max()) < 1.0
    torch.autograd.gradcheck(loss, (program.requires_grad_(True),), eps=1e-6, atol=1e-5, rtol=1e-3)


def test_constant_stiffness_holds_the_pen_at_its_equilibrium() -> None:
    target = np.array([[0.3, -0.2]])
    springs = stiffness_from_equilibria(np.repeat(target[None], N_STEPS, 1), np.full((1, N_STEPS, 2), 8.0))
    path = integrate(springs, CONFIG)
    np.testing.assert_allclose(path, np.broadcast_to(target, path.shape), atol=1e-6)


def test_the_pen_settles_where_the_springs_balance() -> None:
    # Start at one equilibrium, switch at once to another: the damped pen ends near the new one.
    points = np.zeros((1, N_STEPS, 2))
    points[0, 1:] = [0.5, 0.4]
    springs = stiffness_from_equilibria(points, np.full((1, N_STEPS, 2), 8.0))
    path = integrate(springs, CONFIG)
    np.testing.assert_allclose(path[0, 0], [0.0, 0.0])
    np.testing.assert_allclose(path[0, -1], [0.5, 0.4], atol=1e-3)
    assert path.shape == (1, (N_STEPS - 1) * CONFIG.n_sub + 1, 2)


def test_resample_spaces_points_evenly_in_arc_length() -> None:
    # An L-shaped path, sampled unevenly: 3 points on the first leg, 20 on the second.
    leg1 = np.stack([np.linspace(0, 1, 3), np.zeros(3)], 1)
    leg2 = np.stack([np.ones(20), np.linspace(0, 1, 21)[1:] ** 2], 1)
    path = np.concatenate([leg1, leg2])[None]
    points, length = resample(path, 11)
    assert length[0] == pytest.approx(2.0, rel=1e-4)
    steps = np.linalg.norm(np.diff(points[0], axis=0), axis=1)
    np.testing.assert_allclose(steps[[0, 1, 2, 3, 5, 6, 7, 8, 9]], 0.2, atol=1e-5)  # straight stretches
    np.testing.assert_allclose(points[0, [0, 5, 10]], [[0, 0], [1, 0], [1, 1]], atol=1e-5)


def test_ink_is_proportional_to_stroke_length() -> None:
    # A horizontal stroke well inside the image, faint enough not to clip: its ink is rho * scale * L.
    for half in (0.2, 0.5):
        points = np.stack([np.linspace(-half, half, N_STEPS), np.zeros(N_STEPS)], 1)[None]
        springs = stiffness_from_equilibria(points, np.full((1, N_STEPS, 2), 400.0)).reshape(1, -1)
        program = np.concatenate([springs, [[-2.0, 0.0]]], axis=1)
        drawing = render(program)
        _, length = resample(drawing.trajectory, CONFIG.n_points)
        expected = CONFIG.ink * np.exp(-2.0) * CONFIG.scale * length[0]
        assert drawing.images.max() < 1.0
        assert drawing.images.sum() == pytest.approx(expected, rel=1e-3)


def test_codes_and_programs_round_trip() -> None:
    programs = _programs()
    np.testing.assert_allclose(program_from_code(code_from_program(programs)), programs, rtol=1e-5)
    eq, total = equilibria(split_program(programs)[0])
    assert eq.shape == (len(programs), N_STEPS, 2) and (total > 0).all()


def test_render_refuses_a_wrong_shape() -> None:
    with pytest.raises(ValueError, match=f"\\(B, {PROGRAM_SIZE}\\)"):
        render(np.zeros((2, 68)))
