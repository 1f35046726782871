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


def _numbers(text: str, kind: type[float] | type[int]) -> tuple[Any, ...]:
    try:
        return tuple(kind(v) for v in text.split(","))
    except ValueError as err:
        raise typer.BadParameter(f"expected comma-separated numbers, got {text!r}") from err


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

    @train_app.command("motor-calibrate")
    def calibrate_motor_command(
        bundle: Path = typer.Option(
            ..., "--bundle", help="Motor bundle directory (config.json is rewritten)."
        ),
        data: Path | None = DataOpt,
        validation: int | None = typer.Option(None, "--validation", help="First N validation digits."),
        iterations: str | None = typer.Option(None, "--iterations", help="Iteration counts, e.g. 10,20."),
        steps: str | None = typer.Option(None, "--steps", help="Initial steps, e.g. 0.005,0.02."),
        priors: str | None = typer.Option(None, "--priors", help="Prior weights lambda, e.g. 0,1,3."),
        top_k: str | None = typer.Option(None, "--top-k", help="Classes refined per image, e.g. 3,10."),
        manifolds: str | None = typer.Option(
            None, "--manifolds", help="Class-manifold weights gamma, e.g. 0,0.1,0.2."
        ),
        class_codes: int | None = typer.Option(
            None,
            "--class-codes",
            help="First replace the class codes by those of the first N training digits of each class.",
        ),
        download: bool = DownloadOpt,
        threads: int = ThreadsOpt,
    ) -> None:
        """Re-choose a trained motor bundle's local search and temperature on validation digits: every
        combination of the comma-separated settings (each omitted one: the full profile's), each run
        scored by energy and by pixel error."""
        from training.motor import PROFILES
        from training.motor_calibrate import recalibrate, refresh_class_codes, search_grid

        full = PROFILES["full"]
        _set_threads(threads)
        grid = search_grid(
            _numbers(iterations, int) if iterations else full.local_search_iterations,
            _numbers(steps, float) if steps else full.local_search_steps,
            _numbers(priors, float) if priors else full.local_search_priors,
            _numbers(top_k, int) if top_k else full.local_search_top_k,
            _numbers(manifolds, float) if manifolds else full.local_search_manifolds,
        )
        n = validation or full.n_validation
        splits = load_mnist(data, download=download)
        if class_codes:
            refresh_class_codes(bundle, splits.train_x, splits.train_y, class_codes)
        result = recalibrate(bundle, splits.valid_x[:n], splits.valid_y[:n], grid)
        _report({k: v for k, v in result.items() if k != "local_search_trials"}, None)

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
