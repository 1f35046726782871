"""`semhash train motor` and `semhash evaluate motor`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from training.mnist import load_mnist
from training.vision_cli import (
    DataOpt,
    DownloadOpt,
    JsonOpt,
    ThreadsOpt,
    Trainer,
    _report,
    _set_threads,
    add_train_command,
)


def _motor_trainer() -> tuple[Trainer, dict[str, Any]]:
    from training.motor import PROFILES, train_motor

    return train_motor, PROFILES


def register_motor_commands(train_app: typer.Typer, evaluate_app: typer.Typer) -> None:
    """Attach the motor-program commands to `semhash train` and `semhash evaluate`."""
    add_train_command(
        train_app,
        "motor",
        _motor_trainer,
        "validation_error",
        "Train the motor-program digit model: per-class recognition and generative nets (seed 000).\n\n"
        "Interrupted runs resume from OUT/checkpoints when started again with the same options.",
        out_help="Bundle directory to write (checkpoints go inside).",
    )

    @evaluate_app.command("motor")
    def evaluate_motor_command(
        bundle: Path = typer.Option(..., "--bundle", help="Motor bundle directory."),
        data: Path | None = DataOpt,
        json_out: Path | None = JsonOpt,
        limit: int | None = typer.Option(None, "--limit", help="Score only the first N test digits."),
        download: bool = DownloadOpt,
        threads: int = ThreadsOpt,
    ) -> None:
        """MNIST test error by reconstruction before and after local search, pixel errors, confusion."""
        from bundles.motor import MotorBundle
        from training.motor_eval import evaluate_motor

        _set_threads(threads)
        data_splits = load_mnist(data, download=download)
        _report(
            evaluate_motor(MotorBundle.load(bundle), data_splits.test_x[:limit], data_splits.test_y[:limit]),
            json_out,
        )
