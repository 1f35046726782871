"""Does the text recipe hold beyond 20 Newsgroups? Train and evaluate on several labelled corpora.

For each corpus and profile (`full`, `quick`): `semhash train text`'s training (seed 0, timed), then
`semhash evaluate text`'s evaluation (database = train split, queries = test split): P@100 of the
128-bit codes, of the 20-bit addresses, of the radius-3 address shortlist reranked by TF-IDF (with the
share of the database it touches), address occupancy, and the baselines TF-IDF, BM25 and LSA-128 in
the same run (computed once per corpus, shared by both profiles).

Corpora: `20news` (the shared copy) and `debian` (built by benchmarks/corpora/debian_packages.py into
data/debian; any folder with train/test.jsonl[.gz] can be added as NAME=PATH).

    python benchmarks/text_generalisation.py run --corpus debian=data/debian --profile full
    python benchmarks/text_generalisation.py merge --corpora 20news,debian

`run` writes benchmarks/results/text_generalisation/<corpus>_<profile>.json (resumable: bundles and
their checkpoints live under data/text_generalisation/); `merge` writes
benchmarks/results/text_generalisation.json with the keys issue 19 names:
`corpora`, and per corpus N: `N.precision_at_100.{semantic_hashing_128, address_20, address_r3_rerank,
tfidf, bm25, lsa_128}`, `N.address_r3_fraction_touched`, `N.train_seconds` (the `full` profile), and
the same under `N.quick`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from training.corpus import load_corpus
from training.text_eval import evaluate_text_bundle
from training.text_train import train_text_bundle

RESULTS = Path(__file__).parent / "results"
PARTS = RESULTS / "text_generalisation"
BUNDLES = Path("data/text_generalisation")
SOURCES = {"20news": "20news", "debian": "data/debian"}

log = logging.getLogger("text_generalisation")


def parse_corpus(text: str) -> tuple[str, str]:
    name, _, path = text.partition("=")
    return name, path or SOURCES.get(name, name)


def baselines_for(name: str) -> dict[str, Any] | None:
    """Baselines already computed for `name` by an earlier run (either profile), to reuse."""
    for part in sorted(PARTS.glob(f"{name}_*.json")):
        return json.loads(part.read_text())["evaluation"]["baselines"]
    return None


def run(name: str, source: str, profile: str, seed: int, max_minutes: float | None) -> dict[str, Any]:
    train, test = load_corpus(source, "train"), load_corpus(source, "test")
    out = BUNDLES / f"{name}_{profile}"
    resumed = (out / "checkpoints").is_dir() and any((out / "checkpoints").glob("*.pt"))
    started = time.perf_counter()
    bundle = train_text_bundle(train, out, profile=profile, seed=seed, name=name, max_minutes=max_minutes)
    seconds = time.perf_counter() - started
    evaluation = evaluate_text_bundle(
        bundle,
        train,
        test,
        baseline_bits=(128,),
        plots_dir=PARTS / f"{name}_{profile}_plots",
        seed=seed,
        corpus_name=name,
        baselines=baselines_for(name),
    )
    result = {
        "corpus": name,
        "source": source,
        "profile": profile,
        "seed": seed,
        # wall-clock of this training; when it resumed layers from checkpoints, the seconds of every
        # epoch behind the bundle (recorded in the checkpoints) instead
        "train_seconds": bundle.metrics["compute_seconds"] if resumed else seconds,
        "resumed": resumed,
        "compute_seconds": bundle.metrics["compute_seconds"],
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "selected_epochs": {code: bundle.metrics[code]["selected_epoch"] for code in ("address", "long")},
        "training": bundle.config["training"],
        "evaluation": evaluation,
    }
    PARTS.mkdir(parents=True, exist_ok=True)
    (PARTS / f"{name}_{profile}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def headline(part: dict[str, Any]) -> dict[str, Any]:
    evaluation = part["evaluation"]
    precision = evaluation["precision_at_100"]
    occupancy = evaluation["occupancy"]["address"]
    return {
        "precision_at_100": {
            "semantic_hashing_128": precision["semantic_hashing"]["128"],
            "address_20": precision["semantic_hashing"]["20"],
            "address_r3_rerank": precision["address_r3_tfidf_rerank"],
            "address_r3_capped_rerank": precision["address_r3_capped_tfidf_rerank"],
            "tfidf": precision["tfidf_full"],
            "tfidf_vocab": precision["tfidf_vocab"],
            "bm25": precision["bm25"],
            "lsa_128": precision["lsa_best"]["128"],
            "lsa_128_vocab": precision["lsa"]["128"],
            "lsa_128_full": precision["lsa_full"]["128"],
        },
        "address_r3_fraction_touched": evaluation["address_r3_fraction_touched"],
        "address_occupancy": occupancy,
        "long_occupancy": evaluation["occupancy"]["long"],
        "bimodal_fraction": evaluation["bimodal_fraction"],
        "dead_bits": evaluation["dead_bits"],
        "train_seconds": part["train_seconds"],
        "load_average": part["load_average"],
        "torch_threads": part["torch_threads"],
        "profile": part["profile"],
        "selected_epochs": part["selected_epochs"],
        "database_size": evaluation["protocol"]["database_size"],
        "queries_size": evaluation["protocol"]["queries_size"],
    }


def targets(full: dict[str, Any], quick: dict[str, Any] | None) -> dict[str, Any]:
    p = full["precision_at_100"]
    met = {
        "codes_beat_bm25_and_lsa": p["semantic_hashing_128"] >= max(p["bm25"], p["lsa_128"]),
        "r3_touches_under_2pct": full["address_r3_fraction_touched"] < 0.02,
        "r3_rerank_beats_tfidf": p["address_r3_rerank"] > p["tfidf"],
    }
    if quick is not None:
        gap = p["semantic_hashing_128"] - quick["precision_at_100"]["semantic_hashing_128"]
        met["quick_within_0.03"] = gap <= 0.03
        met["quick_gap"] = gap
        met["quick_r3_touches_under_2pct"] = quick["address_r3_fraction_touched"] < 0.02
    return met


def merge(corpora: list[str]) -> dict[str, Any]:
    results: dict[str, Any] = {"corpora": corpora}
    for name in corpora:
        parts = {p: PARTS / f"{name}_{p}.json" for p in ("full", "quick")}
        loaded = {p: headline(json.loads(f.read_text())) for p, f in parts.items() if f.is_file()}
        entry = dict(loaded.get("full") or loaded["quick"])
        entry["quick"] = loaded.get("quick")
        entry["targets"] = targets(entry, loaded.get("quick"))
        results[name] = entry
    results["protocol"] = (
        "database = train split, queries = test split, relevant = same label; one seed (0); codes from "
        "`semhash train text` bundles; baselines in the same run over the same documents"
    )
    (RESULTS / "text_generalisation.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("step", choices=["run", "merge"])
    parser.add_argument("--corpus", default="20news", help="NAME or NAME=PATH (run)")
    parser.add_argument("--corpora", default="20news,debian", help="names to merge")
    parser.add_argument("--profile", default="full")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-minutes", type=float)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    if args.step == "run":
        name, source = parse_corpus(args.corpus)
        result = headline(run(name, source, args.profile, args.seed, args.max_minutes))
    else:
        result = merge(args.corpora.split(","))
    print(json.dumps(result, indent=2))  # noqa: T201


if __name__ == "__main__":
    main()
