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

from training.mnist import load_mnist

log = logging.getLogger(__name__)

DataOpt = typer.Option(
    None, "--data", help="Folder with the MNIST IDX files (else $SEMHASH_MNIST_DIR, ../shared/data/mnist)."
)
DownloadOpt = typer.Option(
    False, "--download", help="If MNIST is not found locally, fetch it into ~/.cache/semhash/mnist."
)
ProfileOpt = typer.Option(
    "quick",
    "--profile",
    help="quick (about a minute), full (paper scale) or, for digits, full-plain (no dropout).",
)
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


def register_vision_commands(train_app: typer.Typer, evaluate_app: typer.Typer) -> None:
    """Attach the MNIST commands to `semhash train` and `semhash evaluate`."""

    @train_app.command("digits")
    def train_digits_command(
        out: Path = typer.Option(..., "--out", help="Bundle directory to write."),
        data: Path | None = DataOpt,
        profile: str = ProfileOpt,
        seed: int = SeedOpt,
        device: str = DeviceOpt,
        no_progress: bool = NoProgressOpt,
        download: bool = DownloadOpt,
        threads: int = ThreadsOpt,
    ) -> None:
        """Train the DBN digit recognisers (fine-tuned and generative) on MNIST."""
        from training.digits import PROFILES, train_digits

        _train_and_report(
            train_digits,
            PROFILES,
            "validation_error",
            out,
            data,
            profile,
            seed,
            device,
            no_progress,
            download,
            threads,
        )

    @train_app.command("images")
    def train_images_command(
        out: Path = typer.Option(..., "--out", help="Bundle directory to write."),
        data: Path | None = DataOpt,
        profile: str = ProfileOpt,
        seed: int = SeedOpt,
        device: str = DeviceOpt,
        no_progress: bool = NoProgressOpt,
        download: bool = DownloadOpt,
        threads: int = ThreadsOpt,
    ) -> None:
        """Train the 784-1000-500-250-30 image autoencoder on MNIST."""
        from training.images import PROFILES, train_images

        _train_and_report(
            train_images,
            PROFILES,
            "validation_mse",
            out,
            data,
            profile,
            seed,
            device,
            no_progress,
            download,
            threads,
        )

    @train_app.command("sparse")
    def train_sparse_command(
        out: Path = typer.Option(..., "--out", help="Bundle directory to write."),
        data: Path | None = DataOpt,
        profile: str = typer.Option(
            "quick",
            "--profile",
            help="quick (256 atoms, minutes), full (1024 atoms on whole images) or patches (256 atoms "
            "on 12x12 patches; not servable by the images routes).",
        ),
        seed: int = SeedOpt,
        device: str = DeviceOpt,
        no_progress: bool = NoProgressOpt,
        download: bool = DownloadOpt,
        threads: int = ThreadsOpt,
    ) -> None:
        """Train a PSD dictionary and encoder, then LISTA, on MNIST (the sparse image coder)."""
        from training.sparse import PROFILES
        from training.sparse_train import train_sparse

        _train_and_report(
            train_sparse,
            PROFILES,
            "validation",
            out,
            data,
            profile,
            seed,
            device,
            no_progress,
            download,
            threads,
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

    @evaluate_app.command("digits")
    def evaluate_digits_command(
        bundle: Path = typer.Option(..., "--bundle", help="Digits bundle directory."),
        data: Path | None = DataOpt,
        json_out: Path | None = JsonOpt,
        plots: Path | None = PlotsOpt,
        download: bool = DownloadOpt,
    ) -> None:
        """MNIST test error of both recognisers, confusion matrix, per-class errors, worst images."""
        from training.vision_eval import evaluate_digits

        _report(evaluate_digits(bundle, load_mnist(data, download=download), plots), json_out)

    @evaluate_app.command("images")
    def evaluate_images_command(
        bundle: Path = typer.Option(..., "--bundle", help="Images bundle directory."),
        data: Path | None = DataOpt,
        json_out: Path | None = JsonOpt,
        plots: Path | None = PlotsOpt,
        download: bool = DownloadOpt,
    ) -> None:
        """Reconstruction error (autoencoder vs 30-D PCA), binary-code precision@100, plots."""
        from training.vision_eval import evaluate_images

        _report(evaluate_images(bundle, load_mnist(data, download=download), plots), json_out)
