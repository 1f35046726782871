"""`semhash train text` and `semhash evaluate text`."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import typer
from tqdm.contrib.logging import logging_redirect_tqdm

from bundles.text import BundleError, TextBundle
from training.corpus import CorpusError, load_corpus, load_train_test, split_by_id

log = logging.getLogger(__name__)


def _progress(no_progress: bool) -> bool:
    return not no_progress and sys.stderr.isatty()


def _fail(err: Exception) -> typer.Exit:
    """Print a one-line error (not wrapped in a box, so paths and line numbers stay whole)."""
    typer.secho(f"Error: {err}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=2)


def _parse_bits(text: str) -> list[int]:
    try:
        bits = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as err:
        raise typer.BadParameter(f"--bits takes comma-separated integers, got {text!r}") from err
    if not bits or min(bits) < 1:
        raise typer.BadParameter(f"--bits needs positive sizes, got {text!r}")
    return bits


def register_text_commands(train_app: typer.Typer, evaluate_app: typer.Typer) -> None:
    """Attach the text commands to `semhash train` and `semhash evaluate`."""

    @train_app.command("text")
    def train_text_command(
        corpus: str = typer.Option(
            ..., "--corpus", help="'20news' (its train split), a .jsonl[.gz] file or a folder of .txt files."
        ),
        out: Path = typer.Option(..., "--out", help="Bundle directory to write (checkpoints go inside)."),
        address_bits: int = typer.Option(20, "--address-bits", help="Bits of the address code (1-32)."),
        long_bits: int = typer.Option(128, "--long-bits", help="Bits of the long code (multiple of 8)."),
        profile: str = typer.Option(
            "quick",
            "--profile",
            help="tiny (seconds, tests), quick (a few minutes) or full; epochs scale with the corpus.",
        ),
        noise: str | None = typer.Option(
            None, "--noise", help="Code noise: fixed or fresh (profile default)."
        ),
        seed: int = typer.Option(0, "--seed", help="Random seed."),
        name: str = typer.Option("text", "--name", help="Bundle name, the prefix of its bundle id."),
        threads: int | None = typer.Option(
            None,
            "--threads",
            min=1,
            help="Torch CPU threads (default: torch's, one per core). Use 1 on a busy machine.",
        ),
        max_minutes: float | None = typer.Option(
            None,
            "--max-minutes",
            min=0.1,
            help="Time budget: each phase stops early when its share is spent, keeping its best epoch.",
        ),
        test_fraction: float | None = typer.Option(
            None,
            "--test-fraction",
            help="Hold out this share of the documents (by id, as `evaluate text --test-fraction` does).",
        ),
        no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars."),
    ) -> None:
        """Pretrain an RBM stack on word counts, unroll it and fine-tune the address and long encoders."""
        import torch

        from training.text_train import PROFILES, train_text_bundle  # torch: only when training

        if profile not in PROFILES:
            raise typer.BadParameter(f"--profile must be one of {sorted(PROFILES)}, got {profile!r}")
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            documents = load_corpus(corpus, "train")
            if test_fraction is not None:
                documents = split_by_id(documents, test_fraction)[0]
            with logging_redirect_tqdm():
                bundle = train_text_bundle(
                    documents,
                    out,
                    profile=profile,
                    address_bits=address_bits,
                    long_bits=long_bits,
                    seed=seed,
                    noise=noise,
                    name=name,
                    progress=_progress(no_progress),
                    max_minutes=max_minutes,
                )
        except (CorpusError, ValueError) as err:
            raise _fail(err) from err
        summary = {
            "bundle": str(bundle.path),
            "bundle_id": bundle.bundle_id,
            "train_seconds": round(bundle.metrics["train_seconds"], 1),
            "selected_epochs": {code: bundle.metrics[code]["selected_epoch"] for code in ("address", "long")},
        }
        typer.echo(json.dumps(summary, indent=2))

    @train_app.command("text-query")
    def train_text_query_command(
        bundle: Path = typer.Option(..., "--bundle", help="Text bundle directory to add a query encoder to."),
        corpus: str = typer.Option(
            "20news", "--corpus", help="The bundle's training corpus ('20news', .jsonl[.gz] or a folder)."
        ),
        profile: str = typer.Option("quick", "--profile", help="tiny, quick or full."),
        seed: int = typer.Option(0, "--seed", help="Random seed."),
        threads: int | None = typer.Option(None, "--threads", min=1, help="Torch CPU threads."),
        max_minutes: float | None = typer.Option(
            None, "--max-minutes", min=0.1, help="Time budget: stop after the epoch that crosses it."
        ),
        test_fraction: float | None = typer.Option(
            None, "--test-fraction", help="Hold out this share of the documents by id, as training did."
        ),
        no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars."),
    ) -> None:
        """Distil a query encoder for short text from a bundle's document encoders and add it to the
        bundle (its document encoders, fingerprint and indexes stay as they are)."""
        import time

        import torch

        from training.query_train import QUERY_PROFILES, scaled_profile, train_query_encoder

        if profile not in QUERY_PROFILES:
            raise typer.BadParameter(f"--profile must be one of {sorted(QUERY_PROFILES)}, got {profile!r}")
        if threads is not None:
            torch.set_num_threads(threads)
        deadline = None if max_minutes is None else time.monotonic() + 60 * max_minutes
        try:
            loaded = TextBundle.load(bundle)
            documents = load_corpus(corpus, "train")
            if test_fraction is not None:
                documents = split_by_id(documents, test_fraction)[0]
            with logging_redirect_tqdm():
                trained = train_query_encoder(
                    loaded,
                    documents,
                    scaled_profile(QUERY_PROFILES[profile], len(documents)),
                    seed=seed,
                    checkpoint_dir=bundle / "checkpoints",
                    progress=_progress(no_progress),
                    deadline=deadline,
                )
        except (BundleError, CorpusError, ValueError) as err:
            raise _fail(err) from err
        metrics = trained.metrics["query_encoder"]
        summary = {
            "bundle": str(trained.path),
            "selected_epoch": metrics["selected_epoch"],
            "short_query_max_tokens": trained.short_query_max_tokens,
            "subject_long_p_at_10": {
                name: metrics[f"subject_{name}"]["long_p_at_10"]
                for name in ("query", "document")
                if f"subject_{name}" in metrics
            },
        }
        typer.echo(json.dumps(summary, indent=2))

    @evaluate_app.command("text")
    def evaluate_text_command(
        bundle: Path = typer.Option(..., "--bundle", help="Text bundle directory."),
        corpus: str = typer.Option(
            "20news",
            "--corpus",
            help="'20news', a folder with train.jsonl[.gz] and test.jsonl[.gz], or (with --test or "
            "--test-fraction) any corpus.",
        ),
        test: str | None = typer.Option(None, "--test", help="A separate corpus of query documents."),
        test_fraction: float | None = typer.Option(
            None, "--test-fraction", help="Split --corpus by id: this share are queries (as in training)."
        ),
        name: str | None = typer.Option(None, "--name", help="Corpus name for plot titles."),
        json_out: Path | None = typer.Option(None, "--json", help="Also write the results to this file."),
        plots: Path | None = typer.Option(None, "--plots", help="Folder for the PNG plots."),
        bits: str = typer.Option("16,32,64,128", "--bits", help="Sizes of the LSA and LSH baselines."),
        seed: int = typer.Option(0, "--seed", help="Seed of the LSH hyperplanes and the t-SNE map."),
    ) -> None:
        """Database = train split, queries = test split; relevant = a shared label (or, unlabelled, the
        query's TF-IDF neighbours); codes, address occupancy and baselines."""
        from training.text_eval import evaluate_text_bundle

        sizes = _parse_bits(bits)
        try:
            loaded = TextBundle.load(bundle)
            database, queries = load_train_test(corpus, test=test, test_fraction=test_fraction)
            results = evaluate_text_bundle(
                loaded,
                database,
                queries,
                baseline_bits=sizes,
                plots_dir=plots,
                seed=seed,
                corpus_name=name or ("20 Newsgroups" if corpus == "20news" else Path(corpus).name),
            )
        except (BundleError, CorpusError) as err:
            raise _fail(err) from err
        _report(results, json_out)


def _report(results: dict[str, Any], json_out: Path | None) -> None:
    """Headline numbers on stdout; everything (curves, shortlists) in the JSON file when asked."""
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(results, indent=2) + "\n")
    headline = {k: results[k] for k in ("bundle", "precision_at_100", "address_r3_fraction_touched")}
    headline["address_occupancy"] = results["occupancy"]["address"]
    headline |= {k: results[k] for k in ("bimodal_fraction", "dead_bits", "address_shortlist")}
    typer.echo(json.dumps(headline, indent=2))
