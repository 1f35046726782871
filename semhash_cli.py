"""`semhash`: the one command-line handle on training, evaluation, indexing, migrations and serving."""

from __future__ import annotations

import logging

import typer

from service.cli import register_service_commands
from training.cli import evaluate_app, train_app

app = typer.Typer(
    help="Semantic hashing: train deep autoencoders, index documents by binary codes, "
    "serve Hamming-ball search.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(train_app, name="train")
app.add_typer(evaluate_app, name="evaluate")
register_service_commands(app)


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages.")) -> None:
    """Semantic hashing document retrieval (Salakhutdinov & Hinton)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Alembic logs each of its built-in plugins at INFO when first imported: a dozen lines of noise.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


if __name__ == "__main__":
    app()
