"""Hyperparameter sweep for the text recipe: validation numbers only (never the test split).

    python benchmarks/text_sweep.py OUT.jsonl '{"balance_weight": 1.0}' --bits 20,128 \
        [--corpus 20news] [--profile full] [--stack DIR] [--seed 0]

Each override is applied to the profile (CDSchedule / BackpropSchedule fields as dicts). `--stack DIR`
loads the shared layers from DIR/shared<l>.pt (e.g. a bundle's checkpoints, whatever their key) instead
of pretraining them, so fine-tuning choices can be swept on one pretrained stack. Per code size it
appends a JSON line: validation precision@K (or reconstruction loss) before and after fine-tuning,
per epoch, and the radius-3 ball of the chosen code around validation documents.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from training.corpus import load_corpus
from training.occupancy import query_ball_fraction
from training.text_train import (
    PROFILES,
    TextProfile,
    prepare_data,
    pretrain_shared,
    shared_layers,
    train_code_encoder,
)


def build(base: TextProfile, overrides: dict[str, Any]) -> TextProfile:
    profile = base
    for key, value in overrides.items():
        if key in ("bottom", "upper", "finetune"):
            value = replace(getattr(profile, key), **value)
        elif key == "hidden":
            value = tuple(value)
        profile = replace(profile, **{key: value})
    return profile


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path)
    parser.add_argument("overrides", help="JSON object of profile overrides")
    parser.add_argument("--bits", default="32")
    parser.add_argument("--corpus", default="20news")
    parser.add_argument("--profile", default="full")
    parser.add_argument("--stack", type=Path, help="folder with shared<l>.pt checkpoints to start from")
    parser.add_argument("--checkpoints", type=Path, help="cache the code RBMs here (keyed by the stack)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    overrides = json.loads(args.overrides)
    profile = build(PROFILES[args.profile], overrides)
    started = time.perf_counter()
    data = prepare_data(load_corpus(args.corpus, "train"), profile, args.seed)
    profile = profile.scaled(data.fit.shape[0])  # as train_text_bundle does
    if args.stack is not None:
        shared = shared_layers(data, profile)
        for layer, rbm in enumerate(shared):
            rbm.load_state_dict(torch.load(args.stack / f"shared{layer}.pt", weights_only=True)["state"])
        key = f"stack:{args.stack.resolve()}:{json.dumps(asdict(profile.upper), sort_keys=True)}"
    else:
        shared, key, _ = pretrain_shared(data, profile, checkpoint_dir=None, seed=args.seed, progress=False)
    pretrain_seconds = time.perf_counter() - started
    for bits in (int(b) for b in args.bits.split(",")):
        t = time.perf_counter()
        model, report = train_code_encoder(
            shared,
            bits,
            data,
            profile,
            checkpoint_dir=args.checkpoints,
            key=key,
            seed=args.seed,
            progress=False,
            name="sweep",
        )
        validation, fit = model.codes(data.validation).numpy(), model.codes(data.fit).numpy()
        record = {
            "corpus": args.corpus,
            "overrides": overrides,
            "bits": bits,
            "seed": args.seed,
            "pretrained": report["pretrained_validation_score"],
            "epochs": [r["validation"] for r in report["fine_tune"]],
            "selected_epoch": report["selected_epoch"],
            "best": report["validation_score"],
            "median_thresholds": report["median_thresholds"],
            "thresholded": report["thresholded_validation_score"],
            "r3_touched": query_ball_fraction(validation, fit, 3) if bits <= 32 else None,
            "bit_balance_min": float(min(fit.mean(0).min(), 1 - fit.mean(0).max())),
            "pretrain_seconds": pretrain_seconds,
            "head_seconds": time.perf_counter() - t,
        }
        with open(args.out, "a") as f:
            f.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)  # noqa: T201


if __name__ == "__main__":
    main()
