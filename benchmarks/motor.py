"""Motor-program benchmarks (issue #14): writes benchmarks/results/motor.json.

    /work/bin/heavy .venv/bin/python benchmarks/motor.py --motor DIR [--limit 2000] \
        [--parts eval,latency,augmentation] [--aug-real 10000 --aug-synthetic 10000 --aug-epochs 3]

* eval: `training/motor_eval.evaluate_motor` on the first `--limit` MNIST test digits: test error by
  reconstruction before and after local search, squared pixel error of the correct and of the best
  wrong model before/after (`pixel_error_reduction.*`), confusion matrix.
* latency: `trace_ms_p50`, the in-process `MotorBundle.trace` of one test digit (local search included),
  p50 over 100 digits, one thread.
* augmentation: the recognition nets infer the program (code) of each of the first `--aug-real`
  training digits under its own class; training noise (the bundle's NoiseConfig) is added to copies of
  those codes, which are rendered into `--aug-synthetic` new digits, normalised by the shared
  preprocessing. The scanning convnet (`training/convnet.py`, the `quick` architecture) is trained twice
  with the same seed and epochs: on the real digits only, and on the real plus the generated digits;
  both are tested on the whole MNIST test set (`augmentation.test_error_without` / `_with`). A third
  run on the real digits only, for as many updates as the augmented one (more epochs), separates the
  effect of the generated digits from that of more training (`test_error_without_same_updates`).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from results_json import merge_into  # benchmarks/, beside this script

from bundles.convnet import ConvNetBundle
from bundles.digit_preprocess import BlankImageError, normalise_digit
from bundles.motor import MotorBundle, draw
from models.motor_codes import perturb_codes
from training.convnet import PROFILES as CONVNET_PROFILES
from training.convnet import train_convnet
from training.mnist import MnistSplits, load_mnist
from training.motor_eval import evaluate_motor

RESULTS = Path(__file__).parent / "results"


def generated_digits(
    bundle: MotorBundle, x: np.ndarray, y: np.ndarray, n: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """`n` new digits from noisy programs of the real digits (x, y): (n, 784) normalised, (n,) labels."""
    rng = np.random.default_rng(seed)
    codes = np.concatenate(
        [
            bundle.recognize_codes(x[s : s + 1000])[y[s : s + 1000], np.arange(len(x[s : s + 1000]))]
            for s in range(0, len(x), 1000)
        ]
    ).astype(np.float64)
    pick = rng.integers(len(x), size=n)
    noisy = perturb_codes(codes[pick], bundle.noise, lambda shape: rng.standard_normal(shape))
    images = draw(noisy, bundle.renderer)
    keep, out = [], []
    for i, image in enumerate(images):
        try:
            out.append(normalise_digit(image.reshape(28, 28)).reshape(784))
            keep.append(i)
        except BlankImageError:
            continue
    return np.stack(out).astype(np.float32), y[pick][keep]


def part_augmentation(args: argparse.Namespace, bundle: MotorBundle, data: MnistSplits) -> dict[str, Any]:
    real_x, real_y = data.train_x[: args.aug_real], data.train_y[: args.aug_real]
    started = time.perf_counter()
    gen_x, gen_y = generated_digits(bundle, real_x, real_y, args.aug_synthetic, seed=0)
    gen_seconds = time.perf_counter() - started
    config = replace(CONVNET_PROFILES["quick"], epochs=args.aug_epochs, n_train=None, device="cpu")
    # the control with as many updates as the augmented run: more epochs over the real digits only
    same_updates = round(args.aug_epochs * (len(real_x) + len(gen_x)) / len(real_x))
    errors = {}
    for name, (x, y, epochs) in {
        "without": (real_x, real_y, args.aug_epochs),
        "with": (np.concatenate([real_x, gen_x]), np.concatenate([real_y, gen_y]), args.aug_epochs),
        "without_same_updates": (real_x, real_y, same_updates),
    }.items():
        split = MnistSplits(x, y, data.valid_x, data.valid_y, data.test_x, data.test_y)
        with tempfile.TemporaryDirectory() as tmp:
            train_convnet(replace(config, epochs=epochs), split, Path(tmp), progress=False)
            convnet = ConvNetBundle.load(tmp)
            predicted = np.concatenate(
                [
                    convnet.predict_proba(data.test_x[s : s + 1000]).argmax(1)
                    for s in range(0, len(data.test_x), 1000)
                ]
            )
        errors[name] = float((predicted != data.test_y).mean())
        print(name, errors[name])
    if args.samples:
        np.save(args.samples, gen_x[:100])
    return {
        "recognizer": "convnet",
        "test_error_without": errors["without"],
        "test_error_with": errors["with"],
        "reduction_points": 100 * (errors["without"] - errors["with"]),
        "test_error_without_same_updates": errors["without_same_updates"],
        "epochs_without_same_updates": same_updates,
        "real_digits": len(real_x),
        "generated_digits": len(gen_x),
        "epochs": args.aug_epochs,
        "generation_seconds": gen_seconds,
        "setup": "convnet (quick architecture) trained with the same seed and epochs on the first "
        f"{len(real_x)} MNIST training digits, without and with digits rendered from their noisy inferred "
        "programs; tested on all 10,000 MNIST test digits. Control: the real digits only, for as many "
        "updates as the augmented run (test_error_without_same_updates)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--motor", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS / "motor.json")
    parser.add_argument("--parts", default="eval,latency,augmentation")
    parser.add_argument("--limit", type=int, default=2000, help="Test digits for the evaluation.")
    parser.add_argument("--aug-real", type=int, default=10000)
    parser.add_argument("--aug-synthetic", type=int, default=10000)
    parser.add_argument("--aug-epochs", type=int, default=3)
    parser.add_argument("--samples", type=Path, default=None, help="Save 100 generated digits (.npy).")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    parts = set(args.parts.split(","))
    bundle = MotorBundle.load(args.motor)
    data = load_mnist(args.data)
    results: dict[str, Any] = {"bundle_id": bundle.bundle_id, "training": bundle.config.get("training")}
    if "eval" in parts:
        ev = evaluate_motor(bundle, data.test_x[: args.limit], data.test_y[: args.limit])
        results.update(ev)
        results["test_digits"] = f"first {args.limit} MNIST test digits"
        print(json.dumps({k: ev[k] for k in ("test_error", "pixel_error_reduction")}))
    if "latency" in parts:
        times = []
        for i in range(100):
            started = time.perf_counter()
            bundle.trace(data.test_x[i : i + 1])
            times.append(1000 * (time.perf_counter() - started))
        results["trace_ms_p50"] = float(np.percentile(times, 50))
        results["trace_timing"] = (
            "in-process MotorBundle.trace of one digit (local search included), 1 thread"
        )
    if "augmentation" in parts:
        results["augmentation"] = part_augmentation(args, bundle, data)
    merge_into(args.out, results)


if __name__ == "__main__":
    main()
