"""Pen strokes of the digits 0-9, as a person might draw them, for the browser tests and benchmarks/ui.py.

Each digit is one or more strokes (polylines) in a unit box (x right, y down), built from lines and
elliptical arcs; `digit_strokes(digit, seed)` varies size, slant and position a little, so that the
same test draws a different hand every seed, and `draw_on(page, canvas, strokes)` drags the mouse
along them on a canvas (mouse down, moves, mouse up per stroke).
"""

from __future__ import annotations

import math

import numpy as np

Stroke = list[tuple[float, float]]


def _arc(cx: float, cy: float, rx: float, ry: float, start: float, stop: float, n: int = 24) -> Stroke:
    """Points on an ellipse from angle `start` to `stop` (degrees; 0 = right, 90 = down)."""
    angles = np.radians(np.linspace(start, stop, n))
    return [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in angles]


def _line(*points: tuple[float, float], n: int = 8) -> Stroke:
    out: Stroke = [points[0]]
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        out += [(x0 + (x1 - x0) * t, y0 + (y1 - y0) * t) for t in np.linspace(0, 1, n)[1:]]
    return out


def _template(digit: int) -> list[Stroke]:
    if digit == 0:
        return [_arc(0.5, 0.5, 0.3, 0.42, -90, 275, 40)]
    if digit == 1:
        return [_line((0.5, 0.06), (0.5, 0.94))]
    if digit == 2:
        return [_arc(0.5, 0.3, 0.28, 0.22, 190, 380) + _line((0.76, 0.42), (0.2, 0.92), (0.84, 0.92))[1:]]
    if digit == 3:
        return [_arc(0.48, 0.28, 0.26, 0.22, 210, 450) + _arc(0.48, 0.71, 0.3, 0.23, -90, 150)[1:]]
    if digit == 4:
        return [_line((0.3, 0.06), (0.18, 0.6), (0.84, 0.6)), _line((0.64, 0.3), (0.64, 0.95))]
    if digit == 5:
        top = _line((0.78, 0.08), (0.3, 0.08), (0.27, 0.44))
        return [top + _arc(0.46, 0.66, 0.3, 0.26, -120, 150)[1:]]
    if digit == 6:
        return [_arc(0.62, 0.52, 0.4, 0.46, -80, -180, 12) + _arc(0.5, 0.7, 0.28, 0.23, 180, 540, 36)[1:]]
    if digit == 7:
        return [_line((0.16, 0.1), (0.84, 0.1), (0.42, 0.94))]
    if digit == 8:
        t = np.linspace(0, 2 * math.pi, 60)
        return [[(0.5 + 0.24 * math.sin(2 * a) * 0.9, 0.5 - 0.44 * math.cos(a)) for a in t]]
    if digit == 9:
        return [_arc(0.48, 0.3, 0.26, 0.22, 0, 360, 32) + _line((0.74, 0.3), (0.7, 0.94))[1:]]
    raise ValueError(f"not a digit: {digit}")


def digit_strokes(digit: int, seed: int = 0) -> list[Stroke]:
    """The strokes of `digit` in the unit box, with a seeded slant, size and offset."""
    rng = np.random.default_rng([seed, digit])
    slant = rng.uniform(-0.15, 0.15)
    scale_x, scale_y = rng.uniform(0.85, 1.05), rng.uniform(0.9, 1.05)
    dx, dy = rng.uniform(-0.04, 0.04, 2)
    out = []
    for stroke in _template(digit):
        points = []
        for x, y in stroke:
            x, y = 0.5 + (x - 0.5) * scale_x, 0.5 + (y - 0.5) * scale_y
            points.append((x + slant * (0.5 - y) + dx, y + dy))
        out.append(points)
    return out


def draw_on(page, canvas, strokes: list[Stroke], margin: float = 0.12) -> None:
    """Drag the mouse along `strokes` (unit box) over the Playwright `canvas` locator."""
    canvas.scroll_into_view_if_needed()  # the mouse acts only inside the viewport
    box = canvas.bounding_box()
    assert box is not None, "the canvas is not visible"
    left, top = box["x"] + margin * box["width"], box["y"] + margin * box["height"]
    width, height = box["width"] * (1 - 2 * margin), box["height"] * (1 - 2 * margin)
    for stroke in strokes:
        x, y = stroke[0]
        page.mouse.move(left + x * width, top + y * height)
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(left + x * width, top + y * height)
        page.mouse.up()
