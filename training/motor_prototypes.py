"""One prototype motor program per digit class, the only hand-made input of the motor model (seed 000,
slide 7: "start with a single prototype code").

Each prototype is a sketch: the pen's path as a few key points (pen units, x right, y up, the anchors
at +-1). It is resampled to 17 points evenly spaced along the sketch, which become the equilibria of
the 17 time steps at pair stiffness `PROTOTYPE_STIFFNESS`; the springs follow from
`stiffness_from_equilibria`. The pen lags its moving equilibrium, which rounds the corners. Digits
that people draw with a pen lift (4, 5, 7) are drawn in one stroke that retraces or closes the
shape (a closed 4, a 5 from the top bar down).
"""

from __future__ import annotations

import numpy as np

from models.motor_renderer import N_STEPS, N_STYLE, stiffness_from_equilibria

PROTOTYPE_STIFFNESS = 12.0  # k_L + k_R = k_D + k_U at every step (response time about half a step)


def _ellipse(turns: float, start: float = 0.0) -> list[tuple[float, float]]:
    angles = np.linspace(start, start + 2 * np.pi * turns, 24)
    return [(-0.5 * np.sin(a), 0.85 * np.cos(a)) for a in angles]


SKETCHES: dict[int, list[tuple[float, float]]] = {
    0: _ellipse(1.08),
    1: [(0.12, 0.85), (-0.12, -0.85)],
    2: [(-0.45, 0.45), (-0.3, 0.75), (0.0, 0.85), (0.35, 0.72), (0.45, 0.4), (0.3, 0.05), (0.0, -0.3),
        (-0.45, -0.8), (0.5, -0.8)],
    3: [(-0.45, 0.6), (-0.1, 0.85), (0.3, 0.8), (0.45, 0.5), (0.3, 0.15), (-0.1, 0.02), (0.3, -0.1),
        (0.45, -0.45), (0.25, -0.8), (-0.15, -0.85), (-0.5, -0.6)],
    4: [(0.25, -0.85), (0.25, 0.85), (-0.5, -0.15), (0.55, -0.15)],
    5: [(0.45, 0.85), (-0.3, 0.85), (-0.4, 0.1), (0.0, 0.2), (0.35, 0.05), (0.45, -0.35), (0.3, -0.7),
        (-0.05, -0.85), (-0.45, -0.65)],
    6: [(0.35, 0.85), (-0.05, 0.5), (-0.4, 0.0), (-0.4, -0.5), (-0.1, -0.85), (0.3, -0.75), (0.45, -0.4),
        (0.25, -0.1), (-0.1, -0.1), (-0.4, -0.3)],
    7: [(-0.5, 0.85), (0.5, 0.85), (0.2, 0.2), (-0.1, -0.85)],
    8: [(0.35, 0.7), (0.0, 0.85), (-0.35, 0.65), (-0.3, 0.25), (0.0, 0.05), (0.35, -0.2), (0.4, -0.6),
        (0.0, -0.85), (-0.4, -0.6), (-0.35, -0.2), (0.0, 0.05), (0.3, 0.3), (0.35, 0.7)],
    9: [(0.4, 0.45), (0.2, 0.8), (-0.2, 0.8), (-0.45, 0.45), (-0.25, 0.1), (0.15, 0.1), (0.4, 0.45),
        (0.35, 0.0), (0.2, -0.85)],
}  # fmt: skip


def resample_sketch(sketch: list[tuple[float, float]], n: int = N_STEPS) -> np.ndarray:
    """`n` points evenly spaced in arc length along a polyline.  -> (n, 2)."""
    pts = np.asarray(sketch, dtype=np.float64)
    cum = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
    s = np.linspace(0.0, cum[-1], n)
    return np.stack([np.interp(s, cum, pts[:, 0]), np.interp(s, cum, pts[:, 1])], axis=1)


def prototype_programs(n_classes: int = 10) -> np.ndarray:
    """The prototype program of each class.  -> (n_classes, 70) float32, style values 0."""
    if not 1 <= n_classes <= len(SKETCHES):
        raise ValueError(f"there are prototypes for at most {len(SKETCHES)} classes, not {n_classes}")
    programs = []
    for label in range(n_classes):
        points = resample_sketch(SKETCHES[label])
        springs = stiffness_from_equilibria(points, np.full_like(points, PROTOTYPE_STIFFNESS))
        programs.append(np.concatenate([springs.reshape(-1), np.zeros(N_STYLE)]))
    return np.asarray(programs, dtype=np.float32)
