"""The motor-program renderer: a pen on four springs draws a digit (Hinton, *Learning to perceive how
hand-written digits were drawn*, slides 5 and 27; Nair & Hinton, NIPS 2005).

Written once against the Python array API (`array_api_compat`), so the same function runs in numpy
(serving, no torch) and in torch (training, where autograd differentiates it end to end).

**Motor program.** `program` has shape (B, 70): 17 time steps x 4 spring stiffnesses, flattened
row-major (`k[t, s]` at index 4 t + s; springs s = left, right, down, up), then two time-invariant
style values (log ink, log blur width). A spring can only pull: negative stiffnesses count as 0.

**Physics.** A pen of unit mass m = 1 at p = (x, y) is held by zero-rest-length springs anchored at
a_left = (-1, 0), a_right = (1, 0), a_down = (0, -1), a_up = (0, 1), with viscosity eta:

    m p'' = sum_s k_s (a_s - p) - eta p'
    x'' = (k_R - k_L) - (k_R + k_L) x - eta x'            (and alike for y with k_U, k_D)

so each pair of opposing springs sets an equilibrium x* = (k_R - k_L) / (k_R + k_L) and a stiffness
k_R + k_L (the quadratic energy of slide 27). The stiffnesses are linear in time between the 17 steps;
each of the 16 intervals (duration 1) is integrated with `n_sub` backward-Euler steps,
dt = 1 / n_sub (the forces at the step's end, so any stiffness is stable):

    v' = (v + dt (drive - stiff * p)) / (1 + dt eta + dt^2 stiff),   p' = p + dt v',
    drive = (k_R - k_L, k_U - k_D),  stiff = (k_R + k_L, k_U + k_D),   p(0) = equilibrium at step 0, v(0) = 0

giving the trajectory P: (B, 16 n_sub + 1, 2).

**Ink.** 60 points q_j evenly spaced in arc length along P (linear interpolation on the polyline;
L = its length). Pen units map to pixels by col = c + scale x, row = c - scale y (c = 13.5, the centre
of the 28 x 28 grid). Each point carries ink w = rho * scale L / 60 (rho = rho0 exp(log ink), ink per
pixel of stroke length, so long and short strokes are equally dark), spread over its 4 nearest pixels
by bilinear interpolation, i.e. with the hat function tri(u) = max(0, 1 - |u|):

    I[r, c] = sum_j w_j tri(row_j - r) tri(col_j - c)  =  (Hy^T diag(w) Hx)[r, c],   Hx, Hy: (B, 60, 28)

**Blur and clip.** A Gaussian kernel of width sigma = sigma0 exp(log width) (pixels), separable, so the
blurred image is G I G^T with G[r, r'] = exp(-(r - r')^2 / 2 sigma^2) / Z (Z sums the kernel over all
integer offsets: ink blurred past the border is lost). Finally intensities above 1 are clipped:

    image = min(1, (Hy G^T)^T diag(w) (Hx G^T))                                         (B, 28, 28)

Everything is differentiable in the program except where the pen sits exactly on a pixel boundary
(the hat's kink) or a pixel is clipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from array_api_compat import array_namespace, device, is_torch_array

N_STEPS = 17  # time steps of the motor program
N_SPRINGS = 4  # left, right, down, up
N_STIFFNESS = N_STEPS * N_SPRINGS
N_STYLE = 2  # log ink, log blur width
PROGRAM_SIZE = N_STIFFNESS + N_STYLE
SIDE = 28

Array = Any  # a numpy array or a torch tensor (the array API's common subset is used)


@dataclass(frozen=True)
class RendererConfig:
    """The renderer's fixed constants (saved in every motor bundle's config.json)."""

    viscosity: float = 6.0  # eta: damping of the pen (unit mass); 2 sqrt(stiffness) is critical
    n_sub: int = 6  # Euler steps per interval between two of the 17 time steps
    n_points: int = 60  # ink points evenly spaced along the trajectory
    scale: float = 11.0  # pixels per pen unit (the anchors sit at +-1 pen units)
    ink: float = 2.5  # rho0: ink per pixel of stroke length, before exp(log ink)
    width: float = 0.9  # sigma0: blur kernel width in pixels, before exp(log width)


@dataclass
class Drawing:
    """What the renderer produces for a batch of B programs."""

    images: Array  # (B, 784) intensities in [0, 1]
    trajectory: Array  # (B, 16 n_sub + 1, 2) pen positions (x, y) in pen units, y up
    points: Array  # (B, n_points, 2) the ink points, in pixel coordinates (col, row)


def split_program(program: Array) -> tuple[Array, Array, Array]:
    """(B, 70) -> stiffnesses (B, 17, 4) clipped at 0, log ink (B,), log width (B,)."""
    xp = array_namespace(program)
    k = xp.reshape(program[:, :N_STIFFNESS], (program.shape[0], N_STEPS, N_SPRINGS))
    return relu(k), program[:, N_STIFFNESS], program[:, N_STIFFNESS + 1]


def equilibria(stiffness: Array, eps: float = 1e-6) -> tuple[Array, Array]:
    """Equilibrium points (B, T, 2) and pair stiffnesses (B, T, 2) of stiffnesses (B, T, 4)."""
    xp = array_namespace(stiffness)
    left, right, down, up = (stiffness[..., s] for s in range(N_SPRINGS))
    total = xp.stack([left + right, down + up], axis=-1)
    drive = xp.stack([right - left, up - down], axis=-1)
    return drive / (total + eps), total


def stiffness_from_equilibria(points: Array, total: Array) -> Array:
    """Inverse of `equilibria`: springs (B, T, 4) putting the pen's equilibrium at `points` (B, T, 2)
    with pair stiffnesses `total` (B, T, 2):  k_R = K (1 + x) / 2,  k_L = K (1 - x) / 2."""
    xp = array_namespace(points)
    x, y = points[..., 0], points[..., 1]
    kx, ky = total[..., 0], total[..., 1]
    return xp.stack([kx * (1 - x) / 2, kx * (1 + x) / 2, ky * (1 - y) / 2, ky * (1 + y) / 2], axis=-1)


def relu(x: Array) -> Array:
    """max(x, 0) as (x + |x|) / 2: one expression for numpy and torch, with torch's usual subgradient."""
    return (x + abs(x)) * 0.5


def _const(value: np.ndarray, like: Array) -> Array:
    xp = array_namespace(like)
    return xp.asarray(value, dtype=like.dtype, device=device(like))


def integrate(stiffness: Array, config: RendererConfig) -> Array:
    """Pen trajectory (B, 16 n_sub + 1, 2) for stiffnesses (B, 17, 4) (see the module docstring)."""
    xp = array_namespace(stiffness)
    n_sub, dt = config.n_sub, 1.0 / config.n_sub
    n_total = (N_STEPS - 1) * n_sub
    # Linear interpolation of the stiffnesses at each Euler step: (T, 17) @ (B, 17, 4) -> (B, T, 4).
    t = np.arange(n_total) / n_sub
    knot = np.minimum(np.floor(t).astype(int), N_STEPS - 2)
    frac = t - knot
    interp = np.zeros((n_total, N_STEPS))
    interp[np.arange(n_total), knot] = 1 - frac
    interp[np.arange(n_total), knot + 1] = frac
    k = xp.matmul(_const(interp, stiffness), stiffness)  # (B, T, 4)
    k = xp.permute_dims(k, (1, 0, 2))  # (T, B, 4): one contiguous slice per Euler step
    left, right, down, up = (k[..., s] for s in range(N_SPRINGS))
    drive = dt * xp.stack([right - left, up - down], axis=-1)  # dt (k_R - k_L, k_U - k_D)   (T, B, 2)
    stiff = dt * xp.stack([left + right, down + up], axis=-1)  # dt (k_R + k_L, k_U + k_D)
    damping = 1.0 + dt * config.viscosity + dt * stiff  # backward Euler's denominator
    start, _ = equilibria(stiffness[:, :1, :])
    p = start[:, 0, :]
    v = xp.zeros_like(p)
    path = [p]
    for n in range(n_total):
        v = (v + drive[n] - stiff[n] * p) / damping[n]
        p = p + dt * v
        path.append(p)
    return xp.stack(path, axis=1)


def resample(path: Array, n_points: int, eps: float = 1e-8) -> tuple[Array, Array]:
    """`n_points` points evenly spaced in arc length along each polyline, and the polylines' lengths.

    path: (B, N, 2) -> points (B, n_points, 2), length (B,). Point j sits at arc length s_j = L j / (n - 1),
    on the segment i whose cumulative lengths bracket it, at fraction f = (s_j - S_i) / |segment i|.
    The segment choice is piecewise constant; positions stay differentiable.
    """
    xp = array_namespace(path)
    seg = path[:, 1:, :] - path[:, :-1, :]  # (B, N-1, 2)
    seg_len = xp.sqrt(xp.sum(seg * seg, axis=-1) + eps)  # (B, N-1)
    cum = xp.cumulative_sum(seg_len, axis=1)  # S_1 .. S_{N-1}
    length = cum[:, -1]
    s = length[:, None] * _const(np.linspace(0.0, 1.0, n_points), path)[None, :]  # (B, n_points)
    # index of the segment holding s_j: how many segment ends lie before it, capped at the last one
    # (counted in floats: numpy sums a large int64 temporary ~20x slower)
    before = xp.sum(xp.astype(cum[:, None, :-1] < s[:, :, None], path.dtype), axis=-1)
    index = xp.astype(before, xp.int64)  # (B, n_points)
    start_s = xp.take_along_axis(cum - seg_len, index, axis=1)  # S_i
    frac = xp.clip((s - start_s) / xp.take_along_axis(seg_len, index, axis=1), min=0.0, max=1.0)
    coords = [
        xp.take_along_axis(path[:, :-1, d], index, axis=1)
        + frac * xp.take_along_axis(seg[:, :, d], index, axis=1)
        for d in range(2)
    ]
    return xp.stack(coords, axis=-1), length


def kernel_table(width: Array) -> Array:
    """The normalised Gaussian kernel g(d) at integer offsets d = -29 .. 30 for widths (B,) -> (B, 60).

    Z sums the kernel over every offset that can occur in the 28-pixel grid (|d| <= 27): ink blurred
    past the border is lost rather than renormalised.
    """
    xp = array_namespace(width)
    inv = 1.0 / (2.0 * width * width)  # (B,)
    inside = _const(np.arange(-(SIDE - 1), SIDE, dtype=np.float64) ** 2, width)
    norm = xp.sum(xp.exp(-inside[None, :] * inv[:, None]), axis=1)
    table = _const(np.arange(_D_MIN, _D_MIN + _N_OFFSETS, dtype=np.float64) ** 2, width)
    return xp.exp(-table[None, :] * inv[:, None]) / norm[:, None]


_D_MIN, _N_OFFSETS = -(SIDE + 1), 2 * SIDE + 4  # offsets grid - tap, with taps clamped to -2 .. 29
_WINDOWS = np.arange(_N_OFFSETS - SIDE + 1)[:, None] + np.arange(SIDE)[None, :]  # window s holds s .. s+27


def blurred_hats(coord: Array, table: Array) -> Array:
    """Blurred bilinear splat along one axis: (sum_c' tri(u_j - c') G[c, c'])  for pixels c, i.e.

        (1 - f) g(c - u0) + f g(c - u0 - 1),      u0 = floor(u_j), f = u_j - u0,

    with a tap that falls outside the 28 pixels dropped (its ink is lost, as in the splat).
    coord: (B, n) pixel coordinates, table: (B, 60) from `kernel_table` -> (B, n, 28).
    """
    xp = array_namespace(coord)
    base = xp.clip(xp.floor(coord), min=-2.0, max=float(SIDE))  # constant w.r.t. coord
    frac = coord - base
    out = 0.0
    for tap, weight in ((base, 1.0 - frac), (base + 1.0, frac)):
        valid = xp.astype((tap >= 0.0) & (tap <= SIDE - 1.0), coord.dtype)
        g = _windows(table, xp.astype(-tap, xp.int64) - _D_MIN)  # (B, n, 28)
        out = out + g * (weight * valid)[:, :, None]
    return out


def _windows(table: Array, start: Array) -> Array:
    """table[b, start[b, j] + c] for c = 0..27: g(c - tap) is a contiguous window of the kernel table.
    (B, W), (B, n) -> (B, n, 28). Each library's fastest way (measured): torch gathers, numpy cuts the
    table into its windows and picks one per point."""
    if is_torch_array(table):
        import torch  # only reached with torch arrays: serving never imports it

        index = start[:, :, None] + torch.arange(SIDE, device=start.device)
        return torch.gather(table, 1, index.reshape(start.shape[0], -1)).reshape(*start.shape, SIDE)
    return table[:, _WINDOWS][np.arange(table.shape[0])[:, None], start]


def to_pixels(points: Array, config: RendererConfig) -> Array:
    """Pen positions (..., 2) (x, y in pen units, y up) -> pixel coordinates (..., 2) (col, row)."""
    xp = array_namespace(points)
    centre = (SIDE - 1) / 2
    return xp.stack([centre + config.scale * points[..., 0], centre - config.scale * points[..., 1]], axis=-1)


def render(program: Array, config: RendererConfig = RendererConfig()) -> Drawing:
    """Draw a batch of motor programs (B, 70) -> images (B, 784) (the module docstring has the math)."""
    xp = array_namespace(program)
    if program.ndim != 2 or program.shape[1] != PROGRAM_SIZE:
        raise ValueError(f"programs must have shape (B, {PROGRAM_SIZE}), got {tuple(program.shape)}")
    stiffness, log_ink, log_width = split_program(program)
    path = integrate(stiffness, config)
    points, length = resample(path, config.n_points)
    pixels = to_pixels(points, config)
    col, row = pixels[..., 0], pixels[..., 1]  # (B, n)
    ink = config.ink * xp.exp(log_ink) * config.scale * length / config.n_points  # (B,) per point
    table = kernel_table(config.width * xp.exp(log_width))
    across = blurred_hats(col, table) * ink[:, None, None]  # diag(w) Hx G^T   (B, n, 28)
    down = blurred_hats(row, table)  # Hy G^T
    image = xp.matmul(xp.matrix_transpose(down), across)  # (B, 28, 28)
    image = 1.0 - relu(1.0 - image)  # min(image, 1)
    return Drawing(xp.reshape(image, (program.shape[0], SIDE * SIDE)), path, pixels)
