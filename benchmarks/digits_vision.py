"""Digits part 2 benchmarks (issue #13): the convnet, input routes, robustness, reading strips.

    /work/bin/heavy .venv/bin/python benchmarks/digits_vision.py --convnet DIR [--digits DIR] \
        [--motor DIR --motor-limit 1000] [--parts convnet,routes,robustness] [--limit N]

* convnet: MNIST test error of the convnet (`test_error.convnet` in digits.json); the reader's decoding
  settings are tuned on strips of MNIST *validation* digits and written into the bundle's config; then
  1000 strips of MNIST *test* digits (bundles/digit_strips.py) are read: digits_read.json with
  `string_accuracy`, `digit_precision`, `digit_recall`, `strip_ms_p50` (in-process `read`, one thread).
* routes: every variant's test error when the test digits arrive as JSON pixels and as 28x28 PNG
  uploads, both through the service's own functions (service/imaging.py decode_image + to_mnist, the
  shared preprocessing); `route_gap_points` = the largest |PNG - JSON| error over variants, in points.
* robustness: every variant's test error, JSON route with the shared preprocessing, on perturbed test
  digits: shift 2/3/4 px (zero fill), rotation +-15 degrees, scale 0.8/1.2 about the centre, Gaussian
  noise std 0.1/0.3 (clipped to [0, 1]), inverted polarity; `robustness.<variant>.<perturbation>`.
  A digit the preprocessing finds blank counts as an error.
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from results_json import merge_into  # benchmarks/, beside this script
from scipy import ndimage

from bundles.convnet import ConvNetBundle, ReaderConfig
from bundles.digit_strips import StripConfig, make_strips
from bundles.io import write_metrics
from service.imaging import ImageInputError, decode_image, to_mnist
from training.convnet_eval import STRIP_SEED, read_strips, tune_reader
from training.mnist import load_mnist

RESULTS = Path(__file__).parent / "results"


# ----- perturbations of 28x28 digits ----------------------------------------------------------------
def _shift(d: int) -> Callable[[np.ndarray], np.ndarray]:
    def f(x: np.ndarray) -> np.ndarray:  # d px right and d px down, zero fill
        out = np.zeros_like(x)
        out[d:, d:] = x[: 28 - d, : 28 - d]
        return out

    return f


def _rotate(deg: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda x: np.clip(ndimage.rotate(x, deg, reshape=False, order=1), 0, 1)


def _scale(f: float) -> Callable[[np.ndarray], np.ndarray]:
    def g(x: np.ndarray) -> np.ndarray:
        c = 13.5
        matrix = np.eye(2) / f
        return np.clip(ndimage.affine_transform(x, matrix, offset=c - matrix @ [c, c], order=1), 0, 1)

    return g


def _noise(std: float, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    return lambda x: np.clip(x + rng.normal(0, std, x.shape), 0, 1).astype(np.float32)


PERTURBATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "clean": lambda x: x,
    "shift_2": _shift(2),
    "shift_3": _shift(3),
    "shift_4": _shift(4),
    "rotation_+15": _rotate(15),
    "rotation_-15": _rotate(-15),
    "scale_0.8": _scale(0.8),
    "scale_1.2": _scale(1.2),
    "noise_0.1": _noise(0.1, 0),
    "noise_0.3": _noise(0.3, 1),
    "inverted": lambda x: 1.0 - x,
}


def _normalised(pictures: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(n, 784) through the shared preprocessing, and which were refused as blank."""
    rows, blank = [], []
    for gray in pictures:
        try:
            rows.append(to_mnist(gray.astype(np.float32)))
            blank.append(False)
        except ImageInputError:
            rows.append(np.zeros(784, dtype=np.float32))
            blank.append(True)
    return np.stack(rows), np.array(blank)


def _png_roundtrip(x: np.ndarray) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(np.round(x * 255).astype(np.uint8)).save(buffer, format="PNG")
    return decode_image(buffer.getvalue())


Recogniser = tuple[Callable[[np.ndarray], np.ndarray], int | None, str]


def _recognisers(args: argparse.Namespace) -> dict[str, Recogniser]:
    """variant -> (predict (n, 784) -> (n,), limit on test digits, bundle id)."""
    out: dict[str, Recogniser] = {}
    if args.digits is not None:
        from bundles.vision import DigitBundle

        dbn = DigitBundle.load(args.digits)
        for variant in ("finetuned", "generative"):
            out[variant] = ((lambda x, v=variant: dbn.predict(x, v)), None, dbn.bundle_id)
    if args.convnet is not None:
        convnet = ConvNetBundle.load(args.convnet)
        out["convnet"] = ((lambda x: convnet.predict_proba(x).argmax(1)), None, convnet.bundle_id)
    if args.motor is not None:
        from bundles.motor import MotorBundle

        motor = MotorBundle.load(args.motor)
        out["motor"] = ((lambda x: motor.predict_proba(x).argmax(1)), args.motor_limit, motor.bundle_id)
    return out


def _error(
    predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, blank: np.ndarray, y: np.ndarray
) -> float:
    predicted = np.concatenate([predict(x[s : s + 500]) for s in range(0, len(x), 500)])
    return float(((predicted != y) | blank).mean())


def part_routes_and_robustness(args: argparse.Namespace, parts: set[str]) -> None:
    data = load_mnist(args.data)
    n = args.limit or len(data.test_x)
    images, labels = data.test_x[:n].reshape(-1, 28, 28), data.test_y[:n]
    recognisers = _recognisers(args)
    result: dict[str, Any] = {
        "n_test_digits": n,
        "route_bundles": {variant: bundle_id for variant, (_, _, bundle_id) in recognisers.items()},
    }
    if "routes" in parts:
        json_x, json_blank = _normalised(list(images))
        png_x, png_blank = _normalised([_png_roundtrip(x) for x in images])
        routes: dict[str, dict[str, float]] = {}
        for variant, (predict, limit, _) in recognisers.items():
            m = limit or n
            routes[variant] = {
                "json": _error(predict, json_x[:m], json_blank[:m], labels[:m]),
                "png_upload": _error(predict, png_x[:m], png_blank[:m], labels[:m]),
                "n_test_digits": m,
            }
            print(variant, routes[variant])
        # Variants measured by earlier runs (e.g. motor with its own bundle) count in the gap too.
        path = args.out / "digits.json"
        earlier = json.loads(path.read_text()).get("route_test_error", {}) if path.exists() else {}
        routes = {**earlier, **routes}
        result["route_test_error"] = routes
        result["route_gap_points"] = max(100 * abs(r["png_upload"] - r["json"]) for r in routes.values())
    if "robustness" in parts:
        table: dict[str, dict[str, float]] = {v: {} for v in recognisers}
        for name, perturb in PERTURBATIONS.items():
            x, blank = _normalised([perturb(image) for image in images])
            for variant, (predict, limit, _) in recognisers.items():
                m = limit or n
                table[variant][name] = _error(predict, x[:m], blank[:m], labels[:m])
            print(name, {v: table[v][name] for v in table})
        result["robustness"] = table
        result["robustness_n_test_digits"] = {v: limit or n for v, (_, limit, _) in recognisers.items()}
        result["robustness_cost_points"] = {
            v: {k: 100 * (e - t["clean"]) for k, e in t.items() if k != "clean"} for v, t in table.items()
        }
        result["robustness_setup"] = (
            "MNIST test digits perturbed in their 28x28 field, sent as JSON pixels through the shared "
            "preprocessing (service/imaging.to_mnist); shift: d px right and down, zero fill; scale about "
            "the centre; noise: Gaussian, clipped to [0, 1]; a digit found blank counts as an error"
        )
    merge_into(args.out / "digits.json", result)


def part_convnet(args: argparse.Namespace) -> None:
    data = load_mnist(args.data)
    bundle = ConvNetBundle.load(args.convnet)
    tuning = tune_reader(bundle, data, args.tune_strips)
    bundle.config["reader"] = tuning["best"]
    (args.convnet / "config.json").write_text(json.dumps(bundle.config, indent=2, sort_keys=True) + "\n")
    bundle = ConvNetBundle.load(args.convnet)
    predicted = np.concatenate(
        [bundle.predict_proba(data.test_x[s : s + 1000]).argmax(1) for s in range(0, len(data.test_x), 1000)]
    )
    test_error = float((predicted != data.test_y).mean())
    strips = make_strips(data.test_x, data.test_y, args.strips, STRIP_SEED)
    reading = read_strips(bundle, strips, ReaderConfig(**tuning["best"]))
    metrics = {**bundle.metrics, "test_error": {"convnet": test_error}, "strips": reading}
    write_metrics(args.convnet, metrics)
    merge_into(
        args.out / "digits.json",
        {
            "test_error": {"convnet": test_error},
            "validation_error": {"convnet": bundle.metrics["validation_error"]["convnet"]},
            "convnet": {
                "bundle_id": bundle.bundle_id,
                "train_seconds": bundle.metrics.get("train_seconds"),
                "train_cpu_seconds": bundle.metrics.get("train_cpu_seconds"),
                "train_device": bundle.metrics.get("train_device"),
                "torch_threads": bundle.metrics.get("torch_threads"),
                "best_epoch": bundle.metrics.get("best_epoch"),
                "training": bundle.config.get("training"),
            },
        },
    )
    merge_into(
        args.out / "digits_read.json",
        {
            **reading,
            "bundle_id": bundle.bundle_id,
            "reader": tuning["best"],
            "reader_tuning": tuning,
            "strip_config": {
                k: list(v) if isinstance(v, tuple) else v for k, v in StripConfig().__dict__.items()
            },
            "strip_source": f"MNIST test digits, seed {STRIP_SEED}; reader tuned on validation-digit strips",
            "timing": "in-process ConvNetBundle.read per strip (prepare, scan, decode; numpy, 1 BLAS thread)",
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--convnet", type=Path)
    parser.add_argument("--digits", type=Path)
    parser.add_argument("--motor", type=Path)
    parser.add_argument("--motor-limit", type=int, default=1000)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--parts", default="convnet,routes,robustness")
    parser.add_argument("--limit", type=int, default=None, help="Test digits for routes/robustness.")
    parser.add_argument("--strips", type=int, default=1000)
    parser.add_argument(
        "--tune-strips", type=int, default=300, help="Strips of validation digits for tuning the reader."
    )
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    parts = set(args.parts.split(","))
    if "convnet" in parts:
        part_convnet(args)
    if parts & {"routes", "robustness"}:
        part_routes_and_robustness(args, parts)


if __name__ == "__main__":
    main()
