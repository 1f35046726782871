"""Headline benchmark of semantic hashing on 20 Newsgroups (bydate): several seeds, 16-128 bits.

For each seed: one greedy pretraining of the shared 2000-500-500 layers (the "full" profile), then a
code RBM + fine-tuned autoencoder per code size (16, 20, 32, 64, 128 bits; 20 is the address code),
each early-stopped on a validation part of the training split. Test documents query the training
documents (relevant = same newsgroup); baselines (TF-IDF, LSA, LSH) are computed once on the same
split. Noise comparison: for the first seed the 32- and 128-bit encoders are also trained with fixed
per-document noise (the paper) instead of fresh noise.

    .venv/bin/python benchmarks/text_20news.py --seeds 0,1,2

writes benchmarks/results/text_20news_seed<k>.json per seed (so an interrupted run keeps its seeds),
then benchmarks/results/text_20news.json (means over seeds, with per-seed values) and PNG plots.
Timings are wall-clock on the machine it runs on (2 shared CPU cores here).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.corpus import load_20news
from training.text_eval import (
    baseline_metrics,
    code_metrics,
    full_vocabulary_tfidf,
    make_split,
    shortlist_metrics,
    summarise,
)
from training.text_features import cap_lengths, count_matrix, tfidf
from training.text_plots import plot_document_map, plot_pr_curves
from training.text_train import (
    PROFILES,
    TextData,
    TextProfile,
    prepare_data,
    pretrain_shared,
    train_code_encoder,
)

RESULTS = Path(__file__).parent / "results"
ADDRESS_BITS = 20
SIZES = (16, 32, 64, 128)

log = logging.getLogger("text_20news")


def activations(model: torch.nn.Module, counts: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model.encode(counts).numpy()


def run_seed(seed: int, profile: TextProfile, baseline_split: dict[str, Any]) -> dict[str, Any]:
    """Train every code size for one seed and evaluate it on the test split."""
    started = time.perf_counter()
    data: TextData = prepare_data(baseline_split["train"], profile, seed)
    index = {w: i for i, w in enumerate(data.vocabulary)}
    database_counts = count_matrix(baseline_split["train"].texts, index)
    query_counts = count_matrix(baseline_split["test"].texts, index)
    split = make_split(
        baseline_split["train"],
        baseline_split["test"],
        tfidf(database_counts, data.idf),
        tfidf(query_counts, data.idf),
    )
    database = torch.from_numpy(cap_lengths(database_counts, profile.max_length).toarray())
    queries = torch.from_numpy(cap_lengths(query_counts, profile.max_length).toarray())
    shared, key, _ = pretrain_shared(data, profile, checkpoint_dir=None, seed=seed, progress=False)
    pretrain_seconds = time.perf_counter() - started
    codes, heads, seconds, acts = {}, {}, {}, {}
    for bits in (ADDRESS_BITS, *SIZES):
        t = time.perf_counter()
        model, report = train_code_encoder(
            shared, bits, data, profile, checkpoint_dir=None, key=key, seed=seed, progress=False, name="bench"
        )
        seconds[bits] = time.perf_counter() - t
        acts[bits] = (activations(model, database), activations(model, queries))
        codes[bits] = code_metrics(*acts[bits], split)
        heads[str(bits)] = {
            k: report[k] for k in ("selected_epoch", "validation_score", "pretrained_validation_score")
        }
        log.info("seed %d, %d bits: test precision@100 %.4f", seed, bits, codes[bits]["precision_at_100"])
    shortlist = shortlist_metrics(
        acts[ADDRESS_BITS][0] > 0.5,
        acts[ADDRESS_BITS][1] > 0.5,
        split,
        {"tfidf_vocab": (split.database_tfidf, split.query_tfidf), "tfidf_full": baseline_split["full"]},
    )
    noise_comparison = {}
    if seed == baseline_split["first_seed"]:
        for bits in (32, 128):
            fixed = replace(profile, noise="fixed")
            model, _ = train_code_encoder(
                shared,
                bits,
                data,
                fixed,
                checkpoint_dir=None,
                key=key,
                seed=seed,
                progress=False,
                name="fixed",
            )
            metrics = code_metrics(activations(model, database), activations(model, queries), split)
            noise_comparison[str(bits)] = {
                "fresh": codes[bits]["precision_at_100"],
                "fixed": metrics["precision_at_100"],
            }
    return {
        "seed": seed,
        "train_seconds": pretrain_seconds + seconds[ADDRESS_BITS] + seconds[128],
        "pretrain_seconds": pretrain_seconds,
        "head_seconds": {str(b): s for b, s in seconds.items()},
        "codes": {str(b): m for b, m in codes.items()},
        "address_shortlist": shortlist,
        "heads": heads,
        "noise_comparison": noise_comparison,
        "split": split,
        "long_query_activations": acts[128][1],
    }


def mean_of(values: list[Any]) -> Any:
    """Element-wise mean of nested dicts/lists of numbers."""
    if isinstance(values[0], dict):
        return {k: mean_of([v[k] for v in values]) for k in values[0]}
    if isinstance(values[0], list):
        return [mean_of(list(items)) for items in zip(*values, strict=True)]
    return float(np.mean(values))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--profile", default="full")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    seeds = [int(s) for s in args.seeds.split(",")]
    profile = PROFILES[args.profile]
    args.out.mkdir(parents=True, exist_ok=True)
    train, test = load_20news("train"), load_20news("test")
    full = full_vocabulary_tfidf(train, test)
    context = {"train": train, "test": test, "full": full, "first_seed": seeds[0]}
    per_seed, split = [], None
    for seed in seeds:
        result = run_seed(seed, profile, context)
        split, long_acts = result.pop("split"), result.pop("long_query_activations")
        if seed == seeds[0]:
            first_long = long_acts
        (args.out / f"text_20news_seed{seed}.json").write_text(json.dumps(result, indent=2) + "\n")
        per_seed.append(result)
    assert split is not None
    baselines = baseline_metrics(split, full, SIZES, seed=seeds[0])
    codes = mean_of([r["codes"] for r in per_seed])
    shortlist = mean_of([r["address_shortlist"] for r in per_seed])
    results: dict[str, Any] = {
        **summarise({int(b): m for b, m in codes.items()}, baselines, shortlist),
        "train_seconds": float(np.mean([r["train_seconds"] for r in per_seed])),
        "seeds": len(per_seed),
        "seed_values": {
            "precision_at_100": {
                str(b): [r["codes"][str(b)]["precision_at_100"] for r in per_seed]
                for b in (ADDRESS_BITS, *SIZES)
            },
            "address_r3_tfidf_rerank": [
                r["address_shortlist"][3]["tfidf_vocab_rerank_precision_at_100"] for r in per_seed
            ],
            "train_seconds": [r["train_seconds"] for r in per_seed],
        },
        "noise_comparison_precision_at_100": per_seed[0]["noise_comparison"],
        "selected_epochs": {
            str(r["seed"]): {b: h["selected_epoch"] for b, h in r["heads"].items()} for r in per_seed
        },
        "address_shortlist": shortlist,
        "pr_curves": {f"semantic_hashing_{b}": m["pr_curve"] for b, m in codes.items()}
        | {name: baselines[name]["pr_curve"] for name in ("tfidf_vocab", "tfidf_full")}
        | {f"lsa_{b}": m["pr_curve"] for b, m in baselines["lsa"].items()}
        | {f"lsh_{b}": m["pr_curve"] for b, m in baselines["lsh"].items()},
        "profile": args.profile,
        "protocol": "database = train split (11,314), queries = test split (7,532), same label = relevant; "
        "Hamming ties averaged; codes are means over seeds, baselines from one run",
    }
    (args.out / "text_20news.json").write_text(json.dumps(results, indent=2) + "\n")
    curves = {f"semantic hashing {b} bits": codes[str(b)]["pr_curve"] for b in (32, 128)}
    curves |= {"TF-IDF (2000 words)": baselines["tfidf_vocab"]["pr_curve"]}
    curves |= {"TF-IDF (full vocabulary)": baselines["tfidf_full"]["pr_curve"]}
    curves |= {f"LSA {b}": baselines["lsa"][str(b)]["pr_curve"] for b in (32, 128)}
    curves |= {f"LSH {b}": baselines["lsh"][str(b)]["pr_curve"] for b in (32, 128)}
    plot_pr_curves(
        curves, args.out / "text_20news_pr.png", "20 Newsgroups: precision-recall (mean over seeds)"
    )
    plot_document_map(
        first_long,
        split.query_labels,
        split.label_names,
        args.out / "text_20news_map.png",
        "t-SNE of 128-bit code activations, 20 Newsgroups test documents",
    )
    print(
        json.dumps(
            {
                k: results[k]
                for k in (
                    "precision_at_100",
                    "address_r3_fraction_touched",
                    "bimodal_fraction",
                    "dead_bits",
                    "train_seconds",
                    "seeds",
                )
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
