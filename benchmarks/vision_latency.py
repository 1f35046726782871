"""Latency of the vision models (issues #13-#15), in process and through the API; run it alone.

    /work/bin/exclusive .venv/bin/python benchmarks/vision_latency.py \
        [--convnet DIR] [--motor DIR] [--sparse DIR] [--requests 200]

Short (a couple of minutes) so that it can hold both CPU slots of a shared machine. Each number is the
median of sequential single-item calls, one thread (OMP/OPENBLAS_NUM_THREADS=1):

* in process: `ConvNetBundle.read` of one strip of MNIST test digits (the benchmark's strips, seed
  STRIP_SEED) -> digits_read.json `strip_ms_p50`; `MotorBundle.trace` of one test digit (local search
  included) -> motor.json `trace_ms_p50`; `SparseBundle.encode` of one test image per encoder ->
  sparse.json `encode_ms_p50.<encoder>`.
* through the API: `semhash serve` (one uvicorn process) over a models folder holding only the given
  bundles, on loopback, one keep-alive client, JSON pixels: `/v1/digits/read` of a strip,
  `/v1/digits/trace` of a digit, `/v1/images/encode?model=sparse` of a digit per encoder
  (`api_ms_p50` in each file). The sparse request sends a normalised digit with `preprocess=false`
  (the encode itself), and once more with the shared preprocessing (`lista_preprocessed`).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from results_json import merge_into  # benchmarks/, beside this script
from served import post, serving_bundles, wall_times

from bundles.digit_strips import make_strips
from training.convnet_eval import STRIP_SEED
from training.mnist import load_mnist

RESULTS = Path(__file__).parent / "results"


def p50_ms(call: Callable[[int], Any], n: int, warmup: int = 5) -> float:
    """Median wall time (ms) of call(i) for i in 0..n-1, after `warmup` untimed calls."""
    return 1000 * float(np.percentile(wall_times(call, n, warmup), 50))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--convnet", type=Path)
    parser.add_argument("--motor", type=Path)
    parser.add_argument("--sparse", type=Path)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--requests", type=int, default=200, help="Timed calls per measurement.")
    args = parser.parse_args()
    data = load_mnist(args.data)
    n = args.requests
    digits = data.test_x[: n + 10]
    strips = make_strips(data.test_x, data.test_y, n + 10, STRIP_SEED)
    setup = {
        "load_average_before": os.getloadavg()[0],
        "threads": "OMP_NUM_THREADS=OPENBLAS_NUM_THREADS=1",
        "command": "exclusive python benchmarks/vision_latency.py (other jobs paused)",
    }
    results: dict[str, dict[str, Any]] = {}
    if args.convnet is not None:
        from bundles.convnet import ConvNetBundle

        convnet = ConvNetBundle.load(args.convnet)
        results["digits_read.json"] = {
            "strip_ms_p50": p50_ms(lambda i: convnet.read(strips[i].image), n),
            "timing": f"in-process ConvNetBundle.read of one strip (numpy), p50 of {n} test strips",
        }
    if args.motor is not None:
        from bundles.motor import MotorBundle

        motor = MotorBundle.load(args.motor)
        results["motor.json"] = {
            "trace_ms_p50": p50_ms(lambda i: motor.trace(digits[i : i + 1]), n // 2),
            "trace_timing": f"in-process MotorBundle.trace of one digit (local search included), p50 of "
            f"{n // 2} test digits, 1 thread",
        }
    if args.sparse is not None:
        from bundles.sparse import SparseBundle

        sparse = SparseBundle.load(args.sparse)
        results["sparse.json"] = {
            "encode_ms_p50": {
                encoder: p50_ms(lambda i, e=encoder: sparse.encode(digits[i : i + 1], e), n)  # type: ignore[misc]
                for encoder in ("lista", "psd", "fista")
            },
            "encode_timing": f"in-process SparseBundle.encode of one test image, p50 of {n}; fista with the "
            f"bundle's default {sparse.fista_iterations} iterations",
        }
    given = {"convnet": args.convnet, "motor": args.motor, "sparse": args.sparse}
    bundles = {kind: path for kind, path in given.items() if path is not None}
    with serving_bundles(bundles) as server:
        conn = server.connection()
        pixels = [json.dumps({"pixels": d.reshape(28, 28).tolist()}) for d in digits]
        if args.convnet is not None:
            bodies = [json.dumps({"pixels": s.image.tolist()}) for s in strips]
            results["digits_read.json"]["api_ms_p50"] = {
                "read": p50_ms(lambda i: post(conn, "/v1/digits/read", bodies[i]), n)
            }
        if args.motor is not None:
            results["motor.json"]["api_ms_p50"] = {
                "trace": p50_ms(lambda i: post(conn, "/v1/digits/trace", pixels[i]), n // 2)
            }
        if args.sparse is not None:
            api = {
                encoder: p50_ms(
                    lambda i, e=encoder: post(  # type: ignore[misc]
                        conn, f"/v1/images/encode?model=sparse&encoder={e}&preprocess=false", pixels[i]
                    ),
                    n,
                )
                for encoder in ("lista", "psd", "fista")
            }
            api["lista_preprocessed"] = p50_ms(
                lambda i: post(conn, "/v1/images/encode?model=sparse", pixels[i]), n
            )
            results["sparse.json"]["api_ms_p50"] = api
    setup["load_average_after"] = os.getloadavg()[0]
    api_setup = "semhash serve (1 uvicorn process, 1 BLAS thread), loopback, 1 keep-alive client, JSON pixels"
    for name, update in results.items():
        merge_into(args.out / name, {**update, "latency_setup": {**setup, "api": api_setup}})
        print(name, json.dumps({k: v for k, v in update.items() if "ms" in k}))


if __name__ == "__main__":
    main()
