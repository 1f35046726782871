"""`semhash train predictive` and `semhash evaluate predictive`."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import typer
from tqdm.contrib.logging import logging_redirect_tqdm

from training.mnist import load_mnist
from training.vision_cli import (
    DataOpt,
    DeviceOpt,
    DownloadOpt,
    JsonOpt,
    NoProgressOpt,
    SeedOpt,
    ThreadsOpt,
    _profile,
    _progress,
    _report,
    _set_threads,
)


def register_predict_commands(train_app: typer.Typer, evaluate_app: typer.Typer) -> None:
    """Attach the predictive-network commands to `semhash train` and `semhash evaluate`."""

    @train_app.command("predictive")
    def train_predictive_command(
        out: Path = typer.Option(..., "--out", help="Bundle directory to write (checkpoints go inside)."),
        data: Path | None = DataOpt,
        profile: str = typer.Option(
            "quick",
            "--profile",
            help="quick (256 LSTM units, minutes), cpu (1024 units, < 1 h) or full (GPU).",
        ),
        objective: str = typer.Option(
            "next_frame",
            "--objective",
            help="next_frame (the predictive network) or reconstruct (the frame autoencoder control, "
            "same encoder/decoder, a code of as many units as the LSTM).",
        ),
        adversarial_weight: float | None = typer.Option(
            None, "--adversarial-weight", help="Add this weight times the adversarial loss to the MSE."
        ),
        steps: int | None = typer.Option(None, "--steps", help="Override the profile's training steps."),
        max_minutes: float | None = typer.Option(
            None, "--max-minutes", help="Stop after the validation that crosses this budget (keeps the best)."
        ),
        seed: int = SeedOpt,
        device: str = DeviceOpt,
        no_progress: bool = NoProgressOpt,
        download: bool = DownloadOpt,
        threads: int = ThreadsOpt,
    ) -> None:
        """Train the encoder-LSTM-decoder to predict the next Moving MNIST frame (seed 003).

        Interrupted runs resume from OUT/checkpoints when started again with the same options.
        """
        from training.predict import PROFILES, train_predictive

        _set_threads(threads)
        config = replace(_profile(PROFILES, profile), seed=seed, device=device, objective=objective)
        if adversarial_weight is not None:
            config = replace(config, adversarial_weight=adversarial_weight)
        if steps is not None:
            config = replace(config, steps=steps)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        with logging_redirect_tqdm():
            metrics = train_predictive(
                config,
                load_mnist(data, download=download),
                out,
                progress=_progress(no_progress),
                max_minutes=max_minutes,
            )
        _report(
            {k: metrics[k] for k in ("validation_mse", "steps", "train_seconds")} | {"bundle": str(out)}, None
        )

    @evaluate_app.command("predictive")
    def evaluate_predictive_command(
        bundle: Path = typer.Option(..., "--bundle", help="Predictive bundle directory."),
        autoencoder: Path | None = typer.Option(
            None, "--autoencoder", help="A frame_autoencoder bundle for the probe comparison."
        ),
        data: Path | None = DataOpt,
        json_out: Path | None = JsonOpt,
        plots: Path | None = typer.Option(None, "--plots", help="Folder for the true-vs-predicted plot."),
        n_test: int = typer.Option(1000, "--n-test", help="Test sequences (MNIST test digits only)."),
        probe_train: int = typer.Option(
            2000, "--probe-train", help="Sequences of training digits the linear probes are fitted on."
        ),
        download: bool = DownloadOpt,
        threads: int = ThreadsOpt,
    ) -> None:
        """Next-frame MSE/SSIM at 1 and 5 steps vs copy-last and linear extrapolation; linear probes."""
        from training.predict_eval import evaluate_predictive

        _set_threads(threads)
        results = evaluate_predictive(
            bundle,
            load_mnist(data, download=download),
            autoencoder=autoencoder,
            n_test=n_test,
            n_probe_train=probe_train,
            plots=plots,
        )
        _report(results, json_out)
