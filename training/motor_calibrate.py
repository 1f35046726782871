"""Choosing a motor bundle's local search and fitting its temperature, on validation digits.

Every setting of the grid (iterations x initial step x prior weight lambda x classes refined x
class-manifold weight gamma) is run with the numpy inference that serving runs (`MotorBundle.analyse`),
and each run is scored both ways: by the final energy (pixel error + prior terms) and by the final
pixel error (the same run: energies and pixel errors differ only by the prior terms). `error_at_z0`
is the error of the same score at the recognition nets' codes, before local search. The chosen setting has
the lowest validation error, ties broken by the lower negative log-likelihood of
softmax(-score / T) at its fitted temperature T. `recalibrate` writes the choice into a bundle's
config.json (the weights, and so the bundle id, stay as they are); `refresh_class_codes` replaces the
class codes, the reference of the class-manifold term, by those of more training digits.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import log_softmax

from bundles.io import write_bundle, write_config, write_metrics
from bundles.motor import CLASS_CODES, MotorBundle, fit_temperature
from bundles.motor_search import LocalSearch

log = logging.getLogger(__name__)


def refresh_class_codes(path: Path, images: np.ndarray, labels: np.ndarray, per_class: int) -> MotorBundle:
    """Replace the class codes of the bundle at `path` by the codes its recognition nets give the first
    `per_class` training digits of each class (each read by its own class's net): the reference codes of
    the class-manifold term and of `sample_code`. Rewrites the weights (a new bundle id)."""
    bundle = MotorBundle.load(path)
    codes = []
    for c in range(bundle.n_classes):
        own = images[labels == c][:per_class]
        if len(own) < per_class:
            raise ValueError(f"only {len(own)} training digits of class {c}, {per_class} asked for")
        codes.append(
            np.concatenate([bundle.recognize_codes(own[s : s + 1000])[c] for s in range(0, per_class, 1000)])
        )
    config = {**bundle.config, "architecture": {**bundle.config["architecture"], "n_class_codes": per_class}}
    write_bundle(path, config, {**bundle.weights, CLASS_CODES: np.stack(codes)}, bundle.metrics)
    return MotorBundle.load(path)


def search_grid(
    iterations: Sequence[int],
    steps: Sequence[float],
    priors: Sequence[float],
    top_k: Sequence[int],
    manifolds: Sequence[float] = (0.0,),
) -> list[LocalSearch]:
    """Every combination, scored by energy (`calibrate` also scores each run by pixel error)."""
    return [
        LocalSearch(iterations=i, step=s, prior=p, top_k=k, score="energy", manifold=g)
        for i, s, p, k, g in itertools.product(iterations, steps, priors, top_k, manifolds)
    ]


def _nll(scores: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    return float(-log_softmax(-scores / temperature, axis=1)[np.arange(len(labels)), labels].mean())


def calibrate(
    bundle: MotorBundle, images: np.ndarray, labels: np.ndarray, grid: Sequence[LocalSearch]
) -> dict[str, Any]:
    """Run every setting of `grid` on the validation digits; return the best one, its temperature and
    validation numbers, and every trial."""
    if not grid:
        raise ValueError("the local search grid is empty")
    calibration_started = time.perf_counter()
    rows = np.arange(len(labels))
    trials: list[dict[str, Any]] = []
    for settings in grid:
        started = time.perf_counter()
        analysis = bundle.analyse(images, settings=settings)
        ms = 1000 * (time.perf_counter() - started) / max(1, len(labels))
        runs = {
            "energy": (analysis.scores, analysis.scores_before),
            "pixel": (analysis.errors, analysis.errors_before),
        }
        for score, (scores, at_z0) in runs.items():
            if score == "pixel" and settings.prior == 0 and settings.manifold == 0:
                continue  # without prior terms the energy is the pixel error: the same trial
            temperature = fit_temperature(scores, labels)
            trial = {
                "local_search": asdict(replace(settings, score=score)),
                "error": float((scores.argmin(1) != labels).mean()),
                "nll": _nll(scores, labels, temperature),
                "temperature": temperature,
                "pixel_error": float(analysis.errors[rows, labels].mean()),
                "error_before": float((analysis.errors_before.argmin(1) != labels).mean()),
                "error_at_z0": float((at_z0.argmin(1) != labels).mean()),
                "pixel_error_before": float(analysis.errors_before[rows, labels].mean()),
                "ms_per_image": ms,
            }
            trials.append(trial)
            log.info("local search %s", trial)
    best = min(trials, key=lambda t: (t["error"], t["nll"]))
    return {
        "local_search": best["local_search"],
        "temperature": best["temperature"],
        "validation_error": best["error"],
        "validation_nll": best["nll"],
        "validation_error_before_local_search": best["error_before"],
        "validation_pixel_error": best["pixel_error"],
        "validation_pixel_error_before_local_search": best["pixel_error_before"],
        "local_search_trials": trials,
        "calibration_seconds": time.perf_counter() - calibration_started,
    }


def recalibrate(
    path: Path, images: np.ndarray, labels: np.ndarray, grid: Sequence[LocalSearch]
) -> dict[str, Any]:
    """Calibrate the bundle at `path` and write the chosen local search and temperature into its
    config.json, and the validation numbers into its metrics.json."""
    bundle = MotorBundle.load(path)
    result = calibrate(bundle, images, labels, grid)
    write_config(
        path, {**bundle.config, "local_search": result["local_search"], "temperature": result["temperature"]}
    )
    write_metrics(path, {**bundle.metrics, **result})
    return result
