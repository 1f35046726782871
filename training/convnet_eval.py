"""Evaluation of a convnet bundle: MNIST test error, and reading strips of MNIST test digits.

A strip is read exactly when the string read equals its digits left to right. Per digit, a found
digit is a true positive when it lies over a true digit not matched yet (its box's centre column
inside that digit's ink box, widened by 2 px) with the same class: precision = true positives /
digits found, recall = true positives / digits in the strips.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from typing import Any

import numpy as np

from bundles.convnet import ConvNetBundle, ReaderConfig, Reading
from bundles.digit_strips import Strip, StripConfig, make_strips
from training.mnist import MnistSplits

STRIP_SEED = 2  # the test strips; tuning uses strips of validation digits with another seed
TUNE_SEED = 102


def align(reading: Reading, strip: Strip, slack: float = 2.0, same_class: bool = False) -> dict[int, int]:
    """true digit -> digit read over it: each digit read, left to right, takes the first true digit
    not taken yet whose ink box (widened by `slack` px) holds its box's centre column (and, with
    `same_class`, whose label it read)."""
    pairs: dict[int, int] = {}
    for j, found in enumerate(reading.digits):
        cx = (found.box[1] + found.box[3]) / 2
        for i, (label, box) in enumerate(zip(strip.labels, strip.boxes, strict=True)):
            fits = box[1] - slack <= cx <= box[3] + slack and (not same_class or label == found.digit)
            if i not in pairs and fits:
                pairs[i] = j
                break
    return pairs


def match(reading: Reading, strip: Strip, slack: float = 2.0) -> int:
    """True positives of one reading against the strip's digits (see the module doc)."""
    return len(align(reading, strip, slack, same_class=True))


def read_strips(
    bundle: ConvNetBundle, strips: list[Strip], reader: ReaderConfig | None = None
) -> dict[str, Any]:
    exact, hits, found, truth, times = 0, 0, 0, 0, []
    for strip in strips:
        started = time.perf_counter()
        reading = bundle.read(strip.image, reader)
        times.append(1000 * (time.perf_counter() - started))
        exact += reading.text == strip.text
        hits += match(reading, strip)
        found += len(reading.digits)
        truth += len(strip.labels)
    return {
        "strips": len(strips),
        "digits": truth,
        "string_accuracy": exact / len(strips),
        "digit_precision": hits / max(found, 1),
        "digit_recall": hits / truth,
        "strip_ms_p50": float(np.percentile(times, 50)),
        "strip_ms_p90": float(np.percentile(times, 90)),
    }


def reader_key(cfg: ReaderConfig) -> str:
    """A reader's settings that differ from the defaults, as `name=value` joined by `/`."""
    default = asdict(ReaderConfig())
    return "/".join(f"{k}={v}" for k, v in asdict(cfg).items() if v != default[k]) or "default"


def parse_reader(text: str, base: ReaderConfig | None = None) -> ReaderConfig:
    """`threshold=0.35/fine=True/...` -> ReaderConfig: `base` (default: the defaults, so the inverse of
    `reader_key`) with these settings changed."""
    cfg = base or ReaderConfig()
    for item in filter(None, text.split("/")):
        if item == "default":
            continue
        name, value = item.split("=")
        kind = type(getattr(cfg, name))
        cfg = replace(cfg, **{name: value == "True" if kind is bool else kind(value)})
    return cfg


def tune_reader(bundle: ConvNetBundle, data: MnistSplits, n: int = 300) -> dict[str, Any]:
    """String accuracy on strips of *validation* digits for a small grid of decoding settings, in
    stages, each starting from the best so far: (1) the scan's detection (scan step, threshold, min
    distance) with the class voted by the scan's rows; (2) the vote over neighbouring columns too, or
    the class averaged over shifted windows; (3) the class of each found digit cut out alone
    (`alone_weight`); (4) recognition-driven segmentation (bundles/convnet_pieces.py) with the count
    prior `piece_bias` and the scan's weight `context_weight`, cutting also between scan peaks."""
    strips = make_strips(data.valid_x, data.valid_y, n, TUNE_SEED)
    grid: dict[str, float] = {}
    configs: dict[str, ReaderConfig] = {}

    def score(cfg: ReaderConfig) -> None:
        key = reader_key(cfg)
        configs[key] = cfg
        grid[key] = read_strips(bundle, strips, cfg)["string_accuracy"]

    def best() -> ReaderConfig:
        return configs[max(grid, key=lambda k: grid[k])]  # the first of equals: the simpler one

    for fine in (False, True):
        for threshold in (0.2, 0.35, 0.5):
            for min_distance in (4.0, 6.0, 8.0, 10.0):
                score(ReaderConfig(threshold, min_distance, refine=0, fine=fine))
    scan = best()
    for changed in (replace(scan, vote_columns=1), replace(scan, refine=1), replace(scan, refine=2)):
        score(changed)
    scan = best()
    for weight in (0.5, 1.0):
        score(replace(scan, alone_weight=weight))
    for bias in (0.0, 1.0, 2.0):
        for weight in (0.5, 1.0):
            score(replace(scan, segment=True, piece_bias=bias, context_weight=weight, guide_threshold=0.1))
    return {"grid": grid, "best": asdict(best()), "best_key": reader_key(best()), "strips": n}


def evaluate_convnet(bundle: ConvNetBundle, data: MnistSplits, n_strips: int = 1000) -> dict[str, Any]:
    predicted = np.concatenate(
        [bundle.predict_proba(data.test_x[s : s + 1000]).argmax(1) for s in range(0, len(data.test_x), 1000)]
    )
    strips = make_strips(data.test_x, data.test_y, n_strips, STRIP_SEED)
    return {
        "bundle_id": bundle.bundle_id,
        "test_error": float((predicted != data.test_y).mean()),
        "reader": asdict(bundle.reader),
        "strip_config": asdict(StripConfig()),
        **read_strips(bundle, strips),
    }
