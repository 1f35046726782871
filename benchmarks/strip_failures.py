"""Where the strip reader fails: misses, doubles and wrong classes, by gap, scale and digit.

    /work/bin/heavy .venv/bin/python benchmarks/strip_failures.py --convnet DIR [--strips 300]

Strips of MNIST *validation* digits (the tuning seed of training/convnet_eval.py; never test digits).
Every true digit is aligned to at most one digit read (training/convnet_eval.align); per strip the
outcome is `exact`, `missed` (fewer digits read), `extra` (more read), or `class` (as many as there are,
some of the wrong class). Per true digit: found with its class, found with another class, or missed,
tallied by the smaller ink gap to its neighbours (px at scale 1: negative = touching), by the strip's
scale and by its label. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from bundles.convnet import ConvNetBundle, ReaderConfig
from bundles.digit_strips import Strip, make_strips
from training.convnet_eval import TUNE_SEED, align, parse_reader
from training.mnist import load_mnist


def _gaps(strip: Strip) -> list[float]:
    """Each digit's smaller ink gap to a neighbour, px at scale 1 (digit heights ~20 px at scale 1)."""
    scale = float(np.median([b[2] - b[0] for b in strip.boxes])) / 20.0
    boxes = strip.boxes
    out = []
    for i in range(len(boxes)):
        near = [boxes[i][1] - boxes[i - 1][3]] if i else []
        near += [boxes[i + 1][1] - boxes[i][3]] if i + 1 < len(boxes) else []
        out.append(min(near) / scale)
    return out


def _bin(value: float, edges: tuple[float, ...]) -> str:
    for lo, hi in zip(edges, edges[1:], strict=False):
        if lo <= value < hi:
            return f"[{lo:g},{hi:g})"
    return f">={edges[-1]:g}" if value >= edges[-1] else f"<{edges[0]:g}"


def analyse(bundle: ConvNetBundle, strips: list[Strip], reader: ReaderConfig | None = None) -> dict[str, Any]:
    outcomes: Counter[str] = Counter()
    by: dict[str, dict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
    for strip in strips:
        reading = bundle.read(strip.image, reader)
        n_read, n_true = len(reading.digits), len(strip.labels)
        if reading.text == strip.text:
            outcome = "exact"
        else:
            outcome = "missed" if n_read < n_true else "extra" if n_read > n_true else "class"
        outcomes[outcome] += 1
        scale = float(np.median([b[2] - b[0] for b in strip.boxes])) / 20.0
        pairs = align(reading, strip)
        for i, (label, gap) in enumerate(zip(strip.labels, _gaps(strip), strict=True)):
            j = pairs.get(i)
            fate = "missed" if j is None else "ok" if reading.digits[j].digit == label else "wrong_class"
            by["gap"][_bin(gap, (-3.0, -1.0, 1.0, 3.0, 6.0))][fate] += 1
            by["scale"][_bin(scale, (0.7, 0.9, 1.1, 1.3, 1.5))][fate] += 1
            by["label"][str(label)][fate] += 1
        by["strip_scale"][_bin(scale, (0.7, 0.9, 1.1, 1.3, 1.5))][outcome] += 1
        by["strip_digits"][str(n_true)][outcome] += 1
        by["extra_digits"]["read - true"][str(n_read - n_true)] += 1
    return {"strips": len(strips), "outcomes": dict(outcomes), **{k: dict(v) for k, v in by.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--convnet", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--strips", type=int, default=300)
    parser.add_argument(
        "--reader",
        default=None,
        help="name=value/... of bundles.convnet.ReaderConfig, e.g. segment=True/piece_bias=1.0 (default: "
        "the bundle's)",
    )
    args = parser.parse_args()
    reader = None
    if args.reader:
        base = ConvNetBundle.load(args.convnet).reader
        reader = parse_reader(args.reader, base)
    data = load_mnist(args.data)
    strips = make_strips(data.valid_x, data.valid_y, args.strips, TUNE_SEED)
    print(json.dumps(analyse(ConvNetBundle.load(args.convnet), strips, reader), indent=1, default=dict))


if __name__ == "__main__":
    main()
