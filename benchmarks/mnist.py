"""MNIST benchmarks; writes benchmarks/results/digits.json, images.json and their PNGs.

    .venv/bin/python benchmarks/mnist.py --digits artifacts/digits --images artifacts/images \
        [--digits-baseline DIR] [--parts results,cpu,latency]

* results: `semhash evaluate digits|images` on the MNIST test set (the only place test images are used):
  test errors of both recognisers, reconstruction error of the autoencoder and of 30-D PCA,
  binary-code precision@100, plots. With --digits-baseline, that bundle's test errors are reported
  beside (e.g. the same DBN fine-tuned without dropout).
* cpu: the CPU cost of a full training, measured rather than guessed: one epoch of every stage (each
  RBM, the labelled top RBM with and without its discriminative term, each fine-tuning) is timed on
  5,000 images on this machine's CPU and scaled by the epochs and data size the bundle's own training
  log records. Load average is reported with it, since a shared machine inflates every timing.
* latency: `semhash serve` (the whole app, one uvicorn process, one BLAS thread) on loopback with the
  given text, digits and images bundles; median wall time of 500 sequential JSON requests with one
  28x28 image over one keep-alive connection.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from results_json import read_results, write_results
from served import post, serving_bundles, wall_times  # benchmarks/, beside this script

from models.dbn import DBNClassifier, LabelledRBM
from models.image_autoencoder import DeepAutoencoder
from models.rbm import BernoulliRBM
from training.backprop import BackpropSchedule, fine_tune
from training.mnist import load_mnist
from training.pretrain import CDSchedule
from training.stack import train_or_resume
from training.vision_eval import evaluate_digits, evaluate_images

SLICE = 5000


def part_results(args: argparse.Namespace) -> None:
    data = load_mnist(args.data)
    digits = evaluate_digits(args.digits, data, args.out)
    if args.digits_baseline is not None:
        baseline = evaluate_digits(args.digits_baseline, data, None)
        digits["baseline"] = {
            "bundle": str(args.digits_baseline),
            "test_error": baseline["test_error"],
            "validation_error": baseline["validation_error"],
            "train_seconds": baseline["train_seconds"],
            "training": json.loads((args.digits_baseline / "config.json").read_text())["training"],
        }
    digits["training"] = json.loads((args.digits / "config.json").read_text())["training"]
    write_results(args.out / "digits.json", {**read_results(args.out / "digits.json"), **digits})
    images = evaluate_images(args.images, data, args.out)
    images["training"] = json.loads((args.images / "config.json").read_text())["training"]
    write_results(args.out / "images.json", {**read_results(args.out / "images.json"), **images})


def _seconds(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _rbm_epoch(
    rbm: BernoulliRBM, x: torch.Tensor, below: list[BernoulliRBM], features_from: int | None = None
) -> float:
    """One CD epoch exactly as training runs it (the up-pass through `below` per minibatch)."""
    return _seconds(
        lambda: train_or_resume(
            rbm,
            "timing",
            x,
            CDSchedule(epochs=1),
            below=below,
            checkpoint_dir=None,
            key="",
            features_from=features_from,
            progress=False,
        )
    )


def _cross_entropy(model: torch.nn.Module, xb: torch.Tensor, yb: torch.Tensor | None) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(model(xb), yb)


def part_cpu(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    data = load_mnist(args.data)
    x = torch.from_numpy(data.train_x[:SLICE])
    y = torch.from_numpy(data.train_y[:SLICE])
    scale = len(data.train_x) / SLICE
    load_before = os.getloadavg()[0]

    dcfg = json.loads((args.digits / "config.json").read_text())["training"]
    dmet = json.loads((args.digits / "metrics.json").read_text())
    sizes = dcfg["layer_sizes"]
    rbms = [BernoulliRBM(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
    epoch = {f"rbm{i}": _rbm_epoch(r, x, rbms[:i]) for i, r in enumerate(rbms)}
    joint = torch.cat([x, torch.nn.functional.one_hot(y, 10).float()], 1)
    top = LabelledRBM(sizes[-2], 10, sizes[-1])
    epoch["top_cd"] = _rbm_epoch(top, joint, rbms[:-1], features_from=sizes[0])
    top.discriminative_weight = dcfg["discriminative_weight"]
    epoch["top_hybrid"] = _rbm_epoch(top, joint, rbms[:-1], features_from=sizes[0])
    net = DBNClassifier.from_rbms(rbms, 10, dropout=dcfg["dropout"], input_dropout=dcfg["input_dropout"])
    epoch["finetune"] = _seconds(
        lambda: fine_tune(net, _cross_entropy, x, y, BackpropSchedule(epochs=1), progress=False)
    )
    history = dmet["history"]
    ran = {
        **{f"rbm{i}": len(h) for i, h in enumerate(history["pretrain"])},
        "top_cd": dcfg["top"]["epochs"],
        "top_hybrid": dcfg["top_hybrid"]["epochs"],
        "finetune": len(history["finetune"]),
    }
    digits_total = sum(epoch[k] * scale * ran[k] for k in ran)
    digits_total += epoch["finetune"] * scale * 1.2 * len(history["refit"])  # refit on 60,000 images

    icfg = json.loads((args.images / "config.json").read_text())["training"]
    imet = json.loads((args.images / "metrics.json").read_text())
    isizes = icfg["layer_sizes"]
    pairs = list(zip(isizes[:-1], isizes[1:], strict=True))
    irbms = [
        BernoulliRBM(a, b, hidden_units="gaussian" if i == len(pairs) - 1 else "binary")
        for i, (a, b) in enumerate(pairs)
    ]
    iepoch = {f"rbm{i}": _rbm_epoch(r, x, irbms[:i]) for i, r in enumerate(irbms)}
    ae = DeepAutoencoder.from_rbms(irbms)
    iepoch["finetune"] = _seconds(
        lambda: fine_tune(
            ae,
            lambda m, xb, _: m.loss(xb),
            x,
            None,
            BackpropSchedule(epochs=1, optimizer="adam"),
            progress=False,
        )
    )
    iran = {
        **{f"rbm{i}": len(h) for i, h in enumerate(imet["history"]["pretrain"])},
        "finetune": len(imet["history"]["finetune"]),
    }
    images_total = sum(iepoch[k] * scale * iran[k] for k in iran)

    note = {
        "method": f"one epoch of each stage timed on {SLICE} images on this CPU, scaled to the epochs run",
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg()[0],
    }
    for name, total, per_epoch, epochs in (
        ("digits", digits_total, epoch, ran),
        ("images", images_total, iepoch, iran),
    ):
        path = args.out / f"{name}.json"
        results = read_results(path)
        results["cpu_estimate"] = {
            **note,
            "train_seconds": total,
            "seconds_per_epoch_on_50000": {k: v * scale for k, v in per_epoch.items()},
            "epochs_run": epochs,
        }
        write_results(path, results)


def part_latency(args: argparse.Namespace) -> None:
    """`semhash serve` (the real app, one uvicorn process) over a models folder with text, digits, images."""
    data = load_mnist(args.data)
    if args.text is None:
        raise SystemExit("the latency part serves the real app, which needs a text bundle: pass --text DIR")
    bundles = {"text": args.text, "digits": args.digits, "images": args.images}
    body = json.dumps({"pixels": data.test_x[0].tolist()})
    with serving_bundles(bundles) as server:
        conn = server.connection()
        times = wall_times(lambda _: post(conn, "/v1/digits/recognize", body), n=500, warmup=50)
    path = args.out / "digits.json"
    results = read_results(path)
    results["latency_ms"] = {
        "median": 1000 * statistics.median(times),
        "p90": 1000 * statistics.quantiles(times, n=10)[-1],
        "requests": len(times),
        "setup": "semhash serve (1 uvicorn process, OPENBLAS_NUM_THREADS=1), loopback, 1 keep-alive client",
        "load_average": os.getloadavg()[0],
    }
    write_results(path, results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--digits", type=Path, default=Path("artifacts/digits"))
    parser.add_argument("--digits-baseline", type=Path, default=None)
    parser.add_argument("--images", type=Path, default=Path("artifacts/images"))
    parser.add_argument("--text", type=Path, default=None, help="a text bundle (the app needs one to serve)")
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--parts", default="results,cpu,latency")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    parts = {"results": part_results, "cpu": part_cpu, "latency": part_latency}
    for name in args.parts.split(","):
        parts[name](args)


if __name__ == "__main__":
    main()
