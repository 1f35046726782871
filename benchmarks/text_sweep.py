"""Hyperparameter sweep for the text recipe: validation precision@100 (never the test split).

Usage: python benchmarks/text_sweep.py OUT.jsonl 'JSON list of overrides' [--bits 32,128]
Each override dict is applied to the "full" profile (CDSchedule / BackpropSchedule fields as dicts).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import replace

import torch

from training.corpus import load_20news
from training.text_train import PROFILES, TextProfile, prepare_data, pretrain_shared, train_code_encoder


def build(overrides: dict) -> TextProfile:
    profile = PROFILES["full"]
    for key, value in overrides.items():
        if key in ("bottom", "upper"):
            value = replace(getattr(profile, key), **value)
        elif key == "finetune":
            value = replace(profile.finetune, **value)
        elif key == "hidden":
            value = tuple(value)
        profile = replace(profile, **{key: value})
    return profile


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    out, overrides = sys.argv[1], json.loads(sys.argv[2])
    bits_list = [int(b) for b in sys.argv[3].split(",")] if len(sys.argv) > 3 else [32]
    seed = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    torch.set_num_threads(2)
    profile = build(overrides)
    started = time.perf_counter()
    data = prepare_data(load_20news("train"), profile, seed)
    shared, key, _ = pretrain_shared(data, profile, checkpoint_dir=None, seed=seed, progress=False)
    pretrain_seconds = time.perf_counter() - started
    for bits in bits_list:
        t = time.perf_counter()
        _, report = train_code_encoder(
            shared, bits, data, profile, checkpoint_dir=None, key=key, seed=seed, progress=False, name="sweep"
        )
        record = {
            "overrides": overrides,
            "bits": bits,
            "seed": seed,
            "pretrained": -report["pretrained_validation_score"],
            "epochs": [-r["validation"] for r in report["fine_tune"]],
            "selected_epoch": report["selected_epoch"],
            "best": -report["validation_score"],
            "pretrain_seconds": pretrain_seconds,
            "head_seconds": time.perf_counter() - t,
        }
        with open(out, "a") as f:
            f.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
