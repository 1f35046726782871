"""Headline benchmark of semantic hashing on 20 Newsgroups (bydate): several seeds, 16-128 bits.

For each seed: one greedy pretraining of the shared 2000-500-500 layers (the "full" profile), then a
code RBM + fine-tuned autoencoder per code size (16, 20, 32, 64, 128 bits; 20 is the address code),
each early-stopped on a validation part of the training split. Test documents query the training
documents (relevant = same newsgroup); baselines (TF-IDF, LSA, LSH) are computed once on the same
split. With --compare-noise the first seed's 32- and 128-bit encoders are also trained with fixed
per-document noise (the paper) instead of fresh noise.

    python benchmarks/text_20news.py all --seeds 0,1,2          # everything, one step after another

or, in parallel processes, `seed --seed K` (one per seed: text_20news_seed<K>.json), `baselines`
(text_20news_baselines.json), then `merge --seeds 0,1,2`: benchmarks/results/text_20news.json (means
over seeds, with per-seed values) and PNG plots. Timings are wall-clock on the machine it runs on.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from bundles.text_features import WordIndex, cap_lengths, count_matrix, fit_vocabulary, tfidf
from training.corpus import Corpus, load_corpus
from training.text_baselines import FullVocabulary, baseline_metrics, full_vocabulary
from training.text_eval import Split, code_metrics, make_split, shortlist_metrics, summarise
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


def load_split(
    corpus: str, profile: TextProfile
) -> tuple[Corpus, Corpus, Split, sp.csr_matrix, sp.csr_matrix, FullVocabulary]:
    """(train, test, split with vocabulary TF-IDF, train counts, test counts); the vocabulary is fitted on
    all training documents, as `prepare_data` does, so it is the same for every seed."""
    train, test = load_corpus(corpus, "train"), load_corpus(corpus, "test")
    vocabulary, idf = fit_vocabulary(train.texts, profile.vocab_size)
    index = WordIndex(vocabulary)
    database_counts, query_counts = count_matrix(train.texts, index), count_matrix(test.texts, index)
    full = full_vocabulary(train.texts, test.texts)
    split = make_split(train, test, tfidf(database_counts, idf), tfidf(query_counts, idf), full)
    return train, test, split, database_counts, query_counts, full


def run_seed(
    seed: int,
    profile: TextProfile,
    corpus: str,
    out: Path,
    first_seed: bool,
    compare_noise: bool,
    checkpoints: Path | None = None,
) -> dict[str, Any]:
    """Train every code size for one seed, evaluate it on the test split, plot the map of its 128-bit code."""
    train, test, split, database_counts, query_counts, full = load_split(corpus, profile)
    started = time.perf_counter()
    data: TextData = prepare_data(train, profile, seed)
    database = torch.from_numpy(cap_lengths(database_counts, profile.max_length).toarray())
    queries = torch.from_numpy(cap_lengths(query_counts, profile.max_length).toarray())
    checkpoint_dir = None if checkpoints is None else checkpoints / f"seed{seed}"
    resumed = checkpoint_dir is not None and any(
        checkpoint_dir.glob("*.pt")
    )  # then timings are not training's
    shared, key, _ = pretrain_shared(data, profile, checkpoint_dir=checkpoint_dir, seed=seed, progress=False)
    pretrain_seconds = time.perf_counter() - started
    codes, heads, seconds, acts = {}, {}, {}, {}
    for bits in (ADDRESS_BITS, *SIZES):
        t = time.perf_counter()
        model, report = train_code_encoder(
            shared,
            bits,
            data,
            profile,
            checkpoint_dir=checkpoint_dir,
            key=key,
            seed=seed,
            progress=False,
            name="bench",
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
        {
            "tfidf_vocab": (split.database_tfidf, split.query_tfidf),
            "tfidf_full": (full.database_tfidf, full.query_tfidf),
        },
    )
    noise_comparison = {}
    if first_seed and compare_noise:
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
    if first_seed:  # one map is enough
        plot_document_map(
            acts[128][1],
            split.map_labels,
            split.map_label_names,
            out / "text_20news_map.png",
            f"t-SNE of 128-bit code activations of test documents (seed {seed})",
        )
    result = {
        "seed": seed,
        "train_seconds": None if resumed else pretrain_seconds + seconds[ADDRESS_BITS] + seconds[128],
        "pretrain_seconds": pretrain_seconds,
        "head_seconds": {str(b): s for b, s in seconds.items()},
        "codes": {str(b): m for b, m in codes.items()},
        "address_shortlist": shortlist,
        "heads": heads,
        "noise_comparison": noise_comparison,
    }
    (out / f"text_20news_seed{seed}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def run_baselines(profile: TextProfile, corpus: str, out: Path, seed: int) -> dict[str, Any]:
    _, _, split, _, _, full = load_split(corpus, profile)
    baselines = baseline_metrics(
        split.relevance, (split.database_tfidf, split.query_tfidf), full, SIZES, seed=seed
    )
    (out / "text_20news_baselines.json").write_text(json.dumps(baselines, indent=2) + "\n")
    return baselines


def mean_of(values: list[Any]) -> Any:
    """Element-wise mean of nested dicts/lists of numbers."""
    if isinstance(values[0], dict):
        return {k: mean_of([v[k] for v in values]) for k in values[0]}
    if isinstance(values[0], list):
        return [mean_of(list(items)) for items in zip(*values, strict=True)]
    return float(np.mean(values))


def merge(seeds: list[int], out: Path, profile_name: str) -> dict[str, Any]:
    """Means over the seeds' result files plus the baselines: the headline results file and PR plot."""
    per_seed = [json.loads((out / f"text_20news_seed{seed}.json").read_text()) for seed in seeds]
    baselines = json.loads((out / "text_20news_baselines.json").read_text())
    codes = mean_of([r["codes"] for r in per_seed])
    shortlist = mean_of([r["address_shortlist"] for r in per_seed])
    sizes = [str(b) for b in (ADDRESS_BITS, *SIZES)]
    # Seeds that resumed from checkpoints did not time a whole training; none of them may have.
    timed = [r["train_seconds"] for r in per_seed if r["train_seconds"] is not None]
    results: dict[str, Any] = {
        **summarise({int(b): m for b, m in codes.items()}, baselines, shortlist),
        "train_seconds": float(np.mean(timed)) if timed else None,
        "seeds": len(per_seed),
        "seed_values": {
            "precision_at_100": {b: [r["codes"][b]["precision_at_100"] for r in per_seed] for b in sizes},
            "address_r3_tfidf_rerank": [
                r["address_shortlist"][3]["tfidf_vocab_rerank_precision_at_100"] for r in per_seed
            ],
            "train_seconds": [r["train_seconds"] for r in per_seed],
        },
        "noise_comparison_precision_at_100": next(
            (r["noise_comparison"] for r in per_seed if r["noise_comparison"]), {}
        ),
        "selected_epochs": {
            str(r["seed"]): {b: h["selected_epoch"] for b, h in r["heads"].items()} for r in per_seed
        },
        "address_shortlist": shortlist,
        "pr_curves": {f"semantic_hashing_{b}": m["pr_curve"] for b, m in codes.items()}
        | {name: baselines[name]["pr_curve"] for name in ("tfidf_vocab", "tfidf_full")}
        | {f"lsa_{b}": m["pr_curve"] for b, m in baselines["lsa"].items()}
        | {f"lsh_{b}": m["pr_curve"] for b, m in baselines["lsh"].items()},
        "profile": profile_name,
        "protocol": "database = train split, queries = test split, same label = relevant; Hamming ties "
        "averaged; codes: means over seeds; baselines: one run",
    }
    (out / "text_20news.json").write_text(json.dumps(results, indent=2) + "\n")
    curves = {f"semantic hashing {b} bits": codes[b]["pr_curve"] for b in ("32", "128")}
    curves |= {"TF-IDF (2000 words)": baselines["tfidf_vocab"]["pr_curve"]}
    curves |= {"TF-IDF (full vocabulary)": baselines["tfidf_full"]["pr_curve"]}
    curves |= {f"LSA {b}": baselines["lsa"][b]["pr_curve"] for b in ("32", "128")}
    curves |= {f"LSH {b}": baselines["lsh"][b]["pr_curve"] for b in ("32", "128")}
    plot_pr_curves(
        curves, out / "text_20news_pr.png", "20 Newsgroups: precision-recall (codes: mean over seeds)"
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("step", choices=["all", "seed", "baselines", "merge"])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (all, merge)")
    parser.add_argument("--seed", type=int, default=0, help="the seed (seed)")
    parser.add_argument("--profile", default="full")
    parser.add_argument(
        "--compare-noise", action="store_true", help="first seed: also train 32/128 bits with fixed noise"
    )
    parser.add_argument("--corpus", default="20news", help="'20news' or a folder with train/test.jsonl[.gz]")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--checkpoints", type=Path, help="reuse/save the shared pretrained layers under DIR/seed<K>"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(int(os.environ.get("SEMHASH_THREADS", torch.get_num_threads())))
    seeds = [int(s) for s in args.seeds.split(",")]
    profile = PROFILES[args.profile]
    args.out.mkdir(parents=True, exist_ok=True)
    if args.step == "seed":
        run_seed(
            args.seed,
            profile,
            args.corpus,
            args.out,
            first_seed=args.seed == 0,
            compare_noise=args.compare_noise,
            checkpoints=args.checkpoints,
        )
        return
    if args.step in ("all", "baselines"):
        run_baselines(profile, args.corpus, args.out, seed=seeds[0])
    if args.step == "all":
        for seed in seeds:
            run_seed(
                seed, profile, args.corpus, args.out, seed == seeds[0], args.compare_noise, args.checkpoints
            )
    if args.step in ("all", "merge"):
        results = merge(seeds, args.out, args.profile)
        keys = ("precision_at_100", "address_r3_fraction_touched", "bimodal_fraction", "dead_bits")
        print(json.dumps({k: results[k] for k in (*keys, "train_seconds", "seeds")}, indent=2))


if __name__ == "__main__":
    main()
