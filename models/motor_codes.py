"""Motor codes, code noise and the stacked nets' forward pass: the torch-free math of the motor model.

Written against the array API like the renderer, so serving (numpy) and training (torch) share it.

**Codes.** A code is the program in coordinates that suit learning: (17 x 2 equilibria, 17 x 2 log
pair stiffnesses, log ink, log width), a bijection with programs of positive stiffnesses, in which a
unit of noise means the same everywhere (a shift of the planned path, a relative change of
stiffness). The nets read and write codes; the API returns programs (the stiffnesses themselves).

**Noise** (seed slide 7: "add noise to the code"): a random affine map of the planned path about its
centre (rotation, shear, scale per axis, shift), independent jitter of each planned point and each log
stiffness, and style noise.

**Stacked nets.** C same-shaped MLPs (one per class) with ReLU hidden layers, weights (C, a, b) and
biases (C, 1, b), evaluated together by batched products: (C, B, n_in) -> (C, B, n_out).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from array_api_compat import array_namespace

from models.motor_renderer import (
    N_STEPS,
    N_STIFFNESS,
    PROGRAM_SIZE,
    Array,
    equilibria,
    split_program,
    stiffness_from_equilibria,
)

N_EQ = N_STEPS * 2  # coordinates of the planned path in a code (then as many log stiffnesses)


def program_from_code(code: Array) -> Array:
    """Codes (B, 70) -> programs (B, 70):  k_R = e^{l_x} (1 + x) / 2, k_L = e^{l_x} (1 - x) / 2, ..."""
    xp = array_namespace(code)
    b = code.shape[0]
    eq = xp.reshape(code[:, :N_EQ], (b, N_STEPS, 2))
    total = xp.exp(xp.reshape(code[:, N_EQ : 2 * N_EQ], (b, N_STEPS, 2)))
    springs = xp.reshape(stiffness_from_equilibria(eq, total), (b, N_STIFFNESS))
    return xp.concat([springs, code[:, N_STIFFNESS:]], axis=1)


def code_from_program(program: Array, eps: float = 1e-6) -> Array:
    """Programs (B, 70) -> codes (B, 70); inverse of `program_from_code` where every pair pulls."""
    xp = array_namespace(program)
    b = program.shape[0]
    stiffness, _, _ = split_program(program)
    eq, total = equilibria(stiffness, eps)
    flat = [xp.reshape(eq, (b, N_EQ)), xp.reshape(xp.log(total + eps), (b, N_EQ)), program[:, N_STIFFNESS:]]
    return xp.concat(flat, axis=1)


@dataclass(frozen=True)
class NoiseConfig:
    """Noise added to clean codes to make training pairs (pen units: 1 pixel = 1 / renderer.scale)."""

    equilibrium: float = 0.04  # independent shift of each of the 17 planned points
    log_stiffness: float = 0.15  # relative change of each pair stiffness
    style: float = 0.2  # log ink and log width
    rotation: float = 0.12  # the whole planned path: rotation (radians), shear, log scale per axis, shift
    shear: float = 0.15
    log_scale: float = 0.1
    shift: float = 0.06

    def scaled(self, factor: float) -> NoiseConfig:
        """Every noise level times `factor`."""
        return NoiseConfig(*(factor * v for v in vars(self).values()))


def perturb_codes(codes: Array, noise: NoiseConfig, normal: Callable[[tuple[int, ...]], Array]) -> Array:
    """Noisy copies of codes (..., 70); `normal(shape)` draws standard normal arrays of codes' kind."""
    xp = array_namespace(codes)
    shape = codes.shape
    flat = xp.reshape(codes, (-1, PROGRAM_SIZE))
    n = flat.shape[0]
    eq = xp.reshape(flat[:, :N_EQ], (n, N_STEPS, 2))
    angle, shear = noise.rotation * normal((n,)), noise.shear * normal((n,))
    sx, sy = xp.exp(noise.log_scale * normal((n,))), xp.exp(noise.log_scale * normal((n,)))
    cos, sin = xp.cos(angle), xp.sin(angle)
    # A^T for A = rotation @ [[sx, shear], [0, sy]]: row vectors p map to p A^T
    a_t = xp.stack(
        [
            xp.stack([cos * sx, sin * sx], axis=-1),
            xp.stack([cos * shear - sin * sy, sin * shear + cos * sy], axis=-1),
        ],
        axis=-2,
    )  # (n, 2, 2)
    centre = xp.mean(eq, axis=1, keepdims=True)
    eq = xp.matmul(eq - centre, a_t) + centre + noise.shift * normal((n, 1, 2))
    eq = eq + noise.equilibrium * normal((n, N_STEPS, 2))
    log_k = flat[:, N_EQ : 2 * N_EQ] + noise.log_stiffness * normal((n, N_EQ))
    style = flat[:, 2 * N_EQ :] + noise.style * normal((n, PROGRAM_SIZE - 2 * N_EQ))
    return xp.reshape(xp.concat([xp.reshape(eq, (n, N_EQ)), log_k, style], axis=1), shape)


def stack_forward(x: Array, weights: Sequence[tuple[Array, Array]], *, sigmoid_output: bool) -> Array:
    """C stacked MLPs with ReLU hidden layers.  x: (C, B, n_in), W_l: (C, a, b), b_l: (C, 1, b)."""
    xp = array_namespace(x)
    for layer, (w, b) in enumerate(weights):
        x = xp.matmul(x, w) + b
        if layer < len(weights) - 1:
            x = (x + abs(x)) * 0.5  # ReLU
    # sigmoid as 0.5 (1 + tanh(x / 2)): 1 / (1 + exp(-x)) overflows for x < -88 (float32), and its
    # gradient, inf / inf, is NaN, which once turned a full training's generative nets into NaN.
    return 0.5 * (1.0 + xp.tanh(0.5 * x)) if sigmoid_output else x
