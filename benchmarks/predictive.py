"""Predictive network benchmark (issue 16) -> benchmarks/results/predictive.json.

    python benchmarks/predictive.py --bundle DIR --autoencoder DIR --text DIR [--data D] [--parts P]

* results: `semhash evaluate predictive` (training/predict_eval.py) on 1,000 Moving MNIST test sequences
  (MNIST test digits only): next-frame MSE and SSIM 1..5 steps ahead from 10 context frames, against
  copying the last frame and linear extrapolation; linear probes of the digits' positions and identities
  from the LSTM state, the frame autoencoder's code (same size) and raw pixels; plus the rows plot
  (`predictive_rows.png`) and the bundles' training metrics.
* latency: `semhash serve` (the whole app, one uvicorn process, one BLAS thread) on loopback with the
  text and predictive bundles; POST /v1/frames/predict with 10 JSON frames of 64x64, k = 1, one
  keep-alive client; `predict_ms_p50` is the median.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path
from typing import Any

import torch
from results_json import read_results, write_results
from served import post, serving_bundles, wall_times  # benchmarks/, beside this script

from training.mnist import load_mnist
from training.moving_mnist import MovingMnistSpec, sequence_set
from training.predict_eval import evaluate_predictive, net_spec

RESULTS = Path(__file__).parent / "results"


def part_results(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    results = evaluate_predictive(
        args.bundle, load_mnist(args.data), autoencoder=args.autoencoder, n_test=args.n_test, plots=args.out
    )
    for name, path in (("predictive", args.bundle), ("autoencoder", args.autoencoder)):
        metrics = json.loads((path / "metrics.json").read_text())
        config = json.loads((path / "config.json").read_text())
        results[f"training.{name}"] = {
            "validation_mse": metrics["validation_mse"],
            "steps": metrics["steps"],
            "train_seconds": metrics["train_seconds"],
            "architecture": config["architecture"],
            "batch_size": config["batch_size"],
            "window": config["window"],
        }
    return results


def part_latency(args: argparse.Namespace) -> dict[str, Any]:
    data = load_mnist(args.data)
    frames = sequence_set(data, "test", 1, MovingMnistSpec(**net_spec(args.bundle)), 0).frames[0, :10]
    body = json.dumps({"frames": frames.round(4).tolist(), "k": 1})
    with serving_bundles({"text": args.text, "predictive": args.bundle}) as server:
        conn = server.connection()
        times = wall_times(lambda _: post(conn, "/v1/frames/predict", body), n=args.requests, warmup=20)
    return {
        "predict_ms_p50": 1000 * statistics.median(times),
        "predict_latency": {
            "p90_ms": 1000 * statistics.quantiles(times, n=10)[-1],
            "requests": len(times),
            "setup": "semhash serve (1 uvicorn process, OPENBLAS_NUM_THREADS=1), loopback, 1 keep-alive "
            "client, 10 JSON frames of 64x64, k = 1",
            "load_average": os.getloadavg()[0],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=Path, required=True, help="The predictive bundle.")
    parser.add_argument("--autoencoder", type=Path, required=True, help="The frame autoencoder bundle.")
    parser.add_argument(
        "--text", type=Path, help="A text bundle (the server needs one) for the latency part."
    )
    parser.add_argument("--data", type=Path, default=None, help="MNIST folder.")
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--parts", default="results,latency")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    path = args.out / "predictive.json"
    results = read_results(path)
    parts = args.parts.split(",")
    if "results" in parts:
        results.update(part_results(args))
    if "latency" in parts:
        if args.text is None:
            raise SystemExit(
                "the latency part serves the real app, which needs a text bundle: pass --text DIR"
            )
        results.update(part_latency(args))
    write_results(path, results, sort_keys=True)
    print(json.dumps({k: v for k, v in results.items() if not isinstance(v, dict)}, indent=2))


if __name__ == "__main__":
    main()
