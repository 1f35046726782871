"""`semhash train ...` and `semhash evaluate ...`: one sub-command per model kind."""

from __future__ import annotations

import typer

train_app = typer.Typer(
    help="Train a model bundle (text, digits, images, motor, sparse, predictive).", no_args_is_help=True
)
evaluate_app = typer.Typer(help="Evaluate a model bundle on held-out data.", no_args_is_help=True)

# Each model kind registers its commands below (kept in its own module to keep this file small).

from training.vision_cli import register_vision_commands  # noqa: E402

register_vision_commands(train_app, evaluate_app)

from training.text_cli import register_text_commands  # noqa: E402

register_text_commands(train_app, evaluate_app)

from training.motor_cli import register_motor_commands  # noqa: E402

register_motor_commands(train_app, evaluate_app)

from training.convnet_cli import register_convnet_commands  # noqa: E402

register_convnet_commands(train_app, evaluate_app)

from training.predict_cli import register_predict_commands  # noqa: E402

register_predict_commands(train_app, evaluate_app)
