"""`semhash train digits|images` and `semhash evaluate digits|images`."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import typer
from tqdm.contrib.logging import logging_redirect_tqdm

from training.mnist import MnistSplits, load_mnist

log = logging.getLogger(__name__)

DataOpt = typer.Option(
    None, "--data", help="Folder with the MNIST IDX files (else $SEMHASH_MNIST_DIR, ../shared/data/mnist)."
)
DownloadOpt = typer.Option(
    False, "--download", help="If MNIST is not found locally, fetch it into ~/.cache/semhash/mnist."
)
MNIST_PROFILE_HELP = "quick (about a minute), full (paper scale) or, for digits, full-plain (no dropout)."
SeedOpt = typer.Option(0, "--seed", help="Random seed.")
DeviceOpt = typer.Option("auto", "--device", help="auto, cpu or cuda.")
NoProgressOpt = typer.Option(False, "--no-progress", help="No progress bars.")
ThreadsOpt = typer.Option(
    0,
    "--threads",
    help="CPU threads for torch (0: its default). On a busy shared machine 1 can be several times faster.",
)
JsonOpt = typer.Option(None, "--json", help="Also write the results to this JSON file.")
PlotsOpt = typer.Option(None, "--plots", help="Folder for the PNG plots.")


def _set_threads(threads: int) -> None:
    if threads > 0:
        import torch  # imported here so that `semhash --help` and the service commands stay light

        torch.set_num_threads(threads)


def _progress(no_progress: bool) -> bool:
    return not no_progress and sys.stderr.isatty()


def _report(results: dict[str, Any], json_out: Path | None) -> None:
    text = json.dumps(results, indent=2)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(text + "\n")
    typer.echo(text)


def _profile(profiles: dict[str, Any], name: str) -> Any:
    if name not in profiles:
        raise typer.BadParameter(f"profile must be one of {sorted(profiles)}, got {name!r}")
    return profiles[name]


def _train_and_report(
    train: Callable[..., dict[str, Any]],
    profiles: dict[str, Any],
    validation_key: str,
    out: Path,
    data: Path | None,
    profile: str,
    seed: int,
    device: str,
    no_progress: bool,
    download: bool,
    threads: int,
) -> None:
    """Train one MNIST model with a named profile and print where it went and how it validated."""
    _set_threads(threads)
    config = replace(_profile(profiles, profile), seed=seed, device=device)
    with logging_redirect_tqdm():
        metrics = train(config, load_mnist(data, download=download), out, progress=_progress(no_progress))
    summary = {
        "bundle": str(out),
        validation_key: metrics[validation_key],
        "train_seconds": metrics["train_seconds"],
    }
    typer.echo(json.dumps(summary, indent=2))


Trainer = Callable[..., dict[str, Any]]  # train(config, data, out, progress=...) -> metrics
Evaluator = Callable[[Path, MnistSplits, Path | None], dict[str, Any]]  # (bundle, data, plots) -> results


def add_train_command(
    train_app: typer.Typer,
    name: str,
    trainer: Callable[[], tuple[Trainer, dict[str, Any]]],
    validation_key: str,
    doc: str,
    *,
    out_help: str = "Bundle directory to write.",
    profile_help: str = "quick (minutes) or full.",
) -> None:
    """Register `semhash train NAME` with the options every MNIST model's training takes (--out, --data,
    --profile, --seed, --device, --no-progress, --download, --threads): it trains with the named profile
    and prints where the bundle went and how it validated. `trainer()` imports the training code (only
    when the command runs) and returns the train function and its profiles; `doc` is the command's help."""

    def command(
        out: Path = typer.Option(..., "--out", help=out_help),
        data: Path | None = DataOpt,
        profile: str = typer.Option("quick", "--profile", help=profile_help),
        seed: int = SeedOpt,
        device: str = DeviceOpt,
        no_progress: bool = NoProgressOpt,
        download: bool = DownloadOpt,
        threads: int = ThreadsOpt,
    ) -> None:
        train, profiles = trainer()
        _train_and_report(
            train, profiles, validation_key, out, data, profile, seed, device, no_progress, download, threads
        )

    command.__doc__ = doc
    train_app.command(name)(command)


def add_evaluate_command(
    evaluate_app: typer.Typer, name: str, evaluator: Callable[[], Evaluator], bundle_help: str, doc: str
) -> None:
    """Register `semhash evaluate NAME` with --bundle, --data, --json, --plots and --download: it prints
    (and writes to --json) what `evaluator()(bundle, MNIST, plots)` returns."""

    def command(
        bundle: Path = typer.Option(..., "--bundle", help=bundle_help),
        data: Path | None = DataOpt,
        json_out: Path | None = JsonOpt,
        plots: Path | None = PlotsOpt,
        download: bool = DownloadOpt,
    ) -> None:
        _report(evaluator()(bundle, load_mnist(data, download=download), plots), json_out)

    command.__doc__ = doc
    evaluate_app.command(name)(command)


def _digits_trainer() -> tuple[Trainer, dict[str, Any]]:
    from training.digits import PROFILES, train_digits

    return train_digits, PROFILES


def _images_trainer() -> tuple[Trainer, dict[str, Any]]:
    from training.images import PROFILES, train_images

    return train_images, PROFILES


def _sparse_trainer() -> tuple[Trainer, dict[str, Any]]:
    from training.sparse import PROFILES
    from training.sparse_train import train_sparse

    return train_sparse, PROFILES


def _digits_evaluator() -> Evaluator:
    from training.vision_eval import evaluate_digits

    return evaluate_digits


def _images_evaluator() -> Evaluator:
    from training.vision_eval import evaluate_images

    return evaluate_images


def register_vision_commands(train_app: typer.Typer, evaluate_app: typer.Typer) -> None:
    """Attach the MNIST commands to `semhash train` and `semhash evaluate`."""
    add_train_command(
        train_app,
        "digits",
        _digits_trainer,
        "validation_error",
        "Train the DBN digit recognisers (fine-tuned and generative) on MNIST.",
        profile_help=MNIST_PROFILE_HELP,
    )
    add_train_command(
        train_app,
        "images",
        _images_trainer,
        "validation_mse",
        "Train the 784-1000-500-250-30 image autoencoder on MNIST.",
        profile_help=MNIST_PROFILE_HELP,
    )
    add_train_command(
        train_app,
        "sparse",
        _sparse_trainer,
        "validation",
        "Train a PSD dictionary and encoder, then LISTA, on MNIST (the sparse image coder).",
        profile_help="quick (256 atoms, minutes), full (1024 atoms on whole images) or patches (256 atoms "
        "on 12x12 patches; not servable by the images routes).",
    )

    @evaluate_app.command("sparse")
    def evaluate_sparse_command(
        bundle: Path = typer.Option(..., "--bundle", help="Sparse bundle directory (whole images)."),
        autoencoder: Path | None = typer.Option(
            None, "--autoencoder", help="An images bundle to compare with (linear classifier, retrieval)."
        ),
        data: Path | None = DataOpt,
        json_out: Path | None = JsonOpt,
        plots: Path | None = PlotsOpt,
        download: bool = DownloadOpt,
        curve_images: int = typer.Option(
            2000, "--curve-images", help="Test images for the iteration curves."
        ),
        curve_iterations: int = typer.Option(300, "--curve-iterations", help="FISTA iterations plotted."),
        optimal_iterations: int = typer.Option(
            1000, "--optimal-iterations", help="FISTA iterations that define the optimal codes."
        ),
        pixels: bool = typer.Option(
            True, "--pixels/--no-pixels", help="Fit the raw-pixel baseline (slow; independent of the bundle)."
        ),
    ) -> None:
        """FISTA vs LISTA by iterations, linear classifier on codes vs pixels, retrieval, plots."""
        from training.sparse_eval import evaluate_sparse

        results = evaluate_sparse(
            bundle,
            load_mnist(data, download=download),
            plots,
            autoencoder=autoencoder,
            curve_images=curve_images,
            curve_iterations=curve_iterations,
            optimal_iterations=optimal_iterations,
            pixels=pixels,
        )
        _report(results, json_out)

    add_evaluate_command(
        evaluate_app,
        "digits",
        _digits_evaluator,
        "Digits bundle directory.",
        "MNIST test error of both recognisers, confusion matrix, per-class errors, worst images.",
    )
    add_evaluate_command(
        evaluate_app,
        "images",
        _images_evaluator,
        "Images bundle directory.",
        "Reconstruction error (autoencoder vs 30-D PCA), binary-code precision@100, plots.",
    )
