"""`semhash train convnet` and `semhash evaluate convnet`."""

from __future__ import annotations

from pathlib import Path

import typer

from training.mnist import load_mnist
from training.vision_cli import (
    DataOpt,
    DeviceOpt,
    DownloadOpt,
    JsonOpt,
    NoProgressOpt,
    SeedOpt,
    ThreadsOpt,
    _report,
    _set_threads,
    _train_and_report,
)


def register_convnet_commands(train_app: typer.Typer, evaluate_app: typer.Typer) -> None:
    """Attach the scanning-convnet commands to `semhash train` and `semhash evaluate`."""

    @train_app.command("convnet")
    def train_convnet_command(
        out: Path = typer.Option(..., "--out", help="Bundle directory to write (checkpoints go inside)."),
        data: Path | None = DataOpt,
        profile: str = typer.Option("quick", "--profile", help="quick (minutes) or full."),
        seed: int = SeedOpt,
        device: str = DeviceOpt,
        no_progress: bool = NoProgressOpt,
        download: bool = DownloadOpt,
        threads: int = ThreadsOpt,
        epochs: int | None = typer.Option(None, "--epochs", min=1, help="Override the profile's epochs."),
    ) -> None:
        """Train the shared-weight scanning convnet (seed 002): digits anywhere in a picture.

        Interrupted runs resume from OUT/checkpoints when started again with the same options.
        """
        from dataclasses import replace

        from training.convnet import PROFILES, train_convnet

        profiles = {k: replace(v, epochs=epochs) if epochs else v for k, v in PROFILES.items()}
        _train_and_report(
            train_convnet,
            profiles,
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

    @evaluate_app.command("convnet")
    def evaluate_convnet_command(
        bundle: Path = typer.Option(..., "--bundle", help="Convnet bundle directory."),
        data: Path | None = DataOpt,
        json_out: Path | None = JsonOpt,
        strips: int = typer.Option(1000, "--strips", help="Strips composed from MNIST test digits."),
        download: bool = DownloadOpt,
        threads: int = ThreadsOpt,
    ) -> None:
        """MNIST test error, and digit strips read: string accuracy, digit precision/recall, ms per strip."""
        from bundles.convnet import ConvNetBundle
        from training.convnet_eval import evaluate_convnet

        _set_threads(threads)
        _report(
            evaluate_convnet(ConvNetBundle.load(bundle), load_mnist(data, download=download), strips),
            json_out,
        )
